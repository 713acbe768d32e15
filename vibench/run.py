"""``run(cfg)``: the one place that reads the configuration.

Order matters: everything that can be refused (config values, unknown keys, results folder,
data files) is checked before the logger starts or any step is trained; once training has begun,
a failure still leaves a run record with ``status: failed``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vibench import points, records
from vibench.analyses import gap_checkpoint, heldout_warning, load_checkpoint
from vibench.config_checks import check_config
from vibench.callbacks import Analysis
from vibench.errors import ConfigError, Interrupted, VibenchError
from vibench.resume import config_group, find_resume_checkpoint, result_config, saved_state
from vibench.trainer_build import check_distribution, make_trainer, pin_parallel_job


def build(what: str, cfg: DictConfig, **kwargs: Any) -> Any:
    """``instantiate(cfg)``, with construction errors turned into a message naming the config group."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, VibenchError):
            raise cause from None
        reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(e).splitlines()[0]
        raise ConfigError(f"could not build {what} from its config ({reason}). Check the {what}.* settings.") from None


def job_info() -> dict[str, Any]:
    """Hydra's view of this job: overrides, multirun sweep folder and job number (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from vibench.selection import sweep_id_of

    if not HydraConfig.initialized():
        return {"overrides": [], "multirun": False, "sweep_dir": None, "sweep_id": None, "job_num": None}
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    sweep_dir = str(Path(hc.sweep.dir).resolve()) if multirun else None
    return {
        "overrides": list(hc.overrides.task),
        "multirun": multirun,
        "sweep_dir": sweep_dir,
        "sweep_id": sweep_id_of(sweep_dir),
        "job_num": hc.job.num if multirun else None,
    }


def sweep_group(job: dict[str, Any]) -> str | None:
    """The W&B group shared by all jobs of one multirun: its sweep folder, e.g. ``multirun/2026-11-21/14-03-22``."""
    return f"sweep-{job['sweep_id']}" if job["multirun"] else None


def run(cfg: DictConfig) -> float:
    """Train, evaluate, track and record one run; returns the test IW log-likelihood (for sweepers)."""
    import lightning as L
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from vibench import tracking
    from vibench.report_console import print_error, print_note, print_summary

    started = time.perf_counter()
    quiet_library_chatter()
    # 1. Refuse bad input before spending anything.
    check_config(cfg)
    results_dir = records.ensure_writable(cfg.results_dir).resolve()
    output_dir = records.ensure_writable(cfg.output_dir, "output_dir").resolve()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = make_datamodule(cfg)
    splits = datamodule.load()
    model = build("model", cfg.model)
    scheduler = build("scheduler", cfg.scheduler) if cfg.scheduler is not None else None
    module = build("inference", cfg.inference, model=model, optimizer=build("optimizer", cfg.optimizer), scheduler=scheduler)
    checkpoint = check_evaluate_request(cfg) or gap_checkpoint(cfg.gap.enabled, cfg.gap.checkpoint)  # test (and analyse) it, without training
    callbacks = [build("callbacks", c) for c in (cfg.get("callbacks") or {}).values()]
    analyses = [c for c in callbacks if isinstance(c, Analysis)]
    for analysis in analyses:
        analysis.check(module)  # what this module cannot have, refused before training
    job = job_info()
    check_distribution(cfg, job)
    trainer_overrides = pin_parallel_job(job)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    result_cfg = result_config(resolved)
    group = config_group(result_config(OmegaConf.to_container(cfg, resolve=False)))  # seed-derived values still read ${seed}
    # A run that analyses a given checkpoint (gap.checkpoint) trains nothing: nothing to resume or move aside.
    resume_from, resume_note = find_resume_checkpoint(cfg.resume if checkpoint is None else None, output_dir, result_cfg)
    if resume_note:
        print_note(resume_note)
    run_id = (saved_state(resume_from).get("run_id") if resume_from else None) or records.new_run_id()

    # 2. The trainer (it refuses e.g. an accelerator this machine lacks), then tracking: W&B starts
    # last, so that no refused run leaves a W&B run behind, and its own failures still come before training.
    name = ",".join(job["overrides"]) or "default"
    logger = tracking.make_logger(cfg.logger, resolved, sweep_group(job), name, run_id, job_type=group)
    trainer, clock, sigterm, resume_state = make_trainer(cfg, output_dir, run_id, logger, trainer_overrides, extra_callbacks=tuple(callbacks), config=result_cfg)
    started_logger = tracking.start(cfg.logger, logger)
    if started_logger is not logger:  # W&B fell back to offline
        trainer.logger = logger = started_logger
    tracking_info = tracking.describe(logger)
    record: dict[str, Any] = {
        "schema": records.SCHEMA_VERSION,
        "run_id": run_id,
        "status": "running",
        "created": records.now(),
        "method": module.method,
        "inference": module.describe(),
        "dataset": {"name": datamodule.name, "variant": splits.variant, **datamodule.sizes()},
        "iw_samples": cfg.iw_samples,
        "overrides": job["overrides"],
        "sweep_dir": job["sweep_dir"],
        "sweep_id": job["sweep_id"],
        "job_num": job["job_num"],
        "output_dir": str(output_dir),
        "resumed_from": str(resume_from) if resume_from else None,
        "config_group": group,
        "config": resolved,
        "tracking": tracking_info,
        **records.environment(str(trainer.strategy.root_device)),
    }
    try:
        if checkpoint is None:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
            resume_state.finished = True  # a finished run is never resumed by resume=auto
            trainer.save_checkpoint(output_dir / "checkpoints" / "last.ckpt")  # and always at the end
            record["evaluated_checkpoint"] = select_checkpoint(cfg.checkpoint.select, trainer, module, output_dir, datamodule)
        else:
            state = load_checkpoint(checkpoint)
            module.load_state_dict(state["state_dict"])
            record["evaluated_checkpoint"] = {"select": "given", "path": str(checkpoint), "epoch": epochs_trained(state, datamodule)}
        val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}  # test() resets them
        record["stopped_early"] = bool(trainer.early_stopping_callback is not None and trainer.early_stopping_callback.stopped_epoch > 0)
        trainer.test(module, datamodule=datamodule, verbose=False)  # the analyses run at its end (vibench/callbacks.py)
        metrics = {**module.test_summary, **val}
        record["metrics"] = metrics  # from here on, a failure's record keeps what was measured
        if not trainer.is_global_zero:  # DDP: rank 0 alone analyses, records and reports
            return metrics["test/iw_ll"]
        warnings = [heldout_warning(metrics, OmegaConf.select(cfg, "inference.strategy.heldout.max_steps"))]
        for analysis in analyses:
            if analysis.result is not None:
                metrics.update(analysis.result.metrics)
                warnings += analysis.result.warnings
                record.update(analysis.result.record)
        for warning in filter(None, warnings):
            record.setdefault("warnings", []).append(warning)
            print_error(f"warning: {warning}")
        if cfg.gap.enabled and checkpoint is not None:
            record["gap_checkpoint"] = str(checkpoint)
        record["per_point"] = points.write(points.sidecar_values(module.test_points, datamodule.test_rows), [results_dir, output_dir], run_id, splits.variant)
        if splits.true_log_prob is not None:
            metrics["test/true_ll"] = float(splits.true_log_prob(splits.test.cpu().double()).mean())
        trained = record["evaluated_checkpoint"]["epoch"] if checkpoint is not None else trainer.current_epoch  # a given checkpoint: its own training
        record.update(status="completed", epochs=trained, global_step=trainer.global_step if checkpoint is None else state.get("global_step"))
        record["timing"] = timing(clock, module, started, analyses)
        path = records.write_record(record, results_dir, output_dir)
    except SIGTERMException:
        if not trainer.is_global_zero:
            raise
        where = f"a checkpoint is at {sigterm.saved}" if sigterm.saved else "no checkpoint could be saved"
        record.update(status="interrupted", error=f"SIGTERM at step {trainer.global_step}; {where}", timing=timing(clock, module, started, analyses))
        records.write_record(record, results_dir, output_dir)
        interrupted = Interrupted(f"stopped by SIGTERM at step {trainer.global_step}; {where}. Run the same command with resume={sigterm.saved or 'PATH'} (or in the same output folder) to continue.")
        interrupted.recorded = True
        raise interrupted from None
    except BaseException as e:
        if not trainer.is_global_zero:
            raise
        if "metrics" not in record and module.test_summary:  # an analysis failed at the test's end: the test's numbers are kept
            record["metrics"] = {**module.test_summary}
        record.update(status="failed", error=f"{type(e).__name__}: {e}", timing=timing(clock, module, started, analyses))
        records.write_record(record, results_dir, output_dir)
        e.recorded = True  # the caller need not write a record of this failure
        raise
    finally:
        tracking.finish(logger)
    print_summary(record, path)
    return metrics["test/iw_ll"]


def quiet_library_chatter() -> None:
    """Keep the terminal for what matters: no duplicated Lightning log lines, no foreign deprecations."""
    import logging
    import warnings

    # Lightning prints through its own handler; Hydra's root handler would print every line again.
    logging.getLogger("lightning.pytorch").propagate = False
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r"The anonymous setting has no effect")
    # About Lightning's self.log, which per-step training metrics bypass; and Lightning counts a
    # call of train.steps_per_call minibatches as one batch, so it would compare the wrong number.
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
    # With manual optimization, a step checkpoint holds the weights after that step: what resuming needs.
    warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization and every_n_train_steps")


def timing(clock, module, started: float, analyses: list) -> dict[str, float]:
    """The record's wall-clock: training and test (the clock), the strategy's inner and held-out fits, the timed analyses that ran, the total."""
    ran = {a.timing_key: a.result.seconds for a in analyses if a.timing_key and a.result is not None}
    return {**clock.summary(), **{k: round(v, 3) for k, v in {**module.timing, **ran}.items()}, "total_s": round(time.perf_counter() - started, 3)}


def make_datamodule(cfg: DictConfig):
    """The run's DataModule, with ``train.steps_per_call`` minibatches per Lightning step."""
    return build("dataset", cfg.dataset, steps_per_call=cfg.train.steps_per_call, step_multiple=cfg.checkpoint.every_n_steps)


