"""The end of a multirun: one row per job (overrides, key metrics, status, check verdict), printed
and written to ``<sweep folder>/summary.json``. A Hydra callback (``hydra.callbacks`` in
conf/config.yaml), so it runs under every launcher, after the last job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def verdict(comparisons: list) -> str:
    """One word for a record's comparisons: fail beats pass beats not comparable; ``-`` for none."""
    found = {c.verdict for c in comparisons}
    for word in ("fail", "pass", "not comparable"):
        if word in found:
            ids = ",".join(c.reference.id for c in comparisons if c.verdict == word)
            return f"{word} ({ids})" if word != "not comparable" else word
    return "-"


def summary_rows(records: list[dict[str, Any]], references: list) -> list[dict[str, Any]]:
    """The summary's rows, in job order."""
    from vibench.references import check

    rows = []
    common = set.intersection(*(set(r.get("overrides") or []) for r in records)) if len(records) > 1 else set()
    for rec in sorted(records, key=lambda r: (r.get("job_num") is None, r.get("job_num") or 0)):
        m = rec.get("metrics") or {}
        comparisons, _ = check([rec], references)
        rows.append({
            "job": rec.get("job_num"), "overrides": " ".join(o for o in rec.get("overrides") or [] if o not in common) or "(none)", "status": rec.get("status"),
            "test/elbo": m.get("test/elbo"), "test/iw_ll": m.get("test/iw_ll"), "test/iw_ll_stderr": m.get("test/iw_ll_stderr"),
            "train_s": (rec.get("timing") or {}).get("train_s"), "check": verdict(comparisons), "run_id": rec.get("run_id"),
            "error": rec.get("error"), "common_overrides": sorted(common),
        })
    return rows


def print_rows(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def f(x, d=2):
        return "" if x is None else f"{x:.{d}f}"

    common = rows[0]["common_overrides"] if rows else []
    table = Table(title=title, caption=f"every job: {' '.join(common)}" if common else None)
    for col in ("job", "overrides", "status", "test/elbo", "test/iw_ll ± se", "train s", "check"):
        table.add_column(col, justify="right" if col in ("job", "test/elbo", "test/iw_ll ± se", "train s") else "left", overflow="fold")
    colours = {"completed": "green", "failed": "bold red", "interrupted": "yellow"}
    for r in rows:
        iw = f"{f(r['test/iw_ll'])} ± {f(r['test/iw_ll_stderr'])}" if r["test/iw_ll"] is not None else ""
        status = f"[{colours.get(r['status'], 'white')}]{r['status']}[/]"
        table.add_row(str(r["job"]), r["overrides"], status, f(r["test/elbo"]), iw, f(r["train_s"], 1), r["check"])
    console = Console()
    console.width = console.width if console.is_terminal else 160
    console.print(table)


class SweepSummary(Callback):
    """Hydra callback: after a multirun, summarize its jobs' records (from the sweep folder)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from vibench.check import DEFAULT_REFERENCES
        from vibench.errors import VibenchError
        from vibench.references import load_references
        from vibench.report_console import print_error
        from vibench.selection import collect_records, sweep_id_of

        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        try:
            records = collect_records([str(sweep_dir)])
            rows = summary_rows(records, load_references(DEFAULT_REFERENCES))
        except VibenchError as e:
            print_error(f"no sweep summary: {e}")
            return
        (sweep_dir / "summary.json").write_text(json.dumps({"sweep_dir": str(sweep_dir), "sweep_id": sweep_id_of(str(sweep_dir)), "jobs": rows}, indent=2) + "\n")
        print_rows(rows, f"sweep {sweep_id_of(str(sweep_dir))}: {len(rows)} job(s), {sum(r['status'] == 'completed' for r in rows)} completed")
        print(f"summary  {sweep_dir / 'summary.json'}\ncheck    python -m vibench.check {sweep_dir}\nreport   python -m vibench.report {sweep_dir} --out {sweep_dir / 'report'}")
