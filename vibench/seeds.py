"""Runs that differ only in their seed, summarized: mean, standard deviation across seeds and n.

Records are grouped as ``vibench.check`` (``noise: seeds``) groups them, by
:func:`vibench.resume.seed_group`: every result-changing setting but the seed, less null settings,
where the data was read from and ``evaluate``. So seeds of one configuration run under two versions
of vibench (one that added a setting with a null default in between) still form one row, as they
do in ``vibench.check``. (The stored ``config_group``, W&B's ``job_type``, now leaves null
settings out too, but records written before that hashed them.) The standard deviation across
seeds is what another seed would change, the training noise that a single run cannot show.
"""

from __future__ import annotations

from statistics import fmean, stdev
from typing import Any

from vibench.resume import seed_group

METRICS = ("test/elbo", "test/iw_ll")


def seed_summary(records: list[dict[str, Any]], metrics: tuple[str, ...] = METRICS) -> list[dict[str, Any]]:
    """One row per configuration run with two or more seeds: ``label`` (its overrides but the seed),
    ``seeds``, ``n``, and for each metric ``<metric>`` (mean) and ``<metric>_sd`` (across seeds)."""
    groups: dict[str, list[dict]] = {}
    for rec in records:
        if rec.get("status") == "completed" and rec.get("metrics"):
            groups.setdefault(seed_group(rec), []).append(rec)
    rows = []
    for group, recs in groups.items():
        seeds = sorted({(r.get("config") or {}).get("seed") for r in recs}, key=str)
        if len(seeds) < 2:
            continue
        overrides = [o for o in (recs[0].get("overrides") or []) if not o.startswith("seed=")]
        row = {"seed_group": group, "label": " ".join(overrides) or "(defaults)", "seeds": seeds, "n": len(recs)}
        for m in metrics:
            values = [r["metrics"][m] for r in recs if m in r["metrics"]]
            row[m] = fmean(values) if values else None
            row[f"{m}_sd"] = stdev(values) if len(values) > 1 else None
        rows.append(row)
    return sorted(rows, key=lambda r: r["label"])


def print_seed_table(records: list[dict]) -> None:
    """The seed summary on the terminal too (nothing when no configuration has several seeds)."""
    from rich.console import Console
    from rich.table import Table

    from vibench.check import fmt

    rows = seed_summary(records)
    if not rows:
        return
    t = Table(title="mean ± sd over seeds")
    for col in ("configuration", "test/elbo", "test/iw_ll", "n"):
        t.add_column(col, justify="left" if col == "configuration" else "right")
    for r in rows:
        t.add_row(r["label"], f"{fmt(r['test/elbo'])} ± {fmt(r['test/elbo_sd'])}", f"{fmt(r['test/iw_ll'])} ± {fmt(r['test/iw_ll_sd'])}", str(r["n"]))
    Console(width=None if Console().is_terminal else 160).print(t)
