"""A run folder's logged history, read offline: W&B's run file, Lightning's CSV log, ``epochs.jsonl``.

W&B's run file is read directly (a LevelDB-style log of protobuf records, the format W&B's own
``wandb sync`` uploads), so no W&B account or network is needed. :func:`history` gives the rows
a run logged, :func:`epoch_curve` one row per epoch of its epoch-level metrics
(:data:`vibench.epoch_log.EPOCH_KEYS`). Used by :mod:`vibench.curves`.
"""

from __future__ import annotations

import csv
import json
import struct
from collections import defaultdict
from pathlib import Path

from vibench import epoch_log
from vibench.epoch_log import EPOCH_KEYS

_BLOCK, _HEADER = 32768, 7  # W&B's run file: 32 KiB blocks of records, each with a 7-byte header
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> list[bytes]:
    """The raw records of a W&B run file (``run-*.wandb``): a 7-byte file header (``:W&B``, magic,
    version), then records of ``crc32 (4) | length (2) | type (1) | data``, split across 32 KiB
    blocks as FIRST/MIDDLE/LAST pieces, blocks padded when fewer than 7 bytes remain."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    records, pos, pending = [], _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if length == 0 and kind == 0:  # zero padding up to the block's end
            pos += left
            continue
        piece, pos = data[pos + _HEADER:pos + _HEADER + length], pos + _HEADER + length
        if kind == _FULL:
            records.append(piece)
        elif kind == _FIRST:
            pending = piece
        elif kind == _MIDDLE:
            pending += piece
        elif kind == _LAST:
            records.append(pending + piece)
    return records


def wandb_history(path: Path, keys: tuple[str, ...] | None = None) -> list[dict]:
    """The history rows (``wandb.log`` calls) of a W&B run file, values decoded from JSON; with
    ``keys``, only rows that log one of them. (A record's key names are bytes of it, so the others
    are skipped unparsed: a 3,280-epoch run logs about 800,000 step-level rows and 3,280 epoch-level ones.)"""
    from wandb.proto import wandb_internal_pb2

    wanted = None if keys is None else [k.encode() for k in keys]
    rows = []
    for raw in wandb_records(path):
        if wanted is not None and not any(k in raw for k in wanted):
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item})
    return rows


def csv_history(path: Path) -> list[dict]:
    """The rows of a CSV log, as numbers; ``epoch`` and ``step`` as integers, and any value written
    as a whole number (a logged ``90``) as one, so that a curve read back from a ``curve.csv`` is
    written again as it was."""

    def number(key: str, value: str) -> float | int:
        if key in ("epoch", "step"):
            return int(float(value))
        return int(value) if value.lstrip("-").isdigit() else float(value)

    with open(path) as f:
        return [{k: number(k, v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def csv_segment(log: Path) -> tuple[str, int]:
    """``(folder, N)`` of Lightning's ``csv/version_N/metrics.csv``: one per segment of a resumed run,
    sorted in the order they ran (``version_10`` after ``version_9``)."""
    n = log.parent.name.rpartition("_")[2]
    return str(log.parent.parent), int(n) if n.isdigit() else -1


def history(run_dir: Path) -> list[dict]:
    """A run folder's logged rows: its ``epochs.jsonl`` (:mod:`vibench.epoch_log`) alone when that
    begins at epoch 0 (it then holds every epoch, and reading W&B's file takes about 7 s for
    3,000 epochs, its step-level rows skipped); else W&B's offline run file if there is one, or Lightning's CSV log, followed by
    the rows of ``epochs.jsonl``, which fill the epochs those lost to a kill. Given a ``.csv`` file
    instead of a folder (a ``curve.csv`` that ``vibench.curves`` wrote, kept after the run's folder
    is gone), its rows."""
    if run_dir.suffix == ".csv" and run_dir.is_file():
        return csv_history(run_dir)
    own = run_dir / epoch_log.FILE_NAME
    own_rows = epoch_log.read(own) if own.is_file() else []
    if own_rows and own_rows[0].get("epoch") == 0:
        return own_rows
    rows = []
    runs = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")) or sorted(run_dir.glob("wandb/run-*/run-*.wandb"))
    if runs:
        rows = [row for run in runs for row in wandb_history(run, ("epoch",))]  # epoch_curve reads only rows with an epoch
    elif logs := sorted(run_dir.rglob("metrics.csv"), key=csv_segment):
        rows = [row for log in logs for row in csv_history(log)]
    rows += own_rows
    if not rows and not own.is_file():
        raise FileNotFoundError(f"{run_dir} holds no {epoch_log.FILE_NAME}, no W&B run file (wandb/offline-run-*/run-*.wandb) and no Lightning CSV log (metrics.csv). Is it a run's output folder?")
    return rows


def epoch_curve(rows: list[dict]) -> list[dict]:
    """One row per epoch with the epoch-level metrics logged for it (later values win)."""
    by_epoch: dict[int, dict] = defaultdict(dict)
    for row in rows:
        if "epoch" not in row or not any(k in row for k in EPOCH_KEYS):
            continue
        epoch = int(row["epoch"])
        by_epoch[epoch].update({k: row[k] for k in EPOCH_KEYS if k in row})
        by_epoch[epoch].setdefault("step", row.get("trainer/global_step", row.get("step")))
    return [{"epoch": e, **v} for e, v in sorted(by_epoch.items())]
