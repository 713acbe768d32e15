"""Configuration: composition, presets, and refusals before anything is trained."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from vibench.__main__ import flags_first
from vibench.config_checks import TOP_LEVEL, check_config
from vibench.errors import ConfigError


def test_top_level_keys_are_known(compose_cfg):
    assert set(compose_cfg().keys()) == TOP_LEVEL


def test_default_config_passes_checks(compose_cfg):
    check_config(compose_cfg())


def test_aevb_mnist_preset_pins_kingma_welling_setting(compose_cfg):
    cfg = compose_cfg("+experiment=aevb_mnist")
    assert cfg.dataset.name == "binarized_mnist" and cfg.dataset.batch_size == 100
    assert list(cfg.model.decoder.hidden) == [500] and cfg.model.decoder.activation == "tanh"
    assert list(cfg.inference.strategy.encoder.hidden) == [500] and cfg.mc_samples == 1
    assert cfg.iw_samples == 5000 and cfg.optimizer._target_ == "torch.optim.Adam"
    # command-line overrides win over the preset
    cfg = compose_cfg("+experiment=aevb_mnist", "latent=5", "iw_samples=100")
    assert cfg.latent == 5 and cfg.iw_samples == 100 and cfg.inference.strategy.encoder.latent == 5


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("latent=abc", "latent='abc' is not valid: latent must be an integer >= 1"),
        ("latent=0", "latent must be an integer >= 1"),
        ("latent=2.5", "latent must be an integer >= 1"),
        ("mc_samples=0", "mc_samples must be an integer >= 1"),
        ("iw_samples=-3", "iw_samples must be an integer >= 1"),
        ("annealing=constant annealing.fn.beta=-1", "annealing.fn.beta must be a number >= 0"),
        ("annealing=cyclical annealing.fn.ratio=1.5", "annealing.fn.ratio must be a number in [0, 1]"),
        ("objective=iwae objective.samples=0", "objective.samples must be an integer >= 1"),
        ("optimizer.lr=0", "optimizer.lr must be a number > 0"),
        ("eval.chunk_mib=0", "eval.chunk_mib must be a number > 0"),
        ("analytic_kl=maybe", "analytic_kl must be true or false"),
        ("dataset.test_subset=0", "dataset.test_subset must be null or an integer >= 1"),
        ("+laten=5", "'laten' is not a vibench setting (was it added with +laten=...?). Did you mean 'latent'?"),
        ("+model.decoder.hiden=[10]", "model.decoder.hiden is not a setting of vibench.networks.Decoder. Did you mean 'hidden'?"),
        ("+inference.strategy.encoder.foo=1", "inference.strategy.encoder.foo is not a setting of vibench.networks.Encoder"),
        ("optimizer._target_=torch.optim.Adamm", "optimizer._target_='torch.optim.Adamm' cannot be imported"),
        # the analyses' typed settings: what each field allows comes from the dataclass
        ("gap.n_points=0", "gap.n_points=0 is not valid: gap.n_points must be an integer >= 1"),
        ("gap.init=zero", "gap.init must be prior or encoder"),
        ("gap.patience=-1", "gap.patience must be an integer >= 0"),
        ("ais.target_accept=1.5", "ais.target_accept must be a number in [0, 1]"),
        ("ais.step_size=0", "ais.step_size must be a number > 0"),
        ("ais.enabled=yes", "ais.enabled must be true or false"),
        ("+gap.n_pointz=5", "gap.n_pointz is not a setting of gap. Did you mean 'n_points'?"),
        ("+ais.chain=4", "ais.chain is not a setting of ais. Did you mean 'chains'?"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(compose_cfg, override, fragment):
    with pytest.raises(ConfigError) as e:
        check_config(compose_cfg(*override.split()))
    assert fragment in str(e.value)


def test_every_typed_setting_is_checked():
    """Each field of the analyses' settings is checked before the run (all but the gap's checkpoint
    path, which run() checks for existence), and with the same words as the other scalars."""
    from vibench.analyses import AISSettings, GapSettings
    from vibench.config_checks import SCALARS

    for prefix, settings in (("gap", GapSettings), ("ais", AISSettings)):
        unchecked = {f.name for f in dataclasses.fields(settings)} - {k.split(".", 1)[1] for k in SCALARS if k.startswith(prefix + ".")}
        assert unchecked == ({"checkpoint"} if prefix == "gap" else set())
    ok, desc = SCALARS["gap.n_points"]
    assert desc == SCALARS["latent"][1] == "an integer >= 1" and ok(1) and not ok(0) and not ok(True) and not ok(1.5)


def test_flags_first_moves_hydra_flags_before_overrides():
    assert flags_first(["+experiment=aevb_mnist", "-m", "latent=2,5"]) == ["-m", "+experiment=aevb_mnist", "latent=2,5"]
    # --cfg and --package take a value: `latent=3 --cfg job` once became `--cfg latent=3 job`,
    # which Hydra refused ("argument --cfg/-c: invalid choice: 'latent=3'")
    assert flags_first(["a=1", "--cfg", "job", "b=2"]) == ["--cfg", "job", "a=1", "b=2"]
    assert flags_first(["a=1", "-c", "all", "-p", "model", "b=2"]) == ["-c", "all", "-p", "model", "a=1", "b=2"]
    assert flags_first(["a=1", "-cn", "other", "b=2"]) == ["-cn", "other", "a=1", "b=2"]
    assert flags_first(["a=1", "--info", "defaults"]) == ["--info", "defaults", "a=1"]
    assert flags_first(["a=1", "--multirun"]) == ["--multirun", "a=1"]


def cli(*args: str, tmp_path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "vibench", *args, f"hydra.run.dir={tmp_path / 'out'}", f"results_dir={tmp_path / 'runs'}", "logger=none"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )


def test_cli_prints_the_config_with_cfg_after_the_overrides(tmp_path):
    r = cli("latent=7", "--cfg", "job", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("latent: 7\n") and not (tmp_path / "runs").exists()


def test_cli_bad_value_exits_2_without_traceback(tmp_path):
    r = cli("latent=abc", tmp_path=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "latent='abc' is not valid" in r.stderr and "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*.json"))


def test_cli_missing_data_exits_2_with_the_fix(tmp_path):
    r = cli("dataset=binarized_mnist", "dataset.source.download=false", f"data.root={tmp_path / 'nowhere'}", tmp_path=tmp_path)
    assert r.returncode == 2
    assert "binarized_mnist_train.amat" in r.stderr and "VIBENCH_DATA_DIR" in r.stderr and "Traceback" not in r.stderr
    assert not list((tmp_path / "runs").glob("*.json"))


def test_cli_corrupt_data_exits_2(tmp_path, data_dir):
    bad = tmp_path / "data" / "binarized_mnist"
    bad.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        src = data_dir / "binarized_mnist" / f"binarized_mnist_{split}.amat"
        (bad / src.name).symlink_to(src)
    (bad / "binarized_mnist_test.amat").unlink()
    (bad / "binarized_mnist_test.amat").write_text("0 1\n")  # truncated / corrupt
    r = cli("dataset=binarized_mnist", f"data.root={tmp_path / 'data'}", f"data.cache={tmp_path / 'cache'}", tmp_path=tmp_path)
    assert r.returncode == 2
    assert "binarized_mnist_test.amat is corrupt" in r.stderr and "Delete it and download it again" in r.stderr


def test_cli_unwritable_results_dir_exits_2(tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("")
        target = blocker / "runs"  # a folder inside a regular file cannot be created, even by root
    else:
        target = tmp_path / "ro"
        target.mkdir(mode=0o500)
    r = subprocess.run([sys.executable, "-m", "vibench", f"results_dir={target}", f"hydra.run.dir={tmp_path / 'out'}", "logger=none"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "is not writable" in r.stderr


def test_help_describes_vibench():
    r = subprocess.run([sys.executable, "-m", "vibench", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert r.stdout.startswith("vibench: benchmark and track variational inference") and "powered by Hydra" not in r.stdout
    assert "experiment: aevb_mnist" in r.stdout and "scheduler: burda, multistep, none" in r.stdout
    assert "python -m vibench +experiment=aevb_mnist -m latent=2,5,10,20" in r.stdout


def test_each_tools_help_opens_with_a_whole_sentence():
    """Bug: ``python -m vibench.curves --help`` described itself as "...: a run's", the docstring's
    first line cut mid-sentence. Each tool's description is its docstring's first line: a sentence."""
    import importlib

    for tool in ("bench", "check", "compare", "curves", "report"):
        first = importlib.import_module(f"vibench.{tool}").__doc__.splitlines()[0]
        assert first.startswith(f"``python -m vibench.{tool}") and first.rstrip().endswith((".", "?")), (tool, first)
