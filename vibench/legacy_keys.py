"""Checkpoints written before the plug-in restructuring (issue 13, commit 4816694), read today.

That module named the amortized encoder ``guide``, kept the standard-normal prior's parameters as
``model.prior_loc``/``model.prior_scale`` and held a score-function baseline ``score_baseline`` in
every run. Today they are ``strategy.encoder.*``, ``model.prior_module.loc``/``.scale`` and
``objective.baseline`` (score-function objectives only). :func:`renamed` maps an old state dict to
the new names, so that such a checkpoint is tested (``evaluate=``) or analysed
(``gap.checkpoint=``) without an old checkout. Resuming it still needs the old checkout: the
configuration keys changed too, and the resume fingerprint refuses it, naming them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

RENAMES = (
    ("guide.", "strategy.encoder."),
    ("model.prior_loc", "model.prior_module.loc"),
    ("model.prior_scale", "model.prior_module.scale"),
    ("score_baseline", "objective.baseline"),
)
DROPPED_IF_UNUSED = ("score_baseline",)  # every old run saved it; an ELBO objective has no place for it


def renamed(state_dict: dict[str, Any], wanted: Collection[str]) -> dict[str, Any]:
    """``state_dict`` with each old key renamed where the module has the new one (``wanted``: its
    state-dict keys). Keys already current stay; an old key with no new place stays too, so that a
    strict load names it (a non-amortized run's old local table, say), except the unused baseline."""
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        new = key
        if key not in wanted:
            for old, current in RENAMES:
                if key.startswith(old) and current + key[len(old):] in wanted:
                    new = current + key[len(old):]
                    break
            else:
                if key in DROPPED_IF_UNUSED:
                    continue
        out[new] = value
    return out
