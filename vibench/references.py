"""Reference bounds and the comparison of run records against them.

A reference (an entry of ``results/references.yaml``) names what it was measured on through
``match``: keys that a record must have with exactly these values to be compared (see
:func:`record_keys`). A record that differs in any of them, or was trained for fewer than the
entry's ``min_epochs``, is not comparable: references are matched by their keys, never by guess.

Verdicts, for a log-likelihood-like metric where higher is better:

- ``pass``: measured >= value - tolerance - allowance, where the allowance is for the noise the
  entry names (``noise``), and the table says which one it used:

  - ``seeds`` (the default; paper anchors): the spread across training seeds. Records matching the
    entry that differ only in their seed are grouped; with n >= 2 of them the group's mean is
    compared, with allowance ``2 sd sqrt(1/n + 1/m)`` (sd across the seeds; the reference is the
    mean of the entry's ``seeds`` = m draws, one for a paper). A single seed gets the bare
    tolerance, which must then cover seed-to-seed variation; an entry with ``min_seeds`` compares
    only groups of at least that many seeds.
  - ``mc``: the Monte Carlo error of the estimate, ``2 * <metric>_mc_stderr`` (deterministic
    project baselines: the same seed and data give the same model, and only the estimator's own
    noise, if any, remains); with ``eval.repeats``, the larger of that and the measured spread of
    the repeats' mean (the delta method underestimates for heavy-tailed weights).
  - ``stderr``: twice the standard error over test points (what another test sample would
    change; for a reference measured on other points).
  - ``none``: the bare tolerance.
- ``fail``: below that: a regression;
- ``not comparable``: keys differ, too short, metric missing, or the run did not complete;
- ``qualitative``: the source gives curves only; listed, never compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vibench.errors import VibenchError

NOISES = ("seeds", "mc", "stderr", "none")
MATCH_KEYS = ("variant", "method", "family", "objective", "k", "estimator", "hidden", "activation", "latent", "likelihood", "prior", "iw_samples", "test_subset", "train_subset", "svi_flavour", "seed", "batch_size",
              "scheduler", "select", "init", "lr", "adam_eps", "eval_repeats")


@dataclass
class Reference:
    id: str
    source: str
    kind: str  # paper | baseline | qualitative
    metric: str
    value: float | None
    tolerance: float
    match: dict[str, Any]
    min_epochs: int = 0
    # a run stopped early on val/elbo (checkpoint.select=best) is comparable before min_epochs
    # when its patience was at least this (its best epoch was then unbeaten for that long); null: never
    early_stop_patience: int | None = None
    noise: str = "seeds"  # seeds | mc | stderr | none (the module docstring)
    seeds: int = 1  # how many seeds the reference value is the mean of (noise: seeds)
    min_seeds: int = 1  # noise: seeds: compare only the mean of at least this many seeds
    reported: str = ""
    command: str = ""


def load_references(path: str | Path) -> list[Reference]:
    """Read and check the registry; raises :class:`VibenchError` naming the entry that is wrong."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise VibenchError(f"cannot read the reference registry {path}: {e}") from None
    refs = []
    for i, entry in enumerate(data.get("references", [])):
        where = f"{path}: entry {i} ({entry.get('id', 'no id')})"
        unknown = set(entry.get("match", {})) - set(MATCH_KEYS)
        if unknown:
            raise VibenchError(f"{where}: unknown match keys {sorted(unknown)}; allowed: {', '.join(MATCH_KEYS)}")
        try:
            ref = Reference(**entry)
        except TypeError as e:
            raise VibenchError(f"{where}: {e}") from None
        if ref.kind not in ("paper", "baseline", "qualitative") or ref.noise not in NOISES:
            raise VibenchError(f"{where}: kind must be paper, baseline or qualitative and noise one of {', '.join(NOISES)}")
        if ref.kind != "qualitative" and ref.value is None:
            raise VibenchError(f"{where}: a {ref.kind} entry needs a value")
        refs.append(ref)
    return refs


