"""Differences between two runs with their uncertainty: pure functions of per-point arrays.

Three situations, three intervals (all two-sided, 95% by default):

- **Paired, same test points** (:func:`paired_difference`): with per-point estimates a_i and b_i
  of the same N points, the difference of the dataset means is ``d = mean_i (a_i - b_i)``, and its
  standard error over test points is ``sd_i(a_i - b_i) / sqrt(N)``. Pairing removes the
  between-point spread shared by both runs (an easy digit is easy for both), which dominates the
  unpaired standard error; it is the standard paired-sample analysis (e.g. Wasserman, *All of
  Statistics*, sec. 10.1). The Monte Carlo part alone, ``sqrt(sum_i (v^a_i + v^b_i)) / N`` from
  each point's delta-method variance v_i, is what re-running both estimators would change.
- **Unpaired, different test points** (:func:`unpaired_difference`): ``d = mean(a) - mean(b)``,
  ``se = sqrt(se_a^2 + se_b^2)``.
- **Across seeds** (:func:`seed_interval`): the run-level means of n_a and n_b seeds. Paired by
  seed when both sides ran the same seeds (a t interval on the n per-seed differences, n - 1
  degrees of freedom); else Welch's t interval (Welch 1947).

Intervals over points use the normal quantile (N is in the hundreds or thousands); intervals
over seeds use Student's t (n is 2 to 10).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Difference:
    """``a - b`` with its standard error, interval and how it was obtained."""

    difference: float
    stderr: float
    low: float
    high: float
    kind: str  # "paired points", "unpaired points", "paired seeds", "Welch seeds"
    n: int  # points (or seeds) behind the estimate
    mc_stderr: float | None = None  # the Monte Carlo part alone (paired points with per-point variances)

    def as_dict(self) -> dict:
        return asdict(self)


def _normal(d: float, se: float, level: float) -> tuple[float, float]:
    z = stats.norm.ppf(0.5 + level / 2)
    return d - z * se, d + z * se


def paired_difference(a: np.ndarray, b: np.ndarray, var_a: np.ndarray | None = None, var_b: np.ndarray | None = None, level: float = 0.95) -> Difference:
    """Mean of ``a_i - b_i`` over N points, both ``[N]`` in the same point order.

    Args:
        a, b: per-point estimates of the same N points.
        var_a, var_b: optional ``[N]`` Monte Carlo variances of each point's estimate.
        level: coverage of the interval.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired estimates must be two [N] arrays of the same points, got {a.shape} and {b.shape}")
    n = len(a)
    d = a - b
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    mc = float(math.sqrt(np.sum(var_a) + np.sum(var_b)) / n) if var_a is not None and var_b is not None else None
    return Difference(float(d.mean()), se, *_normal(float(d.mean()), se, level), "paired points", n, mc)


def unpaired_difference(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> Difference:
    """``mean(a) - mean(b)`` for estimates on different points, with ``se = sqrt(se_a^2 + se_b^2)``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    d = float(a.mean() - b.mean())
    return Difference(d, se, *_normal(d, se, level), "unpaired points", min(len(a), len(b)))


def seed_interval(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> Difference | None:
    """Difference of the seed means of two configurations, ``{seed: run-level value}`` each.

    Paired by seed when both ran the same seeds (at least 2); else Welch's interval when each
    side has at least 2 seeds; else ``None`` (one seed says nothing about seed-to-seed spread).
    """
    q = 0.5 + level / 2
    if set(a) == set(b) and len(a) >= 2:
        d = np.array([a[s] - b[s] for s in sorted(a)])
        n = len(d)
        se = float(d.std(ddof=1) / math.sqrt(n))
        t = stats.t.ppf(q, n - 1)
        return Difference(float(d.mean()), se, float(d.mean() - t * se), float(d.mean() + t * se), "paired seeds", n)
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = np.var(list(a.values()), ddof=1) / len(a), np.var(list(b.values()), ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else len(a) + len(b) - 2
    d = float(np.mean(list(a.values())) - np.mean(list(b.values())))
    t = stats.t.ppf(q, df)
    return Difference(d, se, d - t * se, d + t * se, "Welch seeds", min(len(a), len(b)))
