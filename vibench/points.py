"""Per-datapoint results: the sidecar file written next to every run record.

A record's dataset means hide what a comparison between two runs needs: which points, and each
point's value. ``<run_id>.points.npz`` (beside ``<run_id>.json``, and beside the job folder's
``record.json``) holds, per test point, its index in the test split and its ``iw_ll``, ``elbo``,
``kl``, ``recon`` and ``iw_ll_mc_var`` (the delta-method Monte Carlo variance of its IW estimate),
as float64, sorted by index. The record's ``per_point`` field names the file and carries
``test_index_hash``, a hash of the set of test indices (and the split's variant): two runs with
the same hash were evaluated on the same points and can be compared point by point
(:mod:`vibench.compare`).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from vibench.atomic import atomic_write
from vibench.evaluation import average_repeats

KEYS = ("iw_ll", "elbo", "kl", "recon", "iw_ll_mc_var", "elbo_inner", "exact_ll")


def index_hash(index: np.ndarray | torch.Tensor, variant: str) -> str:
    """A short hash of the sorted test indices and the dataset variant they index."""
    ids = np.sort(np.asarray(index, dtype=np.int64))
    return hashlib.sha256(variant.encode() + b"\0" + ids.tobytes()).hexdigest()[:16]


def sidecar_values(per_point: dict[str, torch.Tensor], rows: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """``index`` and the :data:`KEYS` present in ``per_point`` (each ``[N]``), float64, sorted by index.

    ``per_point["idx"]`` are positions in the evaluated test tensor; ``rows`` (the datamodule's
    ``test_rows``) maps them to rows of the full test split, so that subsets drawn differently
    never share an index. With ``iw_ll_repeats`` (``[N, R]``), a point's ``iw_ll`` is the mean of
    its R estimates, as in the record."""
    values = average_repeats(per_point)
    idx = values["idx"].cpu().long()
    index = (rows.cpu()[idx] if rows is not None else idx).numpy().astype(np.int64)
    order = np.argsort(index, kind="stable")
    out = {"index": index[order]}
    for key in KEYS:
        if key in values:
            out[key] = values[key].detach().double().cpu().numpy()[order]
    return out


def write(values: dict[str, np.ndarray], folders: list[Path], run_id: str, variant: str) -> dict:
    """Write the sidecar ``<run_id>.points.npz`` into each folder (atomically); returns the record's
    ``per_point`` field: ``file``, ``n``, ``keys``, ``test_index_hash``."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **values)
    data = buffer.getvalue()
    name = f"{run_id}.points.npz"
    for folder in folders:
        atomic_write(Path(folder).expanduser() / name, lambda f: f.write(data))
    return {"file": name, "n": int(len(values["index"])), "keys": [k for k in values if k != "index"], "test_index_hash": index_hash(values["index"], variant)}


def read(record: dict) -> dict[str, np.ndarray] | None:
    """A record's per-point values (``index`` and its keys), or ``None`` when it has no sidecar
    (older records) or the file is missing. ``record["_path"]`` is where the record was read from
    (``vibench.records.read_record`` sets it); a record with a sidecar and no ``_path`` is an error,
    not "no file"."""
    info = record.get("per_point")
    if not info:
        return None
    if "_path" not in record:
        raise ValueError(f"record {record.get('run_id')} has no _path, so its per-point file {info['file']} cannot be found: read it with vibench.records.read_record.")
    path = Path(record["_path"]).parent / info["file"]
    if not path.is_file():
        return None
    with np.load(path) as f:
        return {k: f[k] for k in f.files}
