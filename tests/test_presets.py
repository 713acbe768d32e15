"""Every preset in conf/experiment/ composes, passes the checks made before training, and builds its
model and inference module (no data loaded, nothing trained): a typo in a preset that takes hours
to run is caught here, in seconds."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.conftest import REPO

PRESETS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def test_the_presets_are_found():
    assert {"aevb_mnist", "iwae_mnist", "pythae_vae_mnist", "vampprior_mnist"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_checks_and_builds(compose_cfg, preset):
    from vibench.config_checks import check_config
    from vibench.run import build

    cfg = compose_cfg(f"+experiment={preset}")
    check_config(cfg)
    model = build("model", cfg.model)
    scheduler = build("scheduler", cfg.scheduler) if cfg.scheduler is not None else None
    module = build("inference", cfg.inference, model=model, optimizer=build("optimizer", cfg.optimizer), scheduler=scheduler)
    assert sum(p.numel() for p in module.parameters()) > 0


def test_vampprior_preset_builds_the_papers_network(compose_cfg):
    from vibench.networks import GatedLinear
    from vibench.run import build

    cfg = compose_cfg("+experiment=vampprior_mnist")
    model = build("model", cfg.model)
    module = build("inference", cfg.inference, model=model, optimizer=build("optimizer", cfg.optimizer), scheduler=None)
    encoder = module.strategy.encoder
    assert [type(m) for m in encoder.net] == [GatedLinear, GatedLinear, type(encoder.net[-1])]
    assert (encoder.net[0].h.in_features, encoder.net[0].h.out_features, encoder.net[-1].out_features) == (784, 300, 80)
    assert (model.decoder.net[0].h.in_features, model.decoder.net[-1].out_features) == (40, 784)
    assert (encoder.family.logvar_min, encoder.family.logvar_max) == (-6.0, 2.0)
    assert type(model.prior_module).__name__ == "VampPrior"


def anchor_commands() -> list[str]:
    """The command column of the table in results/anchors.md (each `python -m vibench ...`)."""
    rows = [line.split("|") for line in (REPO / "results" / "anchors.md").read_text().splitlines() if line.startswith("| ")]
    return [c for row in rows if len(row) > 4 for c in re.findall(r"`(python -m vibench [^`]+)`", row[4])]


def first_job(command: str) -> list[str]:
    """The overrides of a command's first job: a multirun's swept ``key=a,b,c`` becomes ``key=a``."""
    args = shlex.split(command)[3:]
    sweep = "-m" in args
    return [a.split("=", 1)[0] + "=" + a.split("=", 1)[1].split(",")[0] if sweep and "," in a and "[" not in a else a for a in args if a != "-m"]


def test_the_anchor_table_has_its_commands():
    commands = anchor_commands()
    assert len(commands) >= 7 and all(c.startswith("python -m vibench +experiment=") for c in commands)
    assert first_job("python -m vibench +experiment=x 'm.h=[4,4]' -m k=1,5") == ["+experiment=x", "m.h=[4,4]", "k=1"]


def anchor_block_commands() -> list[str]:
    """The ``python -m vibench ...`` runs in results/anchors.md's bash blocks (resumes, timings, ablations)."""
    from tests.test_readme import readme_run_commands

    return readme_run_commands("results/anchors.md")


def test_the_anchor_notes_have_their_run_commands():
    commands = anchor_block_commands()
    assert len(commands) >= 7 and "python -m vibench +experiment=iwae_mnist_code objective.samples=1" in commands


@pytest.mark.parametrize("command", anchor_commands() + anchor_block_commands())
def test_anchor_command_composes_and_passes_the_checks(compose_cfg, command):
    # results/anchors.md's commands are run as written; a renamed key or preset must fail here,
    # not hours into a run or in a reader's terminal
    from vibench.config_checks import check_config

    check_config(compose_cfg(*first_job(command)))
