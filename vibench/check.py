"""``python -m vibench.check [records or folders ...]``: compare run records with reference bounds.

Prints reference, measured value, difference, allowed shortfall and verdict for every record
that matches a reference's keys. Exit codes: 0 no regression; 1 a regression (or a ``--require``d
reference not passed); 2 bad input (no records, unreadable registry).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vibench.errors import VibenchError
from vibench.references import check, load_references, nearest
from vibench.selection import collect_records

DEFAULT_REFERENCES = Path(__file__).resolve().parent.parent / "results" / "references.yaml"


def fmt(x: float | None, digits: int = 2) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def uncommitted(record: dict) -> list[str] | None:
    """None when every part of a run (its start and each resume, ``training_parts``, and the code
    that wrote the record, ``git``) ran committed code; else the tracked files that differed from
    the commit, as far as the record names them (records before 2026-11-24's evening do not: ``[]``).
    A run from uncommitted code is not reproduced by its commit alone."""
    dirty = [s for s in (record.get("git") or {}, *(record.get("training_parts") or [])) if s.get("dirty")]
    return None if not dirty else sorted({f for s in dirty for f in (s.get("changed") or [])})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vibench.check", description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="*", default=["results/runs"], help="record files, folders, multirun folders or sweep ids (default: results/runs)")
    parser.add_argument("--references", default=str(DEFAULT_REFERENCES), help="the registry (default: results/references.yaml)")
    parser.add_argument("--json", action="store_true", help="print the comparisons as JSON")
    parser.add_argument("--require", action="append", default=[], metavar="ID", help="fail unless this reference was compared and passed")
    args = parser.parse_args(argv)
    from vibench.report_console import print_error

    try:
        records = collect_records(args.records)
        references = load_references(args.references)
    except VibenchError as e:
        print_error(str(e))
        return 2
    rows, unmatched = check(records, references)
    failed = [r for r in rows if r.verdict == "fail"]
    missing = [rid for rid in args.require if not any(r.reference.id == rid and r.verdict == "pass" for r in rows)]
    near = {r["run_id"]: n for r in unmatched if (n := nearest(r, references)) is not None}
    compared = {run for r in rows for run in (r.runs or (r.record["run_id"],))}
    dirty = {r["run_id"]: files for r in records if r["run_id"] in compared and (files := uncommitted(r)) is not None}
    if args.json:
        near_json = {run: {"reference": ref.id, "differs": {k: {"run": a, "reference": b} for k, (a, b) in d.items()}} for run, (ref, d) in near.items()}
        print(json.dumps({"comparisons": [r.as_dict() for r in rows], "unmatched": [r["run_id"] for r in unmatched], "nearest": near_json,
                          "uncommitted": dirty, "regressions": len(failed), "missing_required": missing}, indent=2, default=str))
    else:
        print_table(rows, unmatched, len(records), near, dirty)
    if missing:
        print_error(f"required reference(s) not passed: {', '.join(missing)} (no matching completed record, or it failed).")
    return 1 if failed or missing else 0


def print_table(rows, unmatched, n_records: int, near: dict | None = None, dirty: dict | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    colours = {"pass": "green", "fail": "bold red", "not comparable": "yellow"}
    table = Table(title=f"vibench check: {n_records} record(s), {len(rows)} comparison(s)")
    for col in ("reference", "run", "metric", "reference value", "measured ± se", "difference", "allowed", "noise allowed for", "verdict"):
        table.add_column(col, justify="right" if col in ("reference value", "measured ± se", "difference", "allowed") else "left")
    for r in rows:
        sign = "± sd" if r.runs else "±"
        measured = f"{fmt(r.measured)} {sign} {fmt(r.stderr, 3)}" if r.stderr is not None else fmt(r.measured)
        verdict = f"[{colours.get(r.verdict, 'white')}]{r.verdict}[/]" + (f" ({r.why})" if r.why else "")
        table.add_row(r.reference.id, r.run_label, r.reference.metric, fmt(r.reference.value), measured, fmt(r.difference), fmt(r.allowed), r.noise, verdict)
    console = Console(width=None if Console().is_terminal else 200)
    console.print(table)
    by_files: dict[tuple[str, ...], list[str]] = {}
    for run, files in (dirty or {}).items():  # one line per set of changed files
        by_files.setdefault(tuple(files), []).append(run)
    for files, runs in by_files.items():
        one = len(runs) == 1
        what = "to " + ", ".join(files) if files else f"(not named in the record{'' if one else 's'})"
        tail = "its commit alone does not reproduce it" if one else "their commits alone do not reproduce them"
        console.print(f"{', '.join(runs)} ran with uncommitted changes {what}: {tail}")
    if unmatched:
        console.print(f"{len(unmatched)} record(s) match no reference: {', '.join(r['run_id'] for r in unmatched[:8])}{' ...' if len(unmatched) > 8 else ''}")
        for run, (ref, differs) in list((near or {}).items())[:8]:
            why = "; ".join(f"{k}: run {a!r}, reference {b!r}" for k, (a, b) in differs.items())
            console.print(f"  {run}: nearest reference {ref.id}, compared only when these match: {why}")


if __name__ == "__main__":
    sys.exit(main())
