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


def test_progress_bar_shows_no_logger_version(tmp_path):
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel
    from lightning.pytorch.loggers import CSVLogger

    from vibench.report_console import ProgressBar

    bar = ProgressBar()
    trainer = L.Trainer(max_steps=1, logger=CSVLogger(tmp_path), callbacks=[bar], limit_val_batches=0, enable_model_summary=False, default_root_dir=tmp_path)
    model = BoringModel()
    trainer.fit(model)
    metrics = bar.get_metrics(trainer, model)
    assert "v_num" not in metrics and "v_num" in L.pytorch.callbacks.RichProgressBar.get_metrics(bar, trainer, model)


def test_evaluate_a_checkpoint_without_training(compose_cfg, tmp_path):
    run(compose_cfg("trainer.max_epochs=2", "iw_samples=500", "logger=none", "images=false"))
    first = only_record(tmp_path / "runs")
    again = compose_cfg("trainer.max_epochs=2", "iw_samples=500", "logger=none", "images=false", f"evaluate={tmp_path / 'out'}", f"output_dir={tmp_path / 'eval'}", f"results_dir={tmp_path / 'runs2'}")
    run(again)
    rec = only_record(tmp_path / "runs2")
    assert rec["evaluated_checkpoint"]["select"] == "given" and rec["epochs"] == 2 and rec["timing"]["train_s"] == 0
    # the same model, tested again with fresh samples: equal up to Monte Carlo error
    assert rec["metrics"]["test/iw_ll"] == pytest.approx(first["metrics"]["test/iw_ll"], abs=0.05)


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



def test_progress_bar_tells_the_time_left_in_the_run(tmp_path, monkeypatch):
    """'run left': at the rate since the segment began, the time to max_epochs. Half of epoch 1 of 4
    done (3/8 of the run), an eighth of the run done in 100 s since 1/4: 5/8 left take 500 s."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    from vibench import report_console
    from vibench.report_console import ProgressBar, duration, run_fraction

    seen = {}

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 3:
                seen["fraction"] = run_fraction(trainer)
                bar._segment_start = (0.0, 0.25)
                monkeypatch.setattr(report_console.time, "monotonic", lambda: 100.0)
                seen["metrics"] = bar.get_metrics(trainer, pl_module)
                monkeypatch.undo()

    bar = ProgressBar()
    trainer = L.Trainer(max_epochs=4, limit_train_batches=8, limit_val_batches=0, logger=False, callbacks=[bar, Probe()], enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(BoringModel())
    assert seen["fraction"] == pytest.approx(1.5 / 4)
    assert seen["metrics"]["run left"] == "8m20s"
    assert [duration(s) for s in (45, 800, 7500, 3 * 86400 + 4 * 3600)] == ["45s", "13m20s", "2h05m", "3d04h"]


def progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "vibench.progress"]


def test_a_run_logged_to_a_file_prints_plain_progress_lines(compose_cfg, tmp_path, caplog):
    """Output to a file (pytest captures stdout: not a terminal) gets plain progress lines instead of
    a live bar that shows nothing until the end: one per epoch at progress_every_s=0, whose val ELBO
    is the record's; at most every progress_every_s otherwise (here: the start, the first epoch and the end only)."""
    import logging

    caplog.set_level(logging.INFO, logger="vibench.progress")
    run(compose_cfg("trainer.max_epochs=3", "iw_samples=20", "logger=none", "images=false", "train.progress_every_s=0", "eval.batch_size=100"))
    lines = progress_lines(caplog)
    assert lines[0].startswith("training from epoch 0/3;")
    assert [line.split(" done")[0] for line in lines[1:4]] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    # the test's 250 points in batches of 100
    assert [line.split(";")[0] for line in lines[4:8]] == ["testing: 3 batches, K = 20 importance samples a point", "testing: batch 1/3", "testing: batch 2/3", "testing: batch 3/3"]
    assert lines[8].startswith("testing done in") and len(lines) == 9
    lines = lines[:4]
    assert "train ELBO" in lines[1] and "lr 1.0e-03" in lines[1]
    rec = only_record(tmp_path / "runs")
    assert f"val ELBO {rec['metrics']['val/elbo']:.2f}" in lines[-1]

    caplog.clear()
    run(compose_cfg("trainer.max_epochs=3", "iw_samples=20", "logger=none", "images=false", "train.progress_every_s=3600", f"output_dir={tmp_path / 'out2'}"))
    assert [line.split(";")[0].split(" done")[0] for line in progress_lines(caplog)] == ["training from epoch 0/3", "epoch 1/3", "epoch 3/3", "testing: 1 batch, K = 20 importance samples a point", "testing"]