def record_keys(record: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run that decide which references it may be compared with."""
    cfg = record.get("config", {})
    decoder = cfg.get("model", {}).get("decoder", {})
    inference = record.get("inference") or {}
    objective = inference.get("objective") or {}
    dataset = cfg.get("dataset", {})
    return {
        "variant": (record.get("dataset") or {}).get("variant"),
        "method": record.get("method"),
        "objective": objective.get("name"),
        "k": objective.get("samples"),
        "estimator": objective.get("estimator"),
        "hidden": list(decoder.get("hidden", [])),
        "activation": decoder.get("activation"),
        "latent": cfg.get("latent"),
        "likelihood": decoder.get("likelihood"),
        "prior": inference.get("prior", "standard_normal"),
        "family": inference.get("family", "gaussian"),
        "iw_samples": record.get("iw_samples"),
        "test_subset": dataset.get("test_subset"),
        "train_subset": dataset.get("train_subset"),
        "svi_flavour": inference.get("svi_flavour"),
        "seed": cfg.get("seed"),
        "batch_size": dataset.get("batch_size"),
        "scheduler": _scheduler_name(cfg.get("scheduler")),
        "select": (cfg.get("checkpoint") or {}).get("select", "last"),
        "init": (cfg.get("model") or {}).get("init", "default"),
        "lr": (cfg.get("optimizer") or {}).get("lr"),
        "adam_eps": (cfg.get("optimizer") or {}).get("eps", 1e-8),
        "eval_repeats": (cfg.get("eval") or {}).get("repeats", 1),
    }


def _scheduler_name(scheduler: dict | None) -> str:
    """The ``scheduler=`` choice behind a resolved scheduler config: none, multistep, burda (or the class)."""
    if not scheduler:
        return "none"
    target = str(scheduler.get("_target_", ""))
    if target.endswith("MultiStepLR"):
        return "multistep"
    if target.endswith("LambdaLR") and "burda" in str((scheduler.get("lr_lambda") or {}).get("_target_", "")):
        return "burda"
    return target.rsplit(".", 1)[-1]


@dataclass
class Comparison:
    reference: Reference
    record: dict[str, Any]
    verdict: str
    measured: float | None = None
    stderr: float | None = None
    difference: float | None = None
    allowed: float | None = None
    why: str = ""
    matched: bool = True  # False: the record's keys differ from the reference's; never meant to be compared
    noise: str = ""  # which noise the allowance is for, in words
    runs: tuple[str, ...] = ()  # a seed group: its runs (``measured`` is their mean, ``stderr`` their sd)

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference.id, "source": self.reference.source, "kind": self.reference.kind, "metric": self.reference.metric,
            "value": self.reference.value, "tolerance": self.reference.tolerance, "run_id": self.record.get("run_id"),
            "measured": self.measured, "stderr": self.stderr, "difference": self.difference, "allowed": self.allowed,
            "verdict": self.verdict, "why": self.why, "noise": self.noise, "runs": list(self.runs) or [self.record.get("run_id")],
        }

    @property
    def run_label(self) -> str:
        return f"{len(self.runs)} seeds: {', '.join(self.runs)}" if self.runs else str(self.record.get("run_id", "?"))


def stopped_early_enough(ref: Reference, record: dict[str, Any]) -> bool:
    """True when the run stopped early on val/elbo, tested its best checkpoint, and waited at least
    the reference's ``early_stop_patience`` epochs for a better one."""
    patience = ((record.get("config") or {}).get("early_stopping") or {}).get("patience")
    return (ref.early_stop_patience is not None and bool(record.get("stopped_early")) and patience is not None
            and patience >= ref.early_stop_patience and (record.get("evaluated_checkpoint") or {}).get("select") == "best")


def compare(ref: Reference, record: dict[str, Any]) -> Comparison:
    """Compare one record with one reference (see the module docstring for the verdicts)."""
    keys = record_keys(record)
    differing = {k: (keys.get(k), v) for k, v in ref.match.items() if keys.get(k) != v}
    if differing:
        why = "; ".join(f"{k}: run {a!r}, reference {b!r}" for k, (a, b) in differing.items())
        return Comparison(ref, record, "not comparable", why=why, matched=False)
    if ref.kind == "qualitative":  # after the keys: a run of another setting does not "match" a figure
        return Comparison(ref, record, "qualitative", why="the source reports curves only")
    if record.get("status") != "completed":
        return Comparison(ref, record, "not comparable", why=f"run status is {record.get('status')}")
    if (record.get("epochs") or 0) < ref.min_epochs and not stopped_early_enough(ref, record):
        return Comparison(ref, record, "not comparable", why=f"trained {record.get('epochs')} epochs, the reference {ref.min_epochs}")
    metrics = record.get("metrics") or {}
    if ref.metric not in metrics:
        return Comparison(ref, record, "not comparable", why=f"the record has no {ref.metric}")
    measured = float(metrics[ref.metric])
    stderr = metrics.get(f"{ref.metric}_stderr")
    allowance, noise = 0.0, "none: tolerance only"
    if ref.noise == "stderr" and stderr is not None:
        allowance, noise = 2 * float(stderr), f"test points: 2 × {float(stderr):.3f}"
    elif ref.noise == "mc":
        stderr = monte_carlo_error(metrics, ref.metric)  # not the error over points
        allowance, noise = (2 * stderr, f"Monte Carlo: 2 × {stderr:.4f}") if stderr is not None else (0.0, f"Monte Carlo: no {ref.metric}_mc_stderr recorded, tolerance only")
    elif ref.noise == "seeds":
        noise = "1 seed: tolerance only"
    return _verdict(ref, record, measured, stderr, ref.tolerance + allowance, noise)


def monte_carlo_error(metrics: dict[str, Any], metric: str) -> float | None:
    """The Monte Carlo standard error of ``metric``: the delta method's (``<metric>_mc_stderr``) or,
    with ``eval.repeats``, the measured spread of the repeats' mean when that is larger (the delta
    method runs small for heavy-tailed weights); ``None`` when not recorded."""
    mc = metrics.get(f"{metric}_mc_stderr")
    if mc is None:
        return None
    repeats = metrics.get(f"{metric}_repeats") or []
    if len(repeats) > 1:
        return max(float(mc), float(metrics[f"{metric}_repeat_sd"]) / len(repeats) ** 0.5)
    return float(mc)


def _verdict(ref: Reference, record: dict[str, Any], measured: float, stderr: float | None, allowed: float, noise: str, runs: tuple[str, ...] = ()) -> Comparison:
    difference = measured - ref.value
    return Comparison(ref, record, "pass" if difference >= -allowed else "fail", measured, stderr, difference, allowed, noise=noise, runs=runs)


def seed_groups(ref: Reference, rows: list[Comparison]) -> list[Comparison]:
    """``noise: seeds``: comparisons of runs that differ only in their seed (:func:`~vibench.resume.seed_group`) become one, of their mean
    (``stderr`` is then the sd across seeds; allowance ``2 sd sqrt(1/n + 1/ref.seeds)``); groups
    smaller than ``ref.min_seeds`` are not comparable. A pass whose mean falls short by more than
    the tolerance, covered only by an allowance wider than the tolerance (two seeds far apart),
    says so in ``why``."""
    import statistics

    from vibench.resume import seed_group

    groups: dict[str, list[Comparison]] = {}
    out = []
    for c in rows:
        if c.measured is None:  # not comparable: listed as it is
            out.append(c)
            continue
        groups.setdefault(seed_group(c.record), []).append(c)
    for members in groups.values():
        seeds = {(m.record.get("config") or {}).get("seed") for m in members}
        if len(seeds) < ref.min_seeds:
            out.extend(Comparison(ref, m.record, "not comparable", why=f"{len(seeds)} seed(s); this entry compares the mean of at least {ref.min_seeds}") for m in members)
            continue
        if len(members) < 2 or len(seeds) < len(members):
            out.extend(members)
            continue
        values = [m.measured for m in members]
        n, sd = len(values), statistics.stdev(values)
        allowance = 2 * sd * (1 / n + 1 / ref.seeds) ** 0.5
        noise = f"{n} seeds: 2 × sd {sd:.3f} × √(1/{n}+1/{ref.seeds})"
        runs = tuple(str(m.record.get("run_id")) for m in members)
        row = _verdict(ref, members[0].record, statistics.fmean(values), sd, ref.tolerance + allowance, noise, runs)
        if row.verdict == "pass" and row.difference < -ref.tolerance and allowance > ref.tolerance:
            row.why = (f"the mean falls {-row.difference:.2f} short, more than the tolerance {ref.tolerance:g}, and only the seeds' spread "
                       f"(allowance {allowance:.2f}) covers it: not shown to miss, not shown to agree; more seeds would tell")
        out.append(row)
    return out


def nearest(record: dict[str, Any], references: list[Reference], most: int = 3) -> tuple[Reference, dict[str, tuple[Any, Any]]] | None:
    """The reference whose ``match`` the record misses in the fewest keys (at most ``most``), with
    those keys as ``{key: (run's value, reference's value)}``: why a run of a preset, changed in a
    key or two (a test subset, another seed), is compared with nothing. ``None`` when every
    reference differs in more keys (the run was never meant to be compared)."""
    keys = record_keys(record)
    misses = [(ref, {k: (keys.get(k), v) for k, v in ref.match.items() if keys.get(k) != v}) for ref in references]
    misses = [(ref, d) for ref, d in misses if 0 < len(d) <= most]
    return min(misses, key=lambda m: len(m[1]), default=None)


def check(records: list[dict[str, Any]], references: list[Reference]) -> tuple[list[Comparison], list[dict[str, Any]]]:
    """All comparisons of comparable (record, reference) pairs, plus the records that matched no reference.

    Pairs whose keys differ are dropped from the table (they were never meant to be compared);
    pairs that match but cannot be compared (too short, failed, metric missing) are kept.
    """
    rows, matched = [], set()
    for ref in references:
        mine = [c for c in (compare(ref, rec) for rec in records) if c.matched]
        matched.update(id(c.record) for c in mine)
        mine = [c for c in mine if c.verdict != "qualitative"]
        rows.extend(seed_groups(ref, mine) if ref.noise == "seeds" else mine)
    return rows, [rec for rec in records if id(rec) not in matched]
