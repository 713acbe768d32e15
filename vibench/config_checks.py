"""Checks of a composed configuration, run before any data is loaded or anything is trained.

Hydra already refuses ``laten=5`` (unknown key without ``+``) and unknown group options. This
module catches the rest: wrong types and ranges of the swept scalars (``latent=abc``), unknown
keys added with ``+`` (``+laten=5``), and keys that a component's constructor does not take
(``+model.decoder.hiden=[10]``), each with one short message naming the key, the value and what
is allowed. The analyses' settings are typed dataclasses (:class:`~vibench.analyses.GapSettings`,
:class:`~vibench.analyses.AISSettings`) whose fields say what they allow; their checks here are
read from them.

Not Hydra's ConfigStore schemas: with Hydra 1.3, a structured schema refuses ``latent=abc`` at
composition as "Value 'abc' of type 'str' could not be converted to Integer / full_key: latent /
object_type=Schema", without what is allowed or an example; it accepts ``+laten=5`` (``+`` adds the
key to the schema) and checks no range (``gap.n_points=-3`` composes). The checks below would all
still be needed, and the first refusal would read worse.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from vibench.allowed import BOOL, Allowed, field_checks, integer, number, one_of, optional, unit, unknown_fields
from vibench.analyses import AISSettings, GapSettings
from vibench.errors import ConfigError
from vibench.model import OUTPUT_BIAS
from vibench.networks import INIT_SCHEMES

# Keys of conf/config.yaml's top level (config groups included); tests keep this in sync.
TOP_LEVEL = {
    "latent", "mc_samples", "iw_samples", "analytic_kl", "seed", "results_dir", "output_dir", "objective", "annealing", "diagnostics", "train",
    "data", "eval", "images", "gap", "checkpoint", "resume", "dataset", "model", "inference", "optimizer", "trainer", "logger",
    "scheduler", "early_stopping", "evaluate", "ais", "posterior", "prior", "callbacks",
}


_STR = (lambda v: isinstance(v, str) and v != ""), "a non-empty path"

# key -> (check, description of what is allowed)
SCALARS: dict[str, Allowed] = {
    "latent": integer(1),
    "mc_samples": integer(1),
    "iw_samples": integer(1),
    "analytic_kl": BOOL,
    "objective.samples": integer(1),
    "annealing.per": one_of("steps", "epochs"),
    "annealing.fn.beta": number(0, strict=False),
    "annealing.fn.warmup": number(0, strict=False),
    "annealing.fn.start": unit(),
    "annealing.fn.end": unit(),
    "annealing.fn.k": number(0, strict=True),
    "annealing.fn.total": number(0, strict=True),
    "annealing.fn.cycles": integer(1),
    "annealing.fn.ratio": unit(),
    "seed": integer(0),
    "results_dir": _STR,
    "images": BOOL,
    "eval.chunk_mib": number(0, strict=True),
    "eval.batch_size": integer(1),
    "train.compile": one_of(True, False, "auto", desc="auto, true or false"),
    "train.steps_per_call": integer(1),
    "train.progress_every_s": number(0, strict=False),
    "eval.compile": one_of(True, False, "auto", desc="auto, true or false"),
    "eval.repeats": integer(1),
    "model.init": ((lambda v: v in INIT_SCHEMES), "one of " + ", ".join(INIT_SCHEMES)),
    "model.output_bias": optional(one_of(*OUTPUT_BIAS)),
    "optimizer.loss_scale": number(0, strict=True),
    "optimizer.initial_second_moment": number(0, strict=False),
    "dataset.fixed_order": optional(BOOL),
    "scheduler.lr_lambda.rounded": optional(BOOL),
    "checkpoint.select": one_of("last", "best", desc="last or best (the best validation ELBO)"),
    "early_stopping.patience": optional(integer(1)),
    "dataset.batch_size": integer(1),
    "dataset.train_subset": optional(integer(1)),
    "dataset.val_subset": optional(integer(1)),
    "dataset.test_subset": optional(integer(1)),
    "optimizer.lr": number(0, strict=True),
    "trainer.max_epochs": integer(-1),
    "checkpoint.every_n_epochs": optional(integer(1)),
    "checkpoint.every_n_steps": optional(integer(1)),
    "evaluate": ((lambda v: v is None or isinstance(v, str) and v != ""), "null or a checkpoint path"),
    "resume": ((lambda v: v is None or isinstance(v, str) and v != ""), "auto, null, or a checkpoint path"),
    "diagnostics.grad_variance.enabled": BOOL,
    "diagnostics.grad_variance.repeats": integer(2),
    "diagnostics.grad_variance.n_points": integer(1),
    "inference.strategy.inner_steps": integer(0),
    "inference.strategy.inner_grad_clip": optional(number(0, strict=True)),
    "posterior.layers": integer(1),
    "prior.components": integer(1),
    # the analyses' typed settings say what each of their fields allows
    **field_checks("gap", GapSettings),
    **field_checks("ais", AISSettings),
}

# top-level sections read into a settings dataclass: a key that is not one of its fields is refused
TYPED_SECTIONS: dict[str, type] = {"gap": GapSettings, "ais": AISSettings}


def _suggest(key: str, options: set[str] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def check_scalars(cfg: DictConfig) -> None:
    for key, (ok, allowed) in SCALARS.items():
        value = OmegaConf.select(cfg, key, default="<missing>", throw_on_missing=False)
        if value == "<missing>":
            continue
        if not ok(value):
            raise ConfigError(f"{key}={value!r} is not valid: {key} must be {allowed}. Fix it on the command line, e.g. {key}={_example(key)}.")


def _example(key: str) -> str:
    return {"latent": "20", "results_dir": "results/runs", "beta": "1.0", "optimizer.lr": "1e-3", "eval.chunk_mib": "16", "model.output_bias": "train_mean", "dataset.fixed_order": "true", "scheduler.lr_lambda.rounded": "true"}.get(key, "1" if "subset" not in key else "1000")


def check_top_level(cfg: DictConfig) -> None:
    for key in cfg.keys():
        if key not in TOP_LEVEL:
            raise ConfigError(
                f"'{key}' is not a vibench setting (was it added with +{key}=...?).{_suggest(str(key), TOP_LEVEL)} "
                f"Settings: {', '.join(sorted(TOP_LEVEL))}."
            )


def check_typed_sections(cfg: DictConfig) -> None:
    """Keys added to a typed section (``+gap.n_pointz=5``) that its settings dataclass does not have."""
    for section, settings in TYPED_SECTIONS.items():
        node = cfg.get(section)
        if isinstance(node, DictConfig):
            allowed = [f.name for f in dataclasses.fields(settings)]
            for key in unknown_fields(node.keys(), settings):
                raise ConfigError(f"{section}.{key} is not a setting of {section}.{_suggest(key, allowed)} Settings of {section}: {', '.join(allowed)}.")


def check_targets(node: Any, path: str = "") -> None:
    """Every ``_target_`` node's keys must be parameters of its target (unless it takes ``**kwargs``)."""
    if isinstance(node, DictConfig):
        target = node.get("_target_") if "_target_" in node else None
        if target is not None:
            _check_target(node, str(target), path)
        for key in node.keys():
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                check_targets(child, f"{path}.{key}" if path else str(key))


