"""``run(cfg)``: the one place that reads the configuration.

Order matters: everything that can be refused (config values, unknown keys, results folder,
data files) is checked before the logger starts or any step is trained; once training has begun,
a failure still leaves a run record with ``status: failed``.
"""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vibench import points, records, tested_model
from vibench.analyses import gap_checkpoint, heldout_warning
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


@dataclass
class Plan:
    """A run checked and built before anything is spent (what :func:`prepare` returns)."""

    cfg: DictConfig
    results_dir: Path
    output_dir: Path
    datamodule: Any
    splits: Any
    module: Any
    given: Path | None  # a checkpoint to test (and analyse) instead of training
    callbacks: list
    job: dict[str, Any]
    resolved: dict[str, Any]
    result_cfg: dict[str, Any]
    group: str | None
    resume_from: Path | None
    resume_note: str | None
    run_id: str

    @property
    def analyses(self) -> list[Analysis]:
        return [c for c in self.callbacks if isinstance(c, Analysis)]


def prepare(cfg: DictConfig) -> Plan:
    """Step 1: refuse bad input (config values, unknown keys, folders, data files, requests this
    module cannot serve) and build the data, the module and the callbacks, before anything is spent."""
    import lightning as L

    check_config(cfg)
    results_dir = records.ensure_writable(cfg.results_dir).resolve()
    output_dir = records.ensure_writable(cfg.output_dir, "output_dir").resolve()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = make_datamodule(cfg)
    splits = datamodule.load()
    model = build("model", cfg.model)
    model.start_at_data(splits.train)
    scheduler = build("scheduler", cfg.scheduler) if cfg.scheduler is not None else None
    module = build("inference", cfg.inference, model=model, optimizer=build("optimizer", cfg.optimizer), scheduler=scheduler)
    given = tested_model.evaluate_request(cfg.get("evaluate")) or gap_checkpoint(cfg.gap.enabled, cfg.gap.checkpoint)
    callbacks = [build("callbacks", c) for c in (cfg.get("callbacks") or {}).values()]
    for analysis in callbacks:
        if isinstance(analysis, Analysis):
            analysis.check(module)  # what this module cannot have, refused before training
    job = job_info()
    check_distribution(cfg, job)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    result_cfg = result_config(resolved)
    group = config_group(result_config(OmegaConf.to_container(cfg, resolve=False)))  # seed-derived values still read ${seed}
    # A run that tests a given checkpoint trains nothing: nothing to resume or move aside.
    resume_from, resume_note = find_resume_checkpoint(cfg.resume if given is None else None, output_dir, result_cfg)
    if given is not None:
        resume_note = tested_model.check_same_model(given, result_cfg, "evaluate" if cfg.get("evaluate") is not None else "gap.checkpoint")
    run_id = (saved_state(resume_from).get("run_id") if resume_from else None) or records.new_run_id()
    return Plan(cfg, results_dir, output_dir, datamodule, splits, module, given, callbacks, job, resolved, result_cfg, group, resume_from, resume_note, run_id)


def header(plan: Plan, device: str, tracking_info: dict[str, Any]) -> dict[str, Any]:
    """The run record's fields known before training: what runs, on what data, where, tracked how."""
    job = plan.job
    return {
        "schema": records.SCHEMA_VERSION,
        "run_id": plan.run_id,
        "status": "running",
        "created": records.now(),
        "method": plan.module.method,
        "inference": plan.module.describe(),
        "dataset": {"name": plan.datamodule.name, "variant": plan.splits.variant, **plan.datamodule.sizes()},
        "iw_samples": plan.cfg.iw_samples,
        "overrides": job["overrides"],
        "sweep_dir": job["sweep_dir"],
        "sweep_id": job["sweep_id"],
        "job_num": job["job_num"],
        "output_dir": str(plan.output_dir),
        "resumed_from": str(plan.resume_from) if plan.resume_from else None,
        "config_group": plan.group,
        "config": plan.resolved,
        "tracking": tracking_info,
        **records.environment(device),
    }


