"""Which run records a command works on: record files, folders, a multirun's folder, or a sweep id.

Every job writes its record twice: to ``results_dir`` (all runs together) and to its own output
folder as ``record.json``. A multirun's folder (``multirun/DATE/TIME``) therefore holds exactly
its jobs' records, and so does a sweep id (``DATE_TIME``, the record's ``sweep_id``; its W&B group
is ``sweep-DATE_TIME``), looked up in the results folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vibench.errors import VibenchError
from vibench.records import read_record

DEFAULT_RESULTS = "results/runs"


def results_root() -> Path:
    return Path(os.environ.get("VIBENCH_RESULTS_DIR", DEFAULT_RESULTS))


def sweep_id_of(sweep_dir: str | None) -> str | None:
    """``multirun/2026-11-22/14-03-22`` -> ``2026-11-22_14-03-22`` (the W&B group without ``sweep-``)."""
    return "_".join(Path(sweep_dir).parts[-2:]) if sweep_dir else None


def _files(arg: str) -> list[Path]:
    p = Path(arg)
    if p.is_dir():
        return sorted(p.rglob("*.json"))
    if p.is_file():
        return [p]
    # not a path: a sweep id, looked up among the records of the results folder
    root = results_root()
    matches = []
    for f in sorted(root.glob("*.json")) if root.is_dir() else []:
        try:
            rec = read_record(f)
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(rec, dict) and arg.removeprefix("sweep-") in (rec.get("sweep_id"), sweep_id_of(rec.get("sweep_dir"))):
            matches.append(f)
    if not matches:
        raise VibenchError(f"{arg} is neither a file, a folder, nor the id of a sweep with records in {root}. Give record files, folders, a multirun folder (multirun/DATE/TIME) or a sweep id (DATE_TIME).")
    return matches


def collect_records(paths: list[str]) -> list[dict]:
    """The run records named by ``paths`` (files; folders, searched recursively; sweep ids), each
    once (by run id), with ``_path`` set to the file it came from."""
    records: dict[str, dict] = {}
    for f in (f for arg in paths for f in _files(arg)):
        try:
            rec = read_record(f)
        except (OSError, json.JSONDecodeError) as e:
            raise VibenchError(f"{f} is not a readable run record ({e}).") from None
        if isinstance(rec, dict) and "run_id" in rec and "status" in rec and rec["run_id"] not in records:
            rec["_path"] = str(f)
            records[rec["run_id"]] = rec
    if not records:
        raise VibenchError(f"no run records found in {' '.join(paths)}. Give record files or folders (default results/runs), a multirun folder or a sweep id.")
    return list(records.values())