def _check_target(node: DictConfig, target: str, path: str) -> None:
    try:
        obj = get_object(target)
    except Exception:
        raise ConfigError(f"{path}._target_={target!r} cannot be imported. Check the spelling of the class or function.") from None
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [name for name in params if name not in ("self", "args")]
    for key in node.keys():
        if str(key).startswith("_"):
            continue
        if key not in params:
            raise ConfigError(f"{path}.{key} is not a setting of {target}.{_suggest(str(key), allowed)} Settings of {path}: {', '.join(allowed)}.")


def check_learning_rates(node: Any, path: str = "") -> None:
    """Every ``lr`` anywhere in the config (model, inner and held-out optimizers) must be a number > 0."""
    if not isinstance(node, DictConfig):
        return
    for key in node.keys():
        child = node._get_node(key)
        where = f"{path}.{key}" if path else str(key)
        if isinstance(child, DictConfig):
            check_learning_rates(child, where)
        elif key == "lr":
            value = node[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{where}={value!r} is not valid: a learning rate must be a number > 0, e.g. {where}=1e-3.")


def check_config(cfg: DictConfig) -> None:
    """All checks; raises :class:`ConfigError` with a message meant for the user."""
    check_top_level(cfg)
    check_typed_sections(cfg)
    check_scalars(cfg)
    check_learning_rates(cfg)
    check_targets(cfg)