def train(plan: Plan, trainer, resume_state) -> dict[str, Any]:
    """Step 2: train (or load the given checkpoint) and load the model to be tested; returns the
    record's fields on it: which checkpoint, its epochs and steps, whether training stopped early."""
    if plan.given is not None:
        evaluated, step = tested_model.given(plan.given, plan.module, plan.datamodule)
        return {"evaluated_checkpoint": evaluated, "epochs": evaluated["epoch"], "global_step": step, "stopped_early": False}
    trainer.fit(plan.module, datamodule=plan.datamodule, ckpt_path=plan.resume_from)
    resume_state.finished = True  # a finished run is never resumed by resume=auto
    trainer.save_checkpoint(plan.output_dir / "checkpoints" / "last.ckpt")  # and always at the end
    evaluated = tested_model.after_training(plan.cfg.checkpoint.select, trainer, plan.module, plan.output_dir, plan.datamodule)
    stopped = trainer.early_stopping_callback is not None and trainer.early_stopping_callback.stopped_epoch > 0
    return {"evaluated_checkpoint": evaluated, "epochs": trainer.current_epoch, "global_step": trainer.global_step, "stopped_early": bool(stopped),
            "training_parts": resume_state.parts()}


def test(plan: Plan, trainer) -> dict[str, float]:
    """Step 3: the K-sample test of the loaded model (the analyses run at its end, vibench/callbacks.py);
    returns the test's metrics with the last validation's."""
    val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}  # test() resets them
    trainer.test(plan.module, datamodule=plan.datamodule, verbose=False)
    return {**plan.module.test_summary, **val}


def analysed(plan: Plan, metrics: dict[str, float]) -> tuple[dict[str, float], list[str], dict[str, Any]]:
    """Step 4: what the analyses found, with the exact log-likelihood where the data has one and
    the held-out fits' warning: ``(metrics, warnings, record fields)``, all new."""
    found: dict[str, float] = {}
    warnings = [heldout_warning(metrics, OmegaConf.select(plan.cfg, "inference.strategy.heldout.max_steps"))]
    fields: dict[str, Any] = {"gap_checkpoint": str(plan.given)} if plan.cfg.gap.enabled and plan.given is not None else {}
    for analysis in plan.analyses:
        if analysis.result is not None:
            found.update(analysis.result.metrics)
            warnings += analysis.result.warnings
            fields.update(analysis.result.record)
    if plan.splits.true_log_prob is not None:
        found["test/true_ll"] = float(plan.splits.true_log_prob(plan.splits.test.cpu().double()).mean())
    return found, [w for w in warnings if w], fields


