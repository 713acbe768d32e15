"""End-of-run analyses as Lightning callbacks (``callbacks=`` config group, conf/callbacks/).

Each runs once the test is done (``on_test_end``, on rank 0), on the model that was tested, and
returns an :class:`AnalysisResult`: metrics (also sent to the run's loggers), warnings, fields
for the run record, and its wall-clock. :func:`vibench.run.run` collects them from ``result``.
Their settings arrive typed (:mod:`vibench.analyses`' dataclasses), never as the run's config;
:meth:`Analysis.check` refuses a request that cannot run, before any training.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L

from vibench.analyses import AISSettings, GapSettings, ais_evaluation, decompose_gaps, gap_warning, gradient_variances, make_images
from vibench.errors import ConfigError


@dataclass
class AnalysisResult:
    metrics: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)  # fields of the run record
    seconds: float = 0.0


class Analysis(L.Callback):
    """An end-of-run analysis: :meth:`analyse` after the test, when ``enabled``."""

    timing_key: str | None = None  # where its seconds go in the record's timing, if anywhere

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.result: AnalysisResult | None = None

    def check(self, module) -> None:
        """Refuse, with what to do instead, an analysis this module cannot have (before training)."""

    def analyse(self, module, splits, loggers: tuple = ()) -> AnalysisResult:
        """The analysis of the tested ``module`` on the data ``splits``; ``loggers``: the trainer's."""
        raise NotImplementedError

    def on_test_end(self, trainer, pl_module) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        started = time.perf_counter()
        result = self.analyse(pl_module, trainer.datamodule.splits, tuple(trainer.loggers))
        result.seconds = time.perf_counter() - started
        if result.metrics:
            for logger in trainer.loggers:
                logger.log_metrics(result.metrics, step=max(0, trainer.global_step - 1))
        self.result = result


class GapDecomposition(Analysis):
    """Cremer et al.'s inference gap = approximation + amortization on random test points (:mod:`vibench.gap`);
    with AIS enabled, log p(x) = max(AIS, IW) per point."""

    timing_key = "gap_s"

    def __init__(self, settings: dict, ais: dict, seed: int, eval_batch_size: int, eval_chunk_mib: float):
        super().__init__(bool(settings["enabled"]))
        self.settings, self.ais = GapSettings(**settings), AISSettings(**ais)
        self.seed, self.eval_batch_size, self.eval_chunk_mib = seed, eval_batch_size, eval_chunk_mib

    def check(self, module) -> None:
        if self.enabled and module.encoder is None:
            raise ConfigError(f"gap.enabled=true decomposes an amortized model's inference gap, but inference is {module.method} without an encoder. Use inference=vae (the gap_mnist preset does).")

    def analyse(self, module, splits, loggers: tuple = ()) -> AnalysisResult:
        gaps = decompose_gaps(module, splits.test, self.settings, self.ais if self.ais.enabled else None, self.seed, self.eval_batch_size, self.eval_chunk_mib)
        warning = gap_warning(gaps, self.settings.max_steps, self.settings.init)
        return AnalysisResult(gaps, [warning] if warning else [])


class AISEvaluation(Analysis):
    """AIS of log p(x) beside the IW bound on random test points, and BDMC (:mod:`vibench.ais`).
    With the gap decomposition on, AIS runs there instead (on the gap's points)."""

    def __init__(self, settings: dict, gap_enabled: bool, seed: int, eval_chunk_mib: float):
        self.settings = AISSettings(**settings)
        super().__init__(self.settings.enabled and not gap_enabled)
        self.seed, self.eval_chunk_mib = seed, eval_chunk_mib

    def check(self, module) -> None:
        encoder = module.encoder
        if self.settings.enabled and self.settings.start == "encoder" and encoder is not None and not encoder.family.density_anywhere:
            raise ConfigError(f"ais.start=encoder needs q's density at any z, which posterior={encoder.family.name} cannot give (no inverse): use ais.start=prior, or posterior=gaussian or iaf.")

    def analyse(self, module, splits, loggers: tuple = ()) -> AnalysisResult:
        metrics = ais_evaluation(module, splits.test, self.settings, self.seed, self.eval_chunk_mib)
        keep = ("n_points", "chains", "steps", "leapfrog", "step_size", "target_accept", "start", "iw_samples", "bdmc_points")
        return AnalysisResult(metrics, record={"ais": {k: v for k, v in asdict(self.settings).items() if k in keep}})


class GradientVariance(Analysis):
    """``gradvar/<estimator>_L<L>``: the variance of the encoder's gradient estimate (:mod:`vibench.diagnostics`)."""

    def __init__(self, enabled: bool, samples: list[int], repeats: int, n_points: int, seed: int, analytic_kl: bool = True):
        super().__init__(enabled)
        self.samples, self.repeats, self.n_points, self.seed, self.analytic_kl = [int(s) for s in samples], repeats, n_points, seed, analytic_kl

    def check(self, module) -> None:
        if self.enabled and module.encoder is None:
            raise ConfigError("diagnostics.grad_variance measures an encoder's gradient, and this run has none: use inference=vae or inference=svi_encoder.")

    def analyse(self, module, splits, loggers: tuple = ()) -> AnalysisResult:
        return AnalysisResult(gradient_variances(module, splits.test, self.samples, self.repeats, self.n_points, self.seed, self.analytic_kl))


class Images(Analysis):
    """Reconstructions, prior samples and (latent = 2) the manifold, to the loggers and ``folder``.
    A picture is not worth the metrics: a failure here is recorded (``images_error``), not raised."""

    def __init__(self, enabled: bool, folder: str, seed: int):
        super().__init__(enabled)
        self.folder, self.seed = Path(folder), seed

    def analyse(self, module, splits, loggers: tuple = ()) -> AnalysisResult:
        from vibench import tracking
        from vibench.report_console import print_error

        if splits.image_shape is None:
            return AnalysisResult()
        try:
            tracking.log_images(loggers[0] if loggers else False, make_images(module, splits.test, splits.image_shape, self.seed), self.folder)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            print_error(f"images were not logged ({error}); the metrics are recorded.")
            return AnalysisResult(record={"images_error": error})
        return AnalysisResult()
