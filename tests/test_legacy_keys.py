"""Checkpoints from before issue 13's restructuring load into today's module."""

from __future__ import annotations

import torch


def _legacy(state_dict):
    """Today's keys written the old way (commit 4816694's parent): guide.*, model.prior_loc/scale, score_baseline."""
    old = {}
    for key, value in state_dict.items():
        key = key.replace("strategy.encoder.", "guide.").replace("model.prior_module.loc", "model.prior_loc").replace("model.prior_module.scale", "model.prior_scale")
        old[key] = value.clone()
    old["score_baseline"] = torch.zeros(())
    return old


def test_an_old_checkpoint_loads_with_its_weights_unchanged(compose_cfg):
    """Bug: a checkpoint written before the restructuring failed to load ("Missing key(s):
    strategy.encoder..."): the pythae anchor's 2,000-epoch run needed an old checkout to continue."""
    from vibench.run import prepare

    module = prepare(compose_cfg("logger=none", "images=false")).module
    current = module.state_dict()
    assert any(k.startswith("strategy.encoder.") for k in current) and "model.prior_module.loc" in current

    fresh = prepare(compose_cfg("logger=none", "images=false", "seed=1")).module
    checkpoint = {"state_dict": _legacy(current)}
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])  # strict: every key placed, none left over
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, current[key]), key


def test_an_old_key_with_no_new_place_stays_for_the_strict_load_to_name():
    from vibench.legacy_keys import renamed

    wanted = {"strategy.encoder.net.0.weight", "model.prior_module.loc"}
    out = renamed({"guide.net.0.weight": 1, "guide.loc": 2, "model.prior_loc": 3, "score_baseline": 4, "objective.baseline": 5}, wanted)
    assert out == {"strategy.encoder.net.0.weight": 1, "guide.loc": 2, "model.prior_module.loc": 3, "objective.baseline": 5}