def check_evaluate_request(cfg: DictConfig) -> Path | None:
    """``evaluate=PATH``: the checkpoint (or run folder's ``checkpoints/last.ckpt``) to test without training."""
    if cfg.get("evaluate") is None:
        return None
    path = Path(str(cfg.evaluate)).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError(f"evaluate={cfg.evaluate}: no checkpoint at {path}. Give a .ckpt file (e.g. a run's checkpoints/best.ckpt) or a run's output folder.")
    return path


def epochs_trained(state: dict, datamodule) -> int:
    """Whole epochs of training behind a checkpoint, from its optimizer steps (Lightning's own
    ``epoch`` field counts differently in a validation-end save and in the end-of-fit save)."""
    return int(state.get("global_step", 0)) // max(1, datamodule.steps_per_epoch())


def select_checkpoint(select: str, trainer, module, output_dir: Path, datamodule) -> dict[str, Any]:
    """Load the model that is to be tested into ``module`` and say which one it is, for the record.

    ``last``: the weights at the end of training, as they are. ``best``: ``checkpoints/best.ckpt``,
    the epoch with the best ``val/elbo`` (Lightning's ModelCheckpoint monitoring it).
    """
    last_epoch = trainer.current_epoch  # epochs completed
    if select != "best":
        return {"select": "last", "epoch": last_epoch, "path": str(output_dir / "checkpoints" / "last.ckpt")}
    best = next((c for c in trainer.checkpoint_callbacks if c.monitor == "val/elbo"), None)
    if best is None or not best.best_model_path:
        raise ConfigError("checkpoint.select=best needs a validation ELBO, and no validation epoch ran: validate at least once (trainer.limit_val_batches > 0).")
    state = load_checkpoint(Path(best.best_model_path))
    module.load_state_dict(state["state_dict"])
    return {"select": "best", "epoch": epochs_trained(state, datamodule), "path": best.best_model_path, "val_elbo": float(best.best_model_score), "last_epoch": last_epoch}


