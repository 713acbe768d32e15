"""KL-annealing schedules: the weight beta on KL(q || p) as a pure function of training time t.

``t`` is in steps or epochs (fractional), as the schedule's config says (``per``). While
beta < 1 the training loss is not a bound on log p(x): vibench logs it as ``train/loss`` and the
true ELBO (beta = 1) as ``train/elbo``.

References
----------
[1] C. K. Sønderby et al. Ladder Variational Autoencoders. NeurIPS 2016 (linear warm-up).
[2] S. R. Bowman et al. Generating Sentences from a Continuous Space. CoNLL 2016 (logistic).
[3] H. Fu et al. Cyclical Annealing Schedule. NAACL 2019 (cyclical: M cycles, rising ratio R).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass


def constant(t: float, beta: float = 1.0) -> float:
    """beta at every t (beta = 1: no annealing; other values: the beta-VAE / rate-distortion view)."""
    return beta


def linear(t: float, warmup: float, start: float = 0.0, end: float = 1.0) -> float:
    """From ``start`` at t = 0 to ``end`` at t = ``warmup``, then constant ([1])."""
    if warmup <= 0:
        return end
    return start + (end - start) * min(1.0, max(0.0, t / warmup))


def logistic(t: float, k: float = 0.0025, t0: float = 2500.0) -> float:
    """``1 / (1 + exp(-k (t - t0)))`` ([2]; k = 0.0025, t0 = 2500 steps in common use)."""
    x = -k * (t - t0)
    return 0.0 if x > 700 else 1.0 / (1.0 + math.exp(x))


def cyclical(t: float, total: float, cycles: int = 4, ratio: float = 0.5) -> float:
    """``cycles`` cycles over ``total``; within each, beta rises linearly over the first ``ratio``
    of the cycle from 0 to 1, then stays at 1 ([3], defaults M = 4, R = 0.5). After ``total``: 1."""
    if t >= total:
        return 1.0
    period = total / cycles
    tau = (t % period) / period
    return min(1.0, tau / ratio) if ratio > 0 else 1.0


def plain_partial(fn: Callable) -> Callable:
    """A plain ``functools.partial`` of a Hydra ``_partial_`` object (same function, same arguments).

    Hydra 1.3.8 returns a ``_DeferredTarget`` that re-runs its target security policy on every
    call (~80 us, against ~1 us): too much for something called every step or batch.
    """
    if isinstance(fn, functools.partial) and type(fn) is not functools.partial:
        return functools.partial(fn.func, *fn.args, **fn.keywords)
    return fn


@dataclass
class KLSchedule:
    """A schedule ``fn(t)`` (a Hydra ``_partial_`` of a function above) and its time unit.

    ``per="steps"``: t = the global step; ``per="epochs"``: t = step / steps per epoch. ``name``
    labels it in records (the config group's choice, e.g. ``none``); by default, ``fn``'s name.
    """

    fn: Callable[[float], float]
    per: str = "steps"
    name: str | None = None

    def __post_init__(self) -> None:
        self.fn = plain_partial(self.fn)
        if self.per not in ("steps", "epochs"):
            raise ValueError(f"per={self.per!r} must be 'steps' or 'epochs'")

    def __call__(self, step: int, steps_per_epoch: int) -> float:
        t = step if self.per == "steps" else step / max(1, steps_per_epoch)
        return float(self.fn(t))

    def describe(self) -> dict:
        fn = self.fn
        return {"name": self.name or getattr(getattr(fn, "func", fn), "__name__", str(fn)), **getattr(fn, "keywords", {}), "per": self.per}

    @property
    def is_unit(self) -> bool:
        """beta = 1 at every step: the training loss is the bound itself."""
        fn = self.fn
        return getattr(fn, "func", None) is constant and getattr(fn, "keywords", {}).get("beta", 1.0) == 1.0


# --- learning-rate schedules (multiplicative factors of the optimizer's lr, per epoch) ----------
BURDA_STAGES = 8


def burda_lr_factor(epoch: int, stages: int = BURDA_STAGES, rounded: bool | None = None) -> float:
    """The IWAE schedule (Burda et al. 2016, sec. 5): stage i = 1..8 lasts 3^(i-1) epochs at
    ``lr = 1e-3 * 10^(-(i-1)/7)``; as a factor of the base lr 1e-3: ``10^(-(i-1)/7)``.

    ``rounded``: the rates of IWAE's code instead (yburda/iwae ``experiments.py``:
    ``1e-4 * round(10^(1-(i-1)/7), 1)``), i.e. factors 1, 0.72, 0.52, 0.37, 0.27, 0.19, 0.14, 0.1,
    within 2% of the paper's. ``None`` (the default) is ``False``.

    Stages start at epochs 0, 1, 4, 13, 40, 121, 364, 1093 (3,280 epochs in all: sum of 3^(i-1)
    for i = 1..8); past the last stage the lr stays at its final value 1e-4 (a factor of 10^-1).
    For ``torch.optim.lr_scheduler.LambdaLR``, stepped once per epoch.
    """
    stage, end = 1, 1  # stage i covers epochs [end_{i-1}, end_i), end_i = (3^i - 1) / 2
    while epoch >= end and stage < stages:
        stage += 1
        end += 3 ** (stage - 1)
    if rounded:
        return round(10 ** (1 - (stage - 1) / 7), 1) / 10
    return 10 ** (-(stage - 1) / 7)
