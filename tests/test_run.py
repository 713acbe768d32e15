"""End to end: run() on real configs writes complete records with consistent numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vibench.methods import VariationalInference
from vibench.records import read_record
from vibench.run import run

METRICS = ("test/elbo", "test/iw_ll", "test/kl", "test/recon", "test/iw_ll_stderr", "test/active_units", "val/elbo")


def only_record(folder):
    files = list(folder.glob("*.json"))
    assert len(files) == 1, files
    return read_record(files[0])


def test_run_digits_writes_a_complete_record(compose_cfg, tmp_path):
    cfg = compose_cfg("trainer.max_epochs=2", "iw_samples=200", "logger=csv")
    iw = run(cfg)
    rec = only_record(tmp_path / "runs")
    assert rec["status"] == "completed" and rec["method"] == "aevb" and rec["iw_samples"] == 200
    assert rec["dataset"] == {"name": "digits", "variant": "digits_dynamic", "n_train": 1297, "n_val": 250, "n_test": 250}
    for key in METRICS:
        assert key in rec["metrics"], key
    m = rec["metrics"]
    assert iw == m["test/iw_ll"]
    assert m["test/elbo"] <= m["test/iw_ll"] < 0
    assert m["test/elbo"] == pytest.approx(m["test/recon"] - m["test/kl"])
    assert rec["timing"]["train_s"] > 0 and rec["timing"]["test_s"] > 0 and rec["timing"]["train_examples"] == 2 * 1297
    assert rec["config"]["latent"] == 10 and rec["versions"]["torch"] and "commit" in rec["git"]
    assert rec["device"]["type"] == "cpu" and rec["epochs"] == 2
    assert (tmp_path / "out" / "images" / "test_reconstructions.png").is_file()
    assert (tmp_path / "out" / "checkpoints" / "last.ckpt").is_file()


def test_git_state_names_the_changed_files_of_a_dirty_checkout(tmp_path, monkeypatch):
    """A record's ``git`` says which tracked files differ from the commit (a peek of 2026-11-24 was
    dirty with only ``curves.py`` changed, and its record could not say so); an untracked file does
    not count; a folder that is no checkout gives None."""
    import vibench.records as records

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True)

    git("init", "-q")
    for name in ("README.md", "run.py", "ünï.py"):
        (tmp_path / name).write_text("a\n")
    git("add", ".")
    git("commit", "-qm", "x")
    monkeypatch.setattr(records, "REPO", tmp_path)
    sha = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "new.py").write_text("untracked\n")
    assert records.git_state() == {"commit": sha, "dirty": False, "changed": []}
    (tmp_path / "README.md").write_text("b\n")  # the first line of git's status starts with a space: ' M README.md'
    (tmp_path / "ünï.py").write_text("b\n")
    assert records.git_state() == {"commit": sha, "dirty": True, "changed": ["README.md", "ünï.py"]}
    monkeypatch.setattr(records, "REPO", tmp_path / "new.py")
    assert records.git_state() == {"commit": None, "dirty": None, "changed": None}


def test_linear_gaussian_reports_exact_log_likelihood_above_the_bounds(compose_cfg, tmp_path):
    cfg = compose_cfg("+experiment=linear_gaussian", "trainer.max_epochs=15", "iw_samples=2000", "logger=none")
    run(cfg)
    m = only_record(tmp_path / "runs")["metrics"]
    # the IW bound approaches the fitted model's exact log p(x) from below (its estimate may exceed
    # it by Monte Carlo noise, here of order 1e-3 nats with q near the posterior); the ELBO sits lower
    assert m["test/elbo"] <= m["test/iw_ll"] <= m["test/exact_ll"] + 0.01
    assert m["test/exact_ll"] - m["test/iw_ll"] < 0.05
    # a fitted model is close to the data-generating density
    assert abs(m["test/exact_ll"] - m["test/true_ll"]) < 0.3


def test_failure_mid_run_leaves_a_failed_record(compose_cfg, tmp_path, monkeypatch):
    def broken(self, batch, batch_idx):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(VariationalInference, "training_step", broken)
    with pytest.raises(RuntimeError, match="injected"):
        run(compose_cfg("trainer.max_epochs=1", "logger=none"))
    rec = only_record(tmp_path / "runs")
    assert rec["status"] == "failed" and "injected failure" in rec["error"] and "metrics" not in rec


def test_multirun_gives_one_wandb_run_per_job_in_one_group(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "vibench", "-m", "latent=2,3", "trainer.max_epochs=1", "iw_samples=50",
         f"hydra.sweep.dir={tmp_path / 'sweep'}", f"results_dir={tmp_path / 'runs'}"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    recs = sorted((json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")), key=lambda r: r["config"]["latent"])
    assert [r["config"]["latent"] for r in recs] == [2, 3]
    groups = {r["tracking"]["group"] for r in recs}
    ids = {r["tracking"]["id"] for r in recs}
    assert len(groups) == 1 and None not in groups and len(ids) == 2
    for job, rec in enumerate(recs):
        runs = list((tmp_path / "sweep" / str(job) / "wandb").glob("offline-run-*"))
        assert len(runs) == 1 and rec["tracking"]["id"] in runs[0].name
        assert rec["tracking"]["mode"] == "offline"
    # latent = 2 also logs the 2-D manifold
    assert (tmp_path / "sweep" / "0" / "images" / "test_manifold.png").is_file()
    # output to a pipe, not a terminal: plain progress lines in the output and in each job's log, no bar
    assert r.stdout.count("epoch 1/1 done: train ELBO") == 2 and "it/s" not in r.stdout + r.stderr
    assert "epoch 1/1 done: train ELBO" in (tmp_path / "sweep" / "1" / "__main__.log").read_text()


def test_failure_after_the_test_keeps_the_test_metrics(compose_cfg, tmp_path, monkeypatch):
    """The analyses run as callbacks at the test's end: one that crashes fails the run, and the
    record (status failed) still holds the test's metrics, computed before it."""
    import vibench.callbacks

    def broken_gap(*args, **kwargs):
        raise RuntimeError("gap analysis crashed")

    monkeypatch.setattr(vibench.callbacks, "decompose_gaps", broken_gap)
    with pytest.raises(RuntimeError, match="gap analysis crashed"):
        run(compose_cfg("trainer.max_epochs=1", "iw_samples=20", "gap.enabled=true", "logger=none", "images=false"))
    rec = only_record(tmp_path / "runs")
    assert rec["status"] == "failed" and "gap analysis crashed" in rec["error"]
    assert rec["metrics"]["test/iw_ll"] < 0 and "test/elbo" in rec["metrics"]  # nothing already computed is lost


