"""Shared fixtures. Tests run one torch thread per process and never touch the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# The README runs the tests with VIBENCH_DATA_DIR=../shared/data: a path relative to the repository.
# Made absolute once here, so symlinks and subprocesses in other folders still find the data.
os.environ["VIBENCH_DATA_DIR"] = str(Path(os.environ.get("VIBENCH_DATA_DIR", SHARED_DATA)).expanduser().resolve())
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)


@pytest.fixture
def data_dir() -> Path:
    path = Path(os.environ["VIBENCH_DATA_DIR"])
    if not (path / "binarized_mnist").is_dir():
        pytest.skip(f"binarized MNIST not found under {path} (set VIBENCH_DATA_DIR)")
    return path


@pytest.fixture
def compose_cfg(tmp_path):
    """Compose the real config (conf/) with overrides, outputs and results under tmp_path."""
    from hydra import compose, initialize_config_dir

    from vibench.__main__ import CONFIG_DIR

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("config", overrides=[f"output_dir={tmp_path / 'out'}", f"results_dir={tmp_path / 'runs'}", f"data.cache={tmp_path / 'cache'}", *overrides])

    return _compose


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip, with the reason, where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA device (torch {torch.__version__} sees none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
