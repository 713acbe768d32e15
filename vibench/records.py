"""Run records: one JSON file per run, written atomically, read by checks and reports.

The schema is documented in results/README.md. Records never hold tensors: every metric is a
plain float under a stable ``stage/quantity`` name.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vibench.atomic import atomic_write
from vibench.errors import ConfigError

SCHEMA_VERSION = 1
REPO = Path(__file__).resolve().parent.parent


def new_run_id() -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def ensure_writable(folder: str | Path, what: str = "results_dir") -> Path:
    """Create ``folder`` if needed and prove it is writable, or raise :class:`ConfigError` now."""
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"{what}={folder} is not writable ({e.strerror}). Choose another folder: {what}=/path/you/can/write.") from None
    return path


def git_state() -> dict[str, Any]:
    """The checkout that runs: ``commit``, whether tracked files differ from it (``dirty``) and, if
    they do, which (``changed``: paths from the repository root, at most 20 named, then ``"... and
    N more"``), so that a dirty record says whether the changes could touch its numbers (a README
    edit cannot). None each where git cannot tell (no git, not a checkout)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.rstrip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("-c", "core.quotePath=false", "status", "--porcelain", "--untracked-files=no") if commit else None
    if status is None:
        return {"commit": commit, "dirty": None, "changed": None}
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": commit, "dirty": bool(changed), "changed": changed[:20] + ([f"... and {len(changed) - 20} more"] if len(changed) > 20 else [])}


def environment(device: str) -> dict[str, Any]:
    import hydra
    import lightning
    import torch

    try:
        import wandb

        wandb_version = wandb.__version__
    except ImportError:
        wandb_version = None
    from vibench import __version__

    name = torch.cuda.get_device_name() if device.startswith("cuda") else (platform.processor() or platform.machine())
    return {
        "versions": {"vibench": __version__, "python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__, "hydra": hydra.__version__, "wandb": wandb_version},
        "git": git_state(),
        "device": {"type": device, "name": name, "torch_threads": torch.get_num_threads(), "host": platform.node(), **cpu_load()},
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
    }


def cpu_load() -> dict[str, Any]:
    """The cores this process may use and the 1-minute load average as it starts (threads kept busy by
    all processes, before this run trains: other work that its wall-clock would share the cores with)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_count": cpus, "load_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def write_record(record: dict[str, Any], results_dir: str | Path, job_dir: str | Path | None = None) -> Path:
    """Write ``record`` to ``<results_dir>/<run_id>.json`` atomically (temp file, fsync, rename),
    and a copy to ``<job_dir>/record.json`` (the job's output folder: so a multirun's folder holds
    exactly its jobs' records). Returns the first path."""
    data = (json.dumps(record, indent=2, default=str) + "\n").encode()
    if job_dir is not None:
        atomic_write(Path(job_dir).expanduser() / "record.json", lambda f: f.write(data))
    return atomic_write(Path(results_dir).expanduser() / f"{record['run_id']}.json", lambda f: f.write(data))


def read_record(path: str | Path) -> dict[str, Any]:
    """The record in ``path``, with ``_path`` set to that file (where its per-point file is found)."""
    with open(path) as f:
        record = json.load(f)
    if isinstance(record, dict):
        record["_path"] = str(path)
    return record


def now() -> str:
    """UTC, ISO 8601, to the millisecond: runs a second apart (a digits run takes less) still order
    by it (``vibench.compare`` keeps the later of two records of one seed)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def refused_job_record(cfg, job: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """The record of a multirun job refused before it trained, so a sweep's records stay complete."""
    from omegaconf import OmegaConf

    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        config = OmegaConf.to_container(cfg, resolve=False)
    return {
        "schema": SCHEMA_VERSION,
        "run_id": new_run_id(),
        "status": "failed",
        "created": now(),
        "error": f"{type(error).__name__}: {error}",
        "overrides": job["overrides"],
        "sweep_dir": job["sweep_dir"],
        "sweep_id": job.get("sweep_id"),
        "job_num": job["job_num"],
        "config": config,
    }
