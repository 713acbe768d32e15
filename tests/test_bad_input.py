"""Bad input is refused before anything trains: a clear message, exit code 2, no record, no checkpoint.

Each case goes through the real command-line entry point (``vibench.__main__.cli``), in process.
"""

from __future__ import annotations

import sys

import pytest

from vibench.__main__ import cli


def invoke(monkeypatch, tmp_path, *args: str, results_dir=None) -> int:
    results_dir = results_dir or tmp_path / "runs"
    monkeypatch.setattr(sys, "argv", ["vibench", *args, "logger=none", f"hydra.run.dir={tmp_path / 'out'}", f"results_dir={results_dir}", f"data.cache={tmp_path / 'cache'}"])
    with pytest.raises(SystemExit) as e:
        cli()
    return e.value.code


def corrupt_mnist(tmp_path, data_dir, text: str):
    folder = tmp_path / "data" / "binarized_mnist"
    folder.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (folder / f"binarized_mnist_{split}.amat").symlink_to(data_dir / "binarized_mnist" / f"binarized_mnist_{split}.amat")
    (folder / "binarized_mnist_valid.amat").unlink()
    (folder / "binarized_mnist_valid.amat").write_text(text)
    return tmp_path / "data"


CASES = [
    # wrong types
    (["latent=abc"], "latent='abc' is not valid: latent must be an integer >= 1"),
    (["mc_samples=1.5"], "mc_samples must be an integer >= 1"),
    (["analytic_kl=maybe"], "analytic_kl must be true or false"),
    (["optimizer.lr=fast"], "optimizer.lr must be a number > 0"),
    (["seed=-1"], "seed must be an integer >= 0"),
    # out of range
    (["latent=0"], "latent must be an integer >= 1"),
    (["iw_samples=0"], "iw_samples must be an integer >= 1"),
    (["annealing=constant", "annealing.fn.beta=-0.5"], "annealing.fn.beta must be a number >= 0"),
    (["annealing=cyclical", "annealing.fn.ratio=2"], "annealing.fn.ratio must be a number in [0, 1]"),
    (["annealing=linear", "annealing.per=minutes"], "annealing.per must be steps or epochs"),
    (["objective=iwae", "annealing=linear"], "KL annealing does not apply: use annealing=none"),
    (["eval.chunk_mib=0"], "eval.chunk_mib must be a number > 0"),
    (["optimizer.lr=0"], "optimizer.lr must be a number > 0"),
    (["inference=svi", "inference.strategy.inner_optimizer.lr=-1"], "inference.strategy.inner_optimizer.lr=-1 is not valid: a learning rate must be a number > 0"),
    (["posterior=planar", "posterior.layers=0"], "posterior.layers must be an integer >= 1"),
    (["dataset.test_subset=0"], "dataset.test_subset must be null or an integer >= 1"),
    (["model.output_bias=mean"], "model.output_bias must be null or train_mean"),
    (["dataset.fixed_order=yes"], "dataset.fixed_order must be null or true or false"),
    (["scheduler=burda", "scheduler.lr_lambda.rounded=1"], "scheduler.lr_lambda.rounded must be null or true or false"),
    (["optimizer=adam_iwae_code", "optimizer.loss_scale=0"], "optimizer.loss_scale must be a number > 0"),
    (["optimizer=adam_iwae_code", "optimizer.initial_second_moment=-1"], "optimizer.initial_second_moment must be a number >= 0"),
    (["trainer.max_epochs=-5"], "trainer.max_epochs must be an integer >= -1"),
    # misspelled and +-prefixed unknown keys
    (["laten=5"], "Could not override 'laten'"),
    (["+laten=5"], "'laten' is not a vibench setting"),
    (["+model.decoder.hiden=[10]"], "model.decoder.hiden is not a setting of vibench.networks.Decoder. Did you mean 'hidden'?"),
    (["+trainer.max_epoch=3"], "trainer.max_epoch is not a setting of lightning.pytorch.Trainer. Did you mean 'max_epochs'?"),
    # unknown names
    (["dataset=cifar"], "Could not find 'dataset/cifar'"),
    (["+experiment=aevb_cifar"], "Could not find 'experiment/aevb_cifar'"),
    (["optimizer=rmsprop"], "Could not find 'optimizer/rmsprop'"),
    # paths
    (["resume=/nonexistent/last.ckpt"], "resume=/nonexistent/last.ckpt: no checkpoint at"),
    (["gap.enabled=true", "gap.checkpoint=/nonexistent.ckpt"], "gap.checkpoint=/nonexistent.ckpt does not exist"),
    (["gap.enabled=true", "inference=svi"], "Use inference=vae"),
    (["dataset=binarized_mnist", "dataset.source.download=false", "data.root=/nonexistent"], "binarized_mnist_train.amat"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_refused_before_training(monkeypatch, tmp_path, capsys, args, message):
    assert invoke(monkeypatch, tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.glob("runs/*.json")) and not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.parametrize("text, message", [("0 1 0\n", "is corrupt or not the canonical file"), ("", "is corrupt or not the canonical file")], ids=["corrupt", "truncated"])
def test_corrupt_and_truncated_data_refused(monkeypatch, tmp_path, capsys, data_dir, text, message):
    root = corrupt_mnist(tmp_path, data_dir, text)
    assert invoke(monkeypatch, tmp_path, "dataset=binarized_mnist", f"data.root={root}", "dataset.source.download=false") == 2
    err = capsys.readouterr().err
    assert message in err and "binarized_mnist_valid.amat" in err and "download it again" in err
    assert not list(tmp_path.glob("runs/*.json"))


def test_wrong_data_for_the_dataset_refused(monkeypatch, tmp_path, capsys):
    # linear-Gaussian data (real-valued) under a Bernoulli likelihood
    assert invoke(monkeypatch, tmp_path, "dataset=linear_gaussian", "dataset.likelihood=bernoulli") == 2
    assert "must hold only 0 and 1 for a Bernoulli likelihood" in capsys.readouterr().err


def test_unwritable_results_dir_refused(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert invoke(monkeypatch, tmp_path, results_dir=blocker / "runs") == 2
    assert "is not writable" in capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_refused_trainer_leaves_no_wandb_run_behind(monkeypatch, tmp_path, capsys):
    """The trainer is built (and refuses an accelerator this machine lacks) before W&B starts:
    no offline W&B run and no record are left behind."""
    monkeypatch.setattr(sys, "argv", ["vibench", "trainer.accelerator=gpu", "logger=wandb", f"hydra.run.dir={tmp_path / 'out'}", f"results_dir={tmp_path / 'runs'}", f"data.cache={tmp_path / 'cache'}"])
    with pytest.raises(SystemExit) as e:
        cli()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "could not build trainer" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "wandb").exists() and not list(tmp_path.glob("runs/*.json"))
