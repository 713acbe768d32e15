"""Which checkpoint a run resumes from, and why: resume only an interrupted run of the same
configuration.

A run stores a fingerprint of its configuration in every checkpoint (:class:`~vibench.faults.ResumeState`),
together with whether training had finished. ``resume=auto`` resumes ``<output_dir>/checkpoints/last.ckpt``
only when that run was interrupted *and* has the same fingerprint: a SLURM requeue or a re-run after
a crash. A finished run, or one of another configuration, in the same output folder (a reused
``hydra.run.dir``) is never resumed: its ``checkpoints/`` folder is moved aside, not overwritten,
and the new run starts afresh, saying so.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from vibench.errors import ConfigError

# Settings that do not change what a run computes (where things go, how fast, how often it
# checkpoints or logs, what it prints): runs that differ only in these are the same run.
NOT_RESULT_KEYS = (
    "output_dir", "results_dir", "resume", "logger", "images", "data", "callbacks",  # callbacks: built from gap.*, ais.*, diagnostics.*
    "eval.chunk_mib", "eval.batch_size", "eval.compile", "train.compile", "train.steps_per_call", "train.progress_every_s",
    "checkpoint.every_n_epochs", "checkpoint.every_n_steps",
    "trainer.enable_progress_bar", "trainer.log_every_n_steps", "trainer.default_root_dir",
)
# Differences an explicit resume=PATH may have: continuing a finished run for longer, or an
# early-stopped one with a longer patience (or none).
LENGTH_KEYS = ("trainer.max_epochs", "trainer.max_steps", "early_stopping.patience")
# Where the data files are read from, not what they hold (each source verifies its files by checksum):
# a run moved to another machine (started on a lent GPU, continued on a CPU) is the same run. They
# stay in result_config, so that config groups of existing records keep their hashes; resume
# decisions drop them from both sides (a checkpoint's stored config included them).
DATA_LOCATION_KEYS = ("dataset.source.root", "dataset.source.cache_dir", "dataset.source.download")


def result_config(resolved: dict[str, Any]) -> dict[str, Any]:
    """The resolved config without :data:`NOT_RESULT_KEYS`, flattened to ``{"a.b": value}``."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node

    walk(resolved, "")
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in NOT_RESULT_KEYS)}


