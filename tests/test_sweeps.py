"""Sweep definitions compose into valid vibench configurations, offline."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import REPO
from vibench.__main__ import refuse_ddp_sweep
from vibench.config_checks import check_config

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))
GROUPS = {p.name for p in (REPO / "conf").iterdir() if p.is_dir()}


def test_required_grids_exist():
    names = {p.stem for p in SWEEPS}
    assert {"aevb_mnist_latent", "iwae_mnist_k"} <= names


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_composes_into_valid_configs(path: Path, compose_cfg):
    spec = yaml.safe_load(path.read_text())
    command = spec["command"]
    assert command[:4] == ["${env}", "${interpreter}", "-m", "vibench"] and command[-1] == "${args_no_hyphens}"
    assert spec["metric"]["name"] == "test/iw_ll" and spec["metric"]["goal"] == "maximize"
    fixed = [c for c in command[4:-1]]
    assert any(c.startswith("+experiment=") for c in fixed)
    keys = list(spec["parameters"])
    grid = list(itertools.product(*(spec["parameters"][k]["values"] for k in keys)))
    assert len(grid) >= 3
    for values in grid:
        overrides = [f"{k}={v}" for k, v in zip(keys, values)]
        cfg = compose_cfg(*fixed, *overrides)
        check_config(cfg)
        for k, v in zip(keys, values):
            if k not in GROUPS:  # a value, not a config-group choice: it must arrive as given
                assert OmegaConf.select(cfg, k) == v, (k, v)


def test_ddp_with_multirun_is_refused_up_front():
    assert "cannot be combined with -m" in refuse_ddp_sweep(["-m", "trainer=ddp", "latent=2,5"])
    assert "cannot be combined with -m" in refuse_ddp_sweep(["--multirun", "trainer.strategy=ddp_spawn"])
    assert refuse_ddp_sweep(["trainer=ddp"]) is None and refuse_ddp_sweep(["-m", "latent=2,5"]) is None
