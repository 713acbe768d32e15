"""``python -m vibench [overrides] [-m] [overrides]``: compose the config with Hydra and run it.

Exit codes: 0 success; 2 bad input refused before anything ran (configuration, data, paths,
W&B set-up; Hydra's own refusals included); 1 a run or a multirun job failed; 143 stopped by
SIGTERM after saving a checkpoint.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from vibench.errors import VibenchError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# Hydra flags that take the next argument as their value.
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}



def flags_first(argv: list[str]) -> list[str]:
    """Move Hydra's flags before the overrides, keeping each group's order.

    Hydra parses its command line with argparse, which (on Python < 3.12) rejects overrides on
    both sides of a flag: ``+experiment=aevb_mnist -m latent=2,5`` fails with "unrecognized
    arguments". Overrides never start with ``-``, so moving the flags (and their values) to the
    front gives Hydra the same request in a form it accepts.
    """
    flags, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            flags.append(arg)
            takes_value = arg in _VALUE_FLAGS or (arg in ("--info", "-i") and i + 1 < len(argv) and argv[i + 1] in _INFO_CHOICES)
            if takes_value and i + 1 < len(argv):
                flags.append(argv[i + 1])
                i += 1
        else:
            overrides.append(arg)
        i += 1
    return flags + overrides


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def main(cfg: DictConfig, state: dict) -> float:
    """One job: ``run(cfg)``. In a sweep, a failed job is recorded and the sweep goes on;
    ``state`` (the command's, made by :func:`cli`) learns that a job started and which failed."""
    from vibench.report_console import print_error
    from vibench.run import run

    state["task_started"] = True
    try:
        return run(cfg)
    except Exception as e:
        if not _in_multirun() or getattr(e, "exit_code", None) == 143:  # SIGTERM stops the whole sweep
            if isinstance(e, VibenchError):
                print_error(str(e))
                sys.exit(e.exit_code)
            raise
        # In a sweep, one job's failure must not stop the others: its record says what happened.
        from hydra.core.hydra_config import HydraConfig

        from vibench import records
        from vibench.run import job_info

        job = f"job {HydraConfig.get().job.num} ({','.join(HydraConfig.get().overrides.task)})"
        if not isinstance(e, VibenchError):
            traceback.print_exc()
        if not getattr(e, "recorded", False):  # refused before training: still leave a record of the job
            try:
                records.write_record(records.refused_job_record(cfg, job_info(), e), cfg.results_dir, HydraConfig.get().runtime.output_dir)
            except Exception:
                pass  # e.g. the results folder itself is what was wrong
        print_error(f"{job} failed: {e}")
        state["failed_jobs"].append(job)
        return float("nan")


def refuse_ddp_sweep(argv: list[str]) -> str | None:
    """The message refusing ``-m`` together with DDP on the command line, before any job starts."""
    if not ({"-m", "--multirun"} & set(argv)):
        return None
    if any(a.lstrip("+") in ("trainer=ddp",) or a.lstrip("+").startswith("trainer.strategy=ddp") for a in argv):
        return (
            "trainer=ddp runs one job across several devices and cannot be combined with -m: Lightning re-launches the command line "
            "for each rank, which would re-run the sweep. To sweep, give each job one device with hydra/launcher=local_parallel "
            "(one machine) or hydra/launcher=slurm (a cluster); use trainer=ddp for a single large run, without -m."
        )
    return None


def cli() -> None:
    sys.argv[1:] = flags_first(sys.argv[1:])
    if message := refuse_ddp_sweep(sys.argv[1:]):
        from vibench.report_console import print_error

        print_error(message)
        sys.exit(2)
    state = {"task_started": False, "failed_jobs": []}  # this command's, not the module's

    def task(cfg: DictConfig) -> float:
        return main(cfg, state)

    try:
        hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")(task)()
    except SystemExit as e:
        if e.code == 1 and not state["task_started"]:
            sys.exit(2)  # Hydra refused the command line or could not compose the config
        raise
    if state["failed_jobs"]:
        from vibench.report_console import print_error

        print_error(f"{len(state['failed_jobs'])} job(s) of the sweep failed: {'; '.join(state['failed_jobs'])}. Their records (status failed) say why.")
        sys.exit(1)


if __name__ == "__main__":
    cli()
