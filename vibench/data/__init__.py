"""Datasets yielding ``(x, idx)`` index-slice batches from whole-split tensors."""

from vibench.data.datamodule import DataModule, IndexBatches
from vibench.data.sources import Splits

__all__ = ["DataModule", "IndexBatches", "Splits"]
