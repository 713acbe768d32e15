"""Checks of a composed configuration, run before any data is loaded or anything is trained.

Hydra already refuses ``laten=5`` (unknown key without ``+``) and unknown group options. This
module catches the rest: wrong types and ranges of the swept scalars (``latent=abc``), unknown
keys added with ``+`` (``+laten=5``), and keys that a component's constructor does not take
(``+model.decoder.hiden=[10]``), each with one short message naming the key, the value and what
is allowed.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from vibench.errors import ConfigError
from vibench.networks import INIT_SCHEMES

# Keys of conf/config.yaml's top level (config groups included); tests keep this in sync.
TOP_LEVEL = {
    "latent", "mc_samples", "iw_samples", "analytic_kl", "seed", "results_dir", "output_dir", "objective", "annealing", "diagnostics", "train",
    "data", "eval", "images", "gap", "checkpoint", "resume", "dataset", "model", "inference", "optimizer", "trainer", "logger",
    "scheduler", "early_stopping", "evaluate", "ais", "posterior", "prior", "callbacks",
}


def _int(minimum: int | None = None) -> tuple[Callable[[Any], bool], str]:
    desc = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and (minimum is None or v >= minimum)), desc


def _float(minimum: float, strict: bool) -> tuple[Callable[[Any], bool], str]:
    desc = f"a number {'>' if strict else '>='} {minimum:g}"
    ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and (v > minimum if strict else v >= minimum)  # noqa: E731
    return ok, desc


def _unit() -> tuple[Callable[[Any], bool], str]:
    ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1  # noqa: E731
    return ok, "a number in [0, 1]"


def _optional(check: tuple[Callable[[Any], bool], str]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v is None or check[0](v)), f"null or {check[1]}"


_BOOL = (lambda v: isinstance(v, bool)), "true or false"
_STR = (lambda v: isinstance(v, str) and v != ""), "a non-empty path"

# key -> (check, description of what is allowed)
SCALARS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "latent": _int(1),
    "mc_samples": _int(1),
    "iw_samples": _int(1),
    "analytic_kl": _BOOL,
    "objective.samples": _int(1),
    "annealing.per": ((lambda v: v in ("steps", "epochs")), "steps or epochs"),
    "annealing.fn.beta": _float(0, strict=False),
    "annealing.fn.warmup": _float(0, strict=False),
    "annealing.fn.start": _unit(),
    "annealing.fn.end": _unit(),
    "annealing.fn.k": _float(0, strict=True),
    "annealing.fn.total": _float(0, strict=True),
    "annealing.fn.cycles": _int(1),
    "annealing.fn.ratio": _unit(),
    "seed": _int(0),
    "results_dir": _STR,
    "images": _BOOL,
    "eval.chunk_mib": _float(0, strict=True),
    "eval.batch_size": _int(1),
    "train.compile": ((lambda v: v in (True, False, "auto")), "auto, true or false"),
    "train.steps_per_call": _int(1),
    "eval.compile": ((lambda v: v in (True, False, "auto")), "auto, true or false"),
    "eval.repeats": _int(1),
    "model.init": ((lambda v: v in INIT_SCHEMES), "one of " + ", ".join(INIT_SCHEMES)),
    "checkpoint.select": ((lambda v: v in ("last", "best")), "last or best (the best validation ELBO)"),
    "early_stopping.patience": _optional(_int(1)),
    "dataset.batch_size": _int(1),
    "dataset.train_subset": _optional(_int(1)),
    "dataset.val_subset": _optional(_int(1)),
    "dataset.test_subset": _optional(_int(1)),
    "optimizer.lr": _float(0, strict=True),
    "trainer.max_epochs": _int(-1),
    "checkpoint.every_n_epochs": _optional(_int(1)),
    "checkpoint.every_n_steps": _optional(_int(1)),
    "evaluate": ((lambda v: v is None or isinstance(v, str) and v != ""), "null or a checkpoint path"),
    "resume": ((lambda v: v is None or isinstance(v, str) and v != ""), "auto, null, or a checkpoint path"),
    "diagnostics.grad_variance.enabled": _BOOL,
    "diagnostics.grad_variance.repeats": _int(2),
    "diagnostics.grad_variance.n_points": _int(1),
    "ais.enabled": _BOOL,
    "ais.n_points": _int(1),
    "ais.chains": _int(1),
    "ais.steps": _int(1),
    "ais.leapfrog": _int(1),
    "ais.step_size": _float(0, strict=True),
    "ais.target_accept": _unit(),
    "ais.start": ((lambda v: v in ("encoder", "prior")), "encoder or prior"),
    "ais.iw_samples": _int(1),
    "ais.batch_points": _int(1),
    "ais.bdmc_points": _int(0),
    "gap.enabled": _BOOL,
    "gap.n_points": _int(1),
    "gap.init": ((lambda v: v in ("prior", "encoder")), "prior or encoder"),
    "gap.iw_samples": _int(1),
    "gap.lr": _float(0, strict=True),
    "gap.samples": _int(1),
    "gap.window": _int(1),
    "gap.patience": _int(0),
    "gap.max_steps": _int(1),
    "inference.strategy.inner_steps": _int(0),
    "inference.strategy.inner_grad_clip": _optional(_float(0, strict=True)),
    "posterior.layers": _int(1),
    "prior.components": _int(1),
}


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
    return {"latent": "20", "results_dir": "results/runs", "beta": "1.0", "optimizer.lr": "1e-3", "eval.chunk_mib": "16"}.get(key, "1" if "subset" not in key else "1000")


def check_top_level(cfg: DictConfig) -> None:
    for key in cfg.keys():
        if key not in TOP_LEVEL:
            raise ConfigError(
                f"'{key}' is not a vibench setting (was it added with +{key}=...?).{_suggest(str(key), TOP_LEVEL)} "
                f"Settings: {', '.join(sorted(TOP_LEVEL))}."
            )


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
    check_scalars(cfg)
    check_learning_rates(cfg)
    check_targets(cfg)