def run(cfg: DictConfig) -> float:
    """Train, evaluate, track and record one run; returns the test IW log-likelihood (for sweepers).

    Its steps: :func:`prepare` (refuse bad input, build), the trainer and tracking, :func:`train`,
    :func:`test`, :func:`analysed`, the record. Once training has begun, a failure still leaves a
    record with what was measured.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from vibench import tracking
    from vibench.report_console import print_error, print_note, print_summary
    from vibench.timing import busy_cpu_note

    started = time.perf_counter()
    quiet_library_chatter()
    plan = prepare(cfg)
    if plan.resume_note:
        print_note(plan.resume_note)
    # The trainer (it refuses e.g. an accelerator this machine lacks), then tracking: W&B starts
    # last, so that no refused run leaves a W&B run behind, and its own failures still come before training.
    name = ",".join(plan.job["overrides"]) or "default"
    logger, start_options = tracking.make_logger(cfg.logger, plan.resolved, sweep_group(plan.job), name, plan.run_id, job_type=plan.group)
    trainer, clock, sigterm, resume_state = make_trainer(cfg, plan.output_dir, plan.run_id, logger, pin_parallel_job(plan.job), extra_callbacks=tuple(plan.callbacks), config=plan.result_cfg, resume_from=plan.resume_from)
    started_logger = tracking.start(start_options, logger)
    if started_logger is not logger:  # W&B fell back to offline: it replaces the online logger, epochs.jsonl's stays
        trainer.loggers = [started_logger if each is logger else each for each in trainer.loggers]
        logger = started_logger
    record = header(plan, str(trainer.strategy.root_device), tracking.describe(logger))
    if note := busy_cpu_note(record["device"]):
        print_note(note)
    module, analyses = plan.module, plan.analyses
    try:
        trained = train(plan, trainer, resume_state)
        record["evaluated_checkpoint"], record["stopped_early"] = trained["evaluated_checkpoint"], trained["stopped_early"]
        if trained.get("training_parts"):  # which code trained which steps, across resumes (vibench.faults.ResumeState)
            record["training_parts"] = trained["training_parts"]
        metrics = test(plan, trainer)
        record["metrics"] = metrics  # from here on, a failure's record keeps what was measured
        if not trainer.is_global_zero:  # DDP: rank 0 alone analyses, records and reports
            return metrics["test/iw_ll"]
        found, warnings, fields = analysed(plan, metrics)
        metrics.update(found)
        for warning in warnings:
            record.setdefault("warnings", []).append(warning)
            print_error(f"warning: {warning}")
        record.update(fields)
        record["per_point"] = points.write(points.sidecar_values(module.test_points, plan.datamodule.test_rows), [plan.results_dir, plan.output_dir], plan.run_id, plan.splits.variant)
        record.update(status="completed", epochs=trained["epochs"], global_step=trained["global_step"])
        record["timing"] = timing(clock, module, started, analyses)
        path = records.write_record(record, plan.results_dir, plan.output_dir)
    except SIGTERMException:
        if not trainer.is_global_zero:
            raise
        where = f"a checkpoint is at {sigterm.saved}" if sigterm.saved else "no checkpoint could be saved"
        record.update(status="interrupted", error=f"SIGTERM at step {trainer.global_step}; {where}", timing=timing(clock, module, started, analyses), training_parts=resume_state.parts())
        records.write_record(record, plan.results_dir, plan.output_dir)
        interrupted = Interrupted(f"stopped by SIGTERM at step {trainer.global_step}; {where}. Run the same command with resume={sigterm.saved or 'PATH'} (or in the same output folder) to continue.")
        interrupted.recorded = True
        raise interrupted from None
    except BaseException as e:
        if not trainer.is_global_zero:
            raise
        if "metrics" not in record and module.test_summary:  # an analysis failed at the test's end: the test's numbers are kept
            record["metrics"] = {**module.test_summary}
        record.update(status="failed", error=f"{type(e).__name__}: {e}", timing=timing(clock, module, started, analyses))
        records.write_record(record, plan.results_dir, plan.output_dir)
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
    # A resumed run writes into its own checkpoints/ on purpose; a fresh start moves an old one aside first.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # With manual optimization, a step checkpoint holds the weights after that step: what resuming needs.
    warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization and every_n_train_steps")


def timing(clock, module, started: float, analyses: list) -> dict[str, float]:
    """The record's wall-clock: training and test (the clock), the strategy's inner and held-out fits, the timed analyses that ran, the total."""
    ran = {a.timing_key: a.result.seconds for a in analyses if a.timing_key and a.result is not None}
    return {**clock.summary(), **{k: round(v, 3) for k, v in {**module.timing, **ran}.items()}, "total_s": round(time.perf_counter() - started, 3)}


def make_datamodule(cfg: DictConfig):
    """The run's DataModule, with ``train.steps_per_call`` minibatches per Lightning step."""
    return build("dataset", cfg.dataset, steps_per_call=cfg.train.steps_per_call, step_multiple=cfg.checkpoint.every_n_steps)