def test_plain_progress_of_a_resumed_run_starts_at_its_checkpoint(compose_cfg, tmp_path, caplog):
    """A resumed segment says where it resumed and reports only the epochs it trains (it once
    reported the checkpoint's epoch as 'done: no metrics yet'); a stopped-early end says so."""
    import logging
    import warnings

    caplog.set_level(logging.INFO, logger="vibench.progress")
    common = ("iw_samples=20", "logger=none", "images=false", "train.progress_every_s=0")
    run(compose_cfg("trainer.max_epochs=2", *common))
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(compose_cfg("trainer.max_epochs=4", f"resume={tmp_path / 'out'}", *common))
    # nor Lightning's warning that the checkpoint folder is not empty: resuming into it is the point
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]
    lines = progress_lines(caplog)
    assert lines[0].startswith("resumed at epoch 2/4")
    assert [line.split(" done")[0] for line in lines[1:] if line.startswith("epoch")] == ["epoch 3/4", "epoch 4/4"]
    assert all("no metrics yet" not in line for line in lines)

    caplog.clear()
    run(compose_cfg("trainer.max_epochs=200", "early_stopping.patience=1", "checkpoint.select=best", *common, f"output_dir={tmp_path / 'out3'}"))
    last = [line for line in progress_lines(caplog) if line.startswith("epoch")][-1]
    assert "stopped early: no better val ELBO in 1 epochs" in last and "best val ELBO" in last


def test_plain_progress_reports_from_one_ddp_rank_only(caplog):
    """Under DDP every rank runs the callbacks: the ranks other than 0 write no lines."""
    import logging
    from types import SimpleNamespace

    from vibench.report_console import PlainProgress

    caplog.set_level(logging.INFO, logger="vibench.progress")
    for rank in (0, 1):
        trainer = SimpleNamespace(is_global_zero=rank == 0, current_epoch=0, global_step=0, max_epochs=2, max_steps=-1, num_training_batches=4,
                                  fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(current=SimpleNamespace(processed=0)))),
                                  callback_metrics={"val/elbo": -90.0}, checkpoint_callbacks=[], early_stopping_callback=None)
        progress = PlainProgress(every_s=0)
        progress.on_train_start(trainer, None)
        trainer.current_epoch = 1
        progress.on_train_epoch_start(trainer, None)
        trainer.current_epoch = 2
        progress.on_train_end(trainer, None)
    assert [line.split(";")[0] for line in progress_lines(caplog)] == ["training from epoch 0/2", "epoch 1/2 done: val ELBO -90.00", "epoch 2/2 done: val ELBO -90.00"]


def test_busy_cpu_note_warns_when_threads_would_share_cores():
    """load + threads > cores (+0.5 slack for the load's noise) warns, naming the load and the fix; a
    1-thread run beside one busy core of two does not (the anchors' setting), nor a GPU run."""
    from vibench.timing import busy_cpu_note

    note = busy_cpu_note({"type": "cpu", "torch_threads": 2, "cpu_count": 2, "load_at_start": 1.0})
    assert note is not None and "about 1.0 of its 2 cores" in note and "2 torch threads" in note and "OMP_NUM_THREADS=1" in note
    assert busy_cpu_note({"type": "cpu", "torch_threads": 1, "cpu_count": 2, "load_at_start": 1.0}) is None
    assert busy_cpu_note({"type": "cpu", "torch_threads": 1, "cpu_count": 2, "load_at_start": 2.0}) is not None
    assert busy_cpu_note({"type": "cpu", "torch_threads": 2, "cpu_count": 2, "load_at_start": 0.1}) is None  # an idle machine
    assert busy_cpu_note({"type": "cuda:0", "torch_threads": 2, "cpu_count": 2, "load_at_start": 5.0}) is None
    assert busy_cpu_note({"type": "cpu", "torch_threads": 2, "cpu_count": 2, "load_at_start": None}) is None  # no getloadavg


def test_the_record_states_the_cpu_load_its_wall_clock_ran_under(compose_cfg, tmp_path):
    import os

    run(compose_cfg("trainer.max_epochs=1", "iw_samples=10", "logger=none", "images=false"))
    device = only_record(tmp_path / "runs")["device"]
    assert device["cpu_count"] == len(os.sched_getaffinity(0)) and 0 <= device["load_at_start"] < 64
