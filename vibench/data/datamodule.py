"""A LightningDataModule over whole-split tensors, batched by index slices.

Each split lives in one tensor (moved to the training device when it fits); a batch is
``(x[idx], idx)`` for a slice ``idx`` of a permutation, with no per-item collation. ``idx`` is the
datapoint's row in its split, which per-datapoint (SVI) guides use to find their parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import lightning as L
import torch

from vibench.data.sources import Splits
from vibench.errors import DataError


def as_minibatches(batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A training item as its list of ``(x, idx)`` minibatches: a lone ``(x, idx)`` is one."""
    return [batch] if isinstance(batch, tuple) else batch


class IndexBatches:
    """Iterable of ``(x[idx], idx)`` minibatches over a tensor ``data`` of shape ``[N, dim]``.

    ``group``: if given, each item is instead a list of up to ``group`` consecutive minibatches
    (gathered at once), trained on in one Lightning step (``train.steps_per_call``); ``len`` counts
    items.

    ``shuffle_seed``: if given, a callable returning the seed of each pass's permutation (the
    DataModule derives it from the seed and the epoch, so a resumed run sees the same order).

    Stateful for exact mid-epoch resume: ``consumed`` counts the minibatches actually trained on
    (the DataModule increments it when an item reaches the step, which Lightning's one-item
    prefetch would otherwise blur); after :meth:`load_state_dict`, the next pass skips that many
    minibatches, whatever the grouping.
    """

    def __init__(self, data: torch.Tensor, batch_size: int, shuffle_seed: Callable[[], int] | None = None, rank: int = 0, world_size: int = 1, drop_uneven: bool = True, group: int | None = None):
        self.data, self.batch_size, self.shuffle_seed, self.group = data, batch_size, shuffle_seed, group
        self.rank, self.world_size, self.drop_uneven = rank, world_size, drop_uneven
        self.consumed, self._skip = 0, 0

    def _shard_size(self) -> int:
        """Rows this rank sees: equal shares across ranks (DDP needs the same number of steps on each)."""
        n, w = len(self.data), self.world_size
        return n // w if self.drop_uneven else math.ceil(n / w)

    def minibatches(self) -> int:
        """Minibatches per pass (optimizer steps per epoch)."""
        return math.ceil(self._shard_size() / self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.minibatches() / (self.group or 1))

    def _shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's rows of ``order``: every world_size-th, trimmed (training) or padded by
        wrapping around (evaluation: every point is seen; duplicates are dropped after gathering)."""
        if self.world_size == 1:
            return order
        size = self._shard_size()
        if not self.drop_uneven and size * self.world_size > len(order):
            order = torch.cat([order, order[: size * self.world_size - len(order)]])
        return order[self.rank :: self.world_size][:size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        if self.shuffle_seed is None:
            order = torch.arange(n)
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.shuffle_seed()))
        order = self._shard(order).to(self.data.device)
        skip, self._skip = (self._skip if self._skip < self.minibatches() else 0), 0
        self.consumed = skip
        step = self.batch_size * (self.group or 1)
        for start in range(skip * self.batch_size, len(order), step):
            idx = order[start : start + step]
            if self.group is None:
                yield self.data[idx], idx
            else:  # one gather, split into views
                yield list(zip(self.data[idx].split(self.batch_size), idx.split(self.batch_size)))

    def state_dict(self) -> dict[str, int]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip = int(state.get("consumed", 0))


def subset_rows(length: int, n: int | None, seed: int) -> torch.Tensor:
    """The rows :func:`random_subset` keeps of a split of ``length`` rows (all of them, in order, without ``n``)."""
    if n is None or n >= length:
        return torch.arange(length)
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed))[:n]


def random_subset(x: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    """``n`` rows of ``x`` drawn at random with ``seed`` (never the first n: files may be sorted by class)."""
    if n is None or n >= len(x):
        return x
    return x[subset_rows(len(x), n, seed)]


class DataModule(L.LightningDataModule):
    """Datasets for vibench runs.

    Args:
        source: a callable returning :class:`Splits` (a Hydra ``_partial_`` of a function in
            :mod:`vibench.data.sources`), called by :meth:`load`.
        name: the dataset's config name, for records.
        dim: expected data dimension (checked against the loaded data).
        likelihood: ``"bernoulli"`` data must be 0/1 (or grey levels in [0, 1] when dynamic).
        batch_size: training minibatch size.
        eval_batch_size: batch size for validation and test.
        train_subset, val_subset, test_subset: if set, a random subset of that many rows,
            drawn with ``subset_seed``.
        steps_per_call: training minibatches per Lightning step (each training item is a list of
            them, see :class:`IndexBatches`).
        step_multiple: if set (the step interval of mid-epoch checkpoints), every multiple of it
            ends a Lightning step: the group size is reduced to divide it and the epoch.
        fixed_order: true: the same minibatches in the same order every epoch (rows 0..B-1,
            B..2B-1, ...), as IWAE's code trains (yburda/iwae ``train.py``); ``None``/false: a
            fresh permutation each epoch, seeded by ``shuffle_seed`` and the epoch.
    """

    def __init__(self, source: Callable[[], Splits], name: str, dim: int, likelihood: str, batch_size: int = 100, eval_batch_size: int = 500, train_subset: int | None = None, val_subset: int | None = None, test_subset: int | None = None, subset_seed: int = 0, shuffle_seed: int = 0, steps_per_call: int = 1, step_multiple: int | None = None, fixed_order: bool | None = None):
        super().__init__()
        self.fixed_order = bool(fixed_order)
        self.steps_per_call, self.step_multiple = steps_per_call, step_multiple
        self.source, self.name, self.dim, self.likelihood = source, name, dim, likelihood
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.subsets = {"train": train_subset, "val": val_subset, "test": test_subset}
        self.subset_seed, self.shuffle_seed = subset_seed, shuffle_seed
        self.splits: Splits | None = None
        self.test_rows: torch.Tensor | None = None
        self._train_batches: IndexBatches | None = None

    def load(self) -> Splits:
        """Load and check the data (idempotent). Raises :class:`DataError` on unsuitable data."""
        if self.splits is None:
            splits = self.source()
            # the test rows' positions in the full split: per-point results name points by them
            self.test_rows = subset_rows(len(splits.test), self.subsets["test"], self.subset_seed + 2)
            for i, split in enumerate(("train", "val", "test")):
                x = random_subset(getattr(splits, split), self.subsets[split], self.subset_seed + i)
                self._check(split, x, splits.dynamic and split == "train")
                setattr(splits, split, x)
            self.splits = splits
        return self.splits

    def _check(self, split: str, x: torch.Tensor, grey: bool) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DataError(f"dataset {self.name}: the {split} split has shape {tuple(x.shape)}, expected [N, {self.dim}]. Is the data root pointing at the right files?")
        if len(x) == 0:
            raise DataError(f"dataset {self.name}: the {split} split is empty.")
        if not torch.isfinite(x).all():
            raise DataError(f"dataset {self.name}: the {split} split holds NaN or infinite values.")
        if self.likelihood == "bernoulli":
            ok = ((x >= 0) & (x <= 1)).all() if grey else ((x == 0) | (x == 1)).all()
            if not ok:
                allowed = "grey levels in [0, 1]" if grey else "only 0 and 1"
                raise DataError(f"dataset {self.name}: the {split} split must hold {allowed} for a Bernoulli likelihood, but has values in [{x.min():g}, {x.max():g}].")

    @property
    def variant(self) -> str:
        return self.load().variant

    def sizes(self) -> dict[str, int]:
        s = self.load()
        return {"n_train": len(s.train), "n_val": len(s.val), "n_test": len(s.test)}

    def setup(self, stage: str | None = None) -> None:
        splits = self.load()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            need = sum(t.numel() * t.element_size() for t in (splits.train, splits.val, splits.test))
            if need > free // 4:  # leave most of the memory to the model and evaluation
                return
        for split in ("train", "val", "test"):
            setattr(splits, split, getattr(splits, split).to(device))

    def train_dataloader(self) -> IndexBatches:
        s = self.load()
        epoch = (lambda: self.trainer.current_epoch) if self.trainer is not None else (lambda: 0)
        shuffle_seed = None if self.fixed_order else (lambda: self.shuffle_seed * 1_000_003 + epoch())
        self._train_batches = IndexBatches(s.train, self.batch_size, shuffle_seed=shuffle_seed, **self._ranks(), drop_uneven=True)
        group = self.steps_per_call
        if self.step_multiple:  # groups then divide the interval and the epoch: each call ends at a multiple of the group size
            group = math.gcd(group, self.step_multiple, self._train_batches.minibatches())
        self._train_batches.group = group
        return self._train_batches

    def steps_per_epoch(self) -> int:
        """Optimizer steps (minibatches) per training epoch, on each rank."""
        return IndexBatches(self.load().train, self.batch_size, **self._ranks(), drop_uneven=True).minibatches()

    def _ranks(self) -> dict[str, int]:
        if self.trainer is None:
            return {"rank": 0, "world_size": 1}
        return {"rank": self.trainer.global_rank, "world_size": self.trainer.world_size}

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """At step time (not prefetch time): count the item's minibatches, and re-binarize dynamic training data.

        Each minibatch's binarization draws from its own generator, seeded by (shuffle seed, epoch,
        rank, minibatch number): a pure function of its position, so a resumed run redraws it
        exactly, and the training noise stream is the same however many minibatches a Lightning
        step holds (``train.steps_per_call``).
        """
        if self.trainer is None or not self.trainer.training:
            return batch
        first, self._train_batches.consumed = self._train_batches.consumed, self._train_batches.consumed + len(batch)
        if not self.load().dynamic:
            return batch
        epoch, rank = self.trainer.current_epoch, self.trainer.global_rank
        out = []
        for i, (x, idx) in enumerate(batch, start=first):
            seed = ((self.shuffle_seed * 1_000_003 + epoch) * 1_009 + rank) * 1_000_003 + i
            out.append((torch.bernoulli(x, generator=torch.Generator(device=x.device).manual_seed(seed)), idx))
        return out

    def val_dataloader(self) -> IndexBatches:
        return IndexBatches(self.load().val, self.eval_batch_size, **self._ranks(), drop_uneven=False)

    def test_dataloader(self) -> IndexBatches:
        return IndexBatches(self.load().test, self.eval_batch_size, **self._ranks(), drop_uneven=False)