def test_steps_per_call_changes_the_speed_not_the_numbers(compose_cfg, tmp_path):
    """Ten minibatches per Lightning step (the default) train exactly as one per step: same
    batches, noise, KL weights and optimizer steps, so the same record to the last digit."""
    metrics = {}
    for spc in (1, 10):
        cfg = compose_cfg(f"train.steps_per_call={spc}", "annealing=linear", "annealing.fn.warmup=1", "trainer.max_epochs=2", "iw_samples=50", "logger=none", "images=false",
                          f"results_dir={tmp_path}/runs{spc}", f"output_dir={tmp_path}/out{spc}", "dataset.test_subset=50")
        run(cfg)
        rec = only_record(tmp_path / f"runs{spc}")
        assert rec["global_step"] == 2 * 13 and rec["timing"]["train_examples"] == 2 * 1297  # digits: 13 minibatches per epoch
        metrics[spc] = rec["metrics"]
    for key in ("test/elbo", "test/iw_ll", "val/elbo"):
        assert metrics[1][key] == metrics[10][key], key


def test_max_steps_is_not_overshot_by_grouped_steps(compose_cfg, tmp_path):
    run(compose_cfg("train.steps_per_call=10", "trainer.max_steps=7", "iw_samples=10", "logger=none", "images=false", "dataset.test_subset=20"))
    assert only_record(tmp_path / "runs")["global_step"] == 7