def fingerprint(config: dict[str, Any]) -> str:
    """A short hash of :func:`result_config`'s output."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_seed_key(key: str) -> bool:
    """The seed and the settings that default to it (``dataset.shuffle_seed``, ``dataset.subset_seed``)."""
    return key == "seed" or key.endswith("_seed") or key.endswith(".seed")


def config_group(config: dict[str, Any]) -> str:
    """``cfg-<hash>`` of a :func:`result_config` output without its seeds (``seed``, and keys such
    as ``dataset.shuffle_seed`` that default to it): runs that differ only in their seed share it
    (the record's ``config_group``, W&B's ``job_type``). Give it the *unresolved* configuration,
    where a value derived from the seed is still ``${seed}``; of a resolved one, every key named
    ``seed`` or ``*_seed`` is left out. ``evaluate`` counts as unset: a run that tests a checkpoint
    has the settings it was trained with (``evaluate=`` refuses others), so it is of that group.
    Null settings and where the data is read from are left out too (:func:`same_run_keys`), so a
    later vibench that adds a setting with a null default, or a run on a machine with its data
    elsewhere, keeps the group of earlier seeds. (Records written before this rule keep the group
    they stored; ``vibench.check`` and the report group seeds by :func:`seed_group` either way.)"""
    config = same_run_keys({**config, "evaluate": None})
    return "cfg-" + fingerprint({k: v for k, v in config.items() if not is_seed_key(k)})[:10]


def seed_group(record: dict[str, Any]) -> str:
    """What runs must share to be seeds of one configuration in ``vibench.check``: the record's
    resolved :func:`result_config` without its seeds, its null settings, where its data was read
    from, and ``evaluate`` (:func:`same_run_keys`). Unlike the stored ``config_group``, it stays
    the same when a later vibench adds a setting with a null default, so seeds of one anchor run
    under two versions (a run over several sessions) are still averaged together."""
    config = same_run_keys({**result_config(record.get("config") or {}), "evaluate": None})
    return "seeds-" + fingerprint({k: v for k, v in config.items() if not is_seed_key(k)})[:10]


def record_config_group(record: dict[str, Any]) -> str:
    """A record's ``config_group``; for records written before it existed, from its resolved config."""
    return record.get("config_group") or config_group(result_config(record.get("config") or {}))


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two :func:`result_config` dicts, as ``key: old -> new``; a key
    missing on one side shows as ``None`` (:func:`same_run_keys` drops nulls: a setting a checkpoint
    predates is off, as null)."""
    keys = sorted(set(a) | set(b))
    missing = object()
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k, missing) != b.get(k, missing)]


def same_run_keys(config: dict[str, Any]) -> dict[str, Any]:
    """A :func:`result_config` dict (or a checkpoint's stored one) less :data:`DATA_LOCATION_KEYS`
    and less its null settings: what must be equal for a checkpoint to be resumed.

    Dropping nulls on both sides lets a setting that a later vibench adds with a null default ("off")
    leave resuming alone: a run checkpointed before the setting existed is still the same run (a
    long anchor run continues across an upgrade). A setting that changes from or to a value still
    differs."""
    return {k: v for k, v in config.items() if k not in DATA_LOCATION_KEYS and v is not None}


def saved_state(checkpoint: Path) -> dict[str, Any]:
    """What :class:`~vibench.faults.ResumeState` stored in a checkpoint: run id, config, finished (``{}`` if none)."""
    import torch

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    for key, state in ckpt.get("callbacks", {}).items():
        if key.startswith("ResumeState") and isinstance(state, dict):
            return state
    return {}


def move_aside(folder: Path, label: str) -> Path:
    """Rename ``folder`` to ``<folder>-<label>`` (or ``-<label>-N`` if taken); returns the new path."""
    target, n = folder.with_name(f"{folder.name}-{label}"), 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}-{label}-{n}")
    folder.rename(target)
    return target


def find_resume_checkpoint(resume: Any, output_dir: Path, config: dict[str, Any]) -> tuple[Path | None, str | None]:
    """``(checkpoint to resume from or None, a message for the user or None)``.

    ``resume``: ``auto`` (this output folder's interrupted run of the same configuration), a path
    (a checkpoint, or a run's output folder; it must be the same configuration, up to its length),
    or ``None``/``False`` (always afresh). ``config`` is this run's :func:`result_config`; where the
    data is read from (:data:`DATA_LOCATION_KEYS`) may differ.
    """
    config = same_run_keys(config)
    if resume is None or resume is False:
        return None, None
    if resume == "auto":
        last = output_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            return None, None
        state = saved_state(last)
        old = None if state.get("config") is None else same_run_keys(state["config"])
        if old == config and not state.get("finished", False):
            return last, f"resuming the interrupted run {state.get('run_id')} from {last} (same configuration)."
        if old is None:
            why = "a checkpoint without a configuration fingerprint (an older vibench, or not a vibench run)"
        elif old != config:
            diff = differences(old, config)
            why = f"the checkpoint of run {state.get('run_id')}, a different configuration ({'; '.join(diff[:5])}{'; ...' if len(diff) > 5 else ''})"
        else:
            why = f"the checkpoint of run {state.get('run_id')}, which finished"
        moved = move_aside(last.parent, str(state.get("run_id") or "previous"))
        return None, f"this output folder held {why}: not resumed. Its checkpoints were moved to {moved}; starting afresh."
    path = Path(str(resume)).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError(f"resume={resume}: no checkpoint at {path}. Give a .ckpt file or a run's output folder holding checkpoints/last.ckpt.")
    old = saved_state(path).get("config")
    old = None if old is None else same_run_keys(old)
    if old is None:
        return path, f"resuming from {path}, which has no configuration fingerprint (an older vibench): make sure it is the same configuration."
    diff = [d for d in differences(old, config) if d.split(":")[0] not in LENGTH_KEYS]
    if diff:
        raise ConfigError(
            f"resume={resume}: that checkpoint is of a different configuration ({'; '.join(diff[:8])}). "
            "Resume it with its own settings, or start afresh with resume=null."
        )
    return path, f"resuming from {path}."
