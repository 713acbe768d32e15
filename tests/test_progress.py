"""What a run tells while it runs: the progress bar on a terminal, plain progress lines in a log
file (training, resumed segments, the test, DDP ranks), and the CPU load its wall-clock ran under."""

from __future__ import annotations

import pytest

from tests.test_run import only_record
from vibench.run import run


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
    assert "train ELBO" in lines[1] and "lr 1.0e-03" in lines[1]
    rec = only_record(tmp_path / "runs")
    assert f"val ELBO {rec['metrics']['val/elbo']:.2f}" in lines[3]  # the last epoch's

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
    assert note is not None and "about 1.0 of its 2 cores" in note and "2 torch threads" in note and "OMP_NUM_THREADS=1" in note and "OMP_WAIT_POLICY=PASSIVE" in note
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