def test_csv_log_has_one_step_axis_and_svi_val_is_comparable_with_test_elbo_inner(compose_cfg, tmp_path):
    """Training windows, epoch means, validation and test rows share one step axis (optimizer steps),
    and SVI's val/elbo (q_i after inner_steps steps) is matched by test/elbo_inner, not test/elbo."""
    import csv

    run(compose_cfg("inference=svi", "trainer.max_epochs=3", "iw_samples=50", "logger=csv", "images=false"))
    rec = only_record(tmp_path / "runs")
    with open(next((tmp_path / "out" / "csv").rglob("metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    steps_per_epoch = 13  # 1297 digits, batch 100
    val = [(int(r["epoch"]), int(r["step"])) for r in rows if r.get("val/elbo")]
    assert val == [(e, steps_per_epoch * (e + 1) - 1) for e in range(3)]  # the last step of each epoch
    train = [int(r["step"]) for r in rows if r.get("train/elbo")]
    assert train == [9, 19, 29]  # windows of trainer.log_every_n_steps=10 steps, at their last step
    assert [(int(r["epoch"]), int(r["step"])) for r in rows if r.get("train/elbo_epoch")] == val  # epoch means beside validation
    m = rec["metrics"]
    assert m["test/heldout_converged"] > 0.9 and 0 < m["test/heldout_fit_steps"] < 1000
    # the full held-out fit beats the 20-step refinement by far more than val and test differ
    assert m["test/elbo"] - m["test/elbo_inner"] > 2.0
    assert abs(m["test/elbo_inner"] - m["val/elbo"]) < 0.5 * (m["test/elbo"] - m["test/elbo_inner"])


def test_evaluate_a_checkpoint_without_training(compose_cfg, tmp_path):
    run(compose_cfg("trainer.max_epochs=2", "iw_samples=500", "logger=none", "images=false"))
    first = only_record(tmp_path / "runs")
    again = compose_cfg("trainer.max_epochs=2", "iw_samples=500", "logger=none", "images=false", f"evaluate={tmp_path / 'out'}", f"output_dir={tmp_path / 'eval'}", f"results_dir={tmp_path / 'runs2'}")
    run(again)
    rec = only_record(tmp_path / "runs2")
    assert rec["evaluated_checkpoint"]["select"] == "given" and rec["epochs"] == 2 and rec["timing"]["train_s"] == 0
    # a re-test is of the trained run's configuration group (vibench.check averages seeds by it)
    assert rec["config_group"] == first["config_group"]
    # the same model, tested again with fresh samples: equal up to Monte Carlo error
    assert rec["metrics"]["test/iw_ll"] == pytest.approx(first["metrics"]["test/iw_ll"], abs=0.05)


def test_evaluate_refuses_settings_of_another_model_and_allows_how_it_is_tested(compose_cfg, tmp_path):
    """evaluate= once loaded any checkpoint whose weights fit, under whatever settings the command
    gave: a code-variant IWAE checkpoint tested under the preset's settings would get a record
    calling it the preset, and vibench.check would compare it as one. Now a setting that describes the model
    (optimizer, seed, training subset) must be the checkpoint's, refused before testing with the
    keys named; how it is tested (K, test subset and its seed, the training length) may differ."""
    from vibench.errors import ConfigError

    run(compose_cfg("trainer.max_epochs=1", "iw_samples=20", "logger=none", "images=false", "dataset.train_subset=600", "seed=3"))
    given = (f"evaluate={tmp_path / 'out'}", f"output_dir={tmp_path / 'eval'}", f"results_dir={tmp_path / 'runs2'}", "logger=none", "images=false", "dataset.train_subset=600")
    with pytest.raises(ConfigError, match=r"optimizer.lr: 0.001 -> 0.002.*trained -> this command"):
        run(compose_cfg(*given, "seed=3", "optimizer.lr=0.002"))
    with pytest.raises(ConfigError, match=r"seed: 3 -> 0"):
        run(compose_cfg(*given))
    with pytest.raises(ConfigError, match=r"dataset.subset_seed: 3 -> 5"):  # it drew the 600 training images
        run(compose_cfg(*given, "seed=3", "dataset.subset_seed=5"))
    assert not (tmp_path / "runs2").exists() or not list((tmp_path / "runs2").glob("*.json"))  # refused before testing
    run(compose_cfg(*given, "seed=3", "iw_samples=50", "dataset.test_subset=40", "trainer.max_epochs=30", "eval.repeats=2"))
    rec = only_record(tmp_path / "runs2")
    assert rec["evaluated_checkpoint"]["select"] == "given" and rec["epochs"] == 1 and rec["metrics"]["test/n"] == 40


def test_evaluate_allows_another_test_subset_seed_when_no_training_subset_was_drawn(compose_cfg, tmp_path):
    run(compose_cfg("trainer.max_epochs=1", "iw_samples=20", "logger=none", "images=false"))
    run(compose_cfg(f"evaluate={tmp_path / 'out'}", f"output_dir={tmp_path / 'eval'}", f"results_dir={tmp_path / 'runs2'}", "logger=none", "images=false",
                    "iw_samples=20", "dataset.test_subset=30", "dataset.subset_seed=7"))
    assert only_record(tmp_path / "runs2")["metrics"]["test/n"] == 30


def test_every_record_has_a_per_point_sidecar_naming_its_test_points(compose_cfg, tmp_path):
    """The sidecar holds each test point once, by its row in the full test split, with the values
    whose means the record reports; a random test subset names its own rows and hashes differently."""
    import numpy as np

    from vibench import points

    common = ("trainer.max_epochs=1", "iw_samples=20", "logger=none", "images=false", "eval.repeats=2")
    run(compose_cfg(*common, f"results_dir={tmp_path / 'full'}"))
    rec = only_record(tmp_path / "full")
    rec["_path"] = str(next((tmp_path / "full").glob("*.json")))
    values = points.read(rec)
    assert (tmp_path / "out" / rec["per_point"]["file"]).is_file()  # also beside the job folder's record.json
    assert np.array_equal(values["index"], np.arange(250)) and rec["per_point"]["n"] == 250
    for key in ("iw_ll", "elbo", "kl", "recon"):
        assert values[key].mean() == pytest.approx(rec["metrics"][f"test/{key}"], abs=1e-9), key
    assert np.sqrt(values["iw_ll_mc_var"].sum()) / 250 == pytest.approx(rec["metrics"]["test/iw_ll_mc_stderr"], rel=1e-9)

    run(compose_cfg(*common, "dataset.test_subset=50", "latent=3", f"results_dir={tmp_path / 'subset'}", f"output_dir={tmp_path / 'out2'}"))
    sub = only_record(tmp_path / "subset")
    sub["_path"] = str(next((tmp_path / "subset").glob("*.json")))
    rows = points.read(sub)["index"]
    assert len(np.unique(rows)) == 50 and rows.max() < 250 and not np.array_equal(rows, np.arange(50))
    assert sub["per_point"]["test_index_hash"] != rec["per_point"]["test_index_hash"]
