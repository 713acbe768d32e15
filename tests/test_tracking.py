"""W&B: offline never touches the network; online without a key or a network fails fast and clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest


def run_online(tmp_path, **env_extra):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"HOME": str(home), "OMP_NUM_THREADS": "1", **env_extra})
    start = time.time()
    r = subprocess.run([sys.executable, "-m", "vibench", "logger.mode=online", f"hydra.run.dir={tmp_path / 'out'}", f"results_dir={tmp_path / 'runs'}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return r, time.time() - start


def test_online_without_an_api_key_fails_fast_with_what_to_do(tmp_path):
    r, seconds = run_online(tmp_path)
    assert r.returncode == 2 and seconds < 30
    assert "W&B could not start in online mode" in r.stderr and "wandb login" in r.stderr and "logger.mode=offline" in r.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*.json"))  # refused before training


def test_online_without_a_network_fails_within_30_seconds(tmp_path):
    # a key, but the server is a closed port on this machine: nothing leaves the loopback interface
    r, seconds = run_online(tmp_path, WANDB_API_KEY="a" * 40, WANDB_BASE_URL="http://127.0.0.1:9")
    assert r.returncode == 2 and seconds < 30, (seconds, r.stderr[-1500:])
    assert "W&B could not start in online mode" in r.stderr and "logger.fallback=offline" in r.stderr


def test_online_failure_can_fall_back_to_offline(tmp_path):
    r, _ = run_online(tmp_path, WANDB_API_KEY="")
    assert r.returncode == 2
    home = tmp_path / "fb"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"HOME": str(home), "OMP_NUM_THREADS": "1"})
    r = subprocess.run([sys.executable, "-m", "vibench", "logger.mode=online", "logger.fallback=offline", "trainer.max_epochs=1", "iw_samples=20",
                        f"hydra.run.dir={tmp_path / 'out2'}", f"results_dir={tmp_path / 'runs2'}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "continuing offline" in r.stderr and list((tmp_path / "out2" / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize("logger", ["wandb", "csv"])
def test_learning_curve_read_back_from_the_run_logs(compose_cfg, tmp_path, logger, capsys):
    """The curve read from W&B's offline run file (or the CSV log) has one row per epoch, and its
    last validation ELBO is the one in the record."""
    import json

    from vibench.curves import main as curves_main, tested_point
    from vibench.run_logs import epoch_curve, history
    from vibench.run import run

    run(compose_cfg("trainer.max_epochs=3", "iw_samples=20", f"logger={logger}", "images=false", "scheduler=multistep", "scheduler.milestones=[1]", "scheduler.gamma=0.1"))
    rec = json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    curve = epoch_curve(history(tmp_path / "out"))
    assert [r["epoch"] for r in curve] == [0, 1, 2]
    if logger == "wandb":  # step-level rows are skipped unparsed: the epoch rows, exactly (3,280 epochs: 48 s to 7 s)
        from vibench.run_logs import wandb_history

        (file,) = (tmp_path / "out").glob("wandb/offline-run-*/run-*.wandb")
        every = wandb_history(file)
        assert wandb_history(file, ("epoch",)) == [r for r in every if "epoch" in r] and len(every) > 6
    assert curve[-1]["val/elbo"] == pytest.approx(rec["metrics"]["val/elbo"], abs=1e-4)
    assert [r["train/lr"] for r in curve] == pytest.approx([1e-3, 1e-4, 1e-4])  # the lr in force during each epoch
    assert tested_point(tmp_path / "out", curve) == (3, curve[-1]["val/elbo"], "tested: the last epoch, epoch 3")  # the circle on the figure
    assert curves_main([str(tmp_path / "out"), "--out", str(tmp_path / "c")]) == 0
    best = max(range(3), key=lambda e: curve[e]["val/elbo"])  # the one-line summary names the best and the last validation ELBO
    assert f"3 epochs; validation ELBO best {curve[best]['val/elbo']:.2f} at epoch {best + 1}, last {curve[2]['val/elbo']:.2f}" in capsys.readouterr().out
    assert (tmp_path / "c" / "curve.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "c" / "curve.csv").read_text().startswith("epoch,step,val/elbo")
    # two runs side by side: a CSV for each (the same rows as alone) and one figure
    assert curves_main([str(tmp_path / "out"), str(tmp_path / "out"), "--out", str(tmp_path / "both"), "--labels", "a", "b"]) == 0
    assert (tmp_path / "both" / "curve-a.csv").read_text() == (tmp_path / "c" / "curve.csv").read_text() == (tmp_path / "both" / "curve-b.csv").read_text()
    assert (tmp_path / "both" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert curves_main([str(tmp_path / "out"), str(tmp_path / "out"), "--out", str(tmp_path / "x"), "--labels", "a"]) == 2  # one label for two runs


@pytest.mark.parametrize("logger", ["wandb", "none"])
def test_every_epoch_is_in_epochs_jsonl_before_its_checkpoint(compose_cfg, tmp_path, monkeypatch, logger):
    """W&B writes its run file from another process: a run killed just after an epoch's checkpoint
    lost that epoch from its logs (the IWAE preset's epoch 1,162), and the resumed run never trains
    it again. epochs.jsonl is written synchronously: whenever a checkpoint is saved at an epoch's
    end, the file already holds that epoch's validation ELBO and training means, with the values
    the run logged and recorded (also with logger=none)."""
    from vibench import faults
    from vibench.run_logs import epoch_curve, history
    from vibench.epoch_log import read
    from vibench.run import run

    seen = []  # (the checkpoint's epoch, the epochs with a val/elbo and a train/elbo_epoch row in the file when it was saved)
    save = faults.AtomicCheckpointIO.save_checkpoint

    def spy(self, checkpoint, path, storage_options=None):
        rows = read(tmp_path / "out" / "epochs.jsonl") if (tmp_path / "out" / "epochs.jsonl").is_file() else []
        seen.append((checkpoint["epoch"], {r["epoch"] for r in rows if "val/elbo" in r} & {r["epoch"] for r in rows if "train/elbo_epoch" in r}))
        return save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(faults.AtomicCheckpointIO, "save_checkpoint", spy)
    run(compose_cfg("trainer.max_epochs=3", "iw_samples=20", f"logger={logger}", "images=false", "checkpoint.every_n_steps=null"))
    # saved at each epoch's end with that epoch already in the file, then at the run's end (epoch: 3 completed)
    assert seen == [(0, {0}), (1, {0, 1}), (2, {0, 1, 2}), (3, {0, 1, 2})]
    rec = json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    curve = epoch_curve(history(tmp_path / "out"))
    assert [r["epoch"] for r in curve] == [0, 1, 2] and curve[-1]["val/elbo"] == pytest.approx(rec["metrics"]["val/elbo"], abs=1e-6)
    if logger == "wandb":  # the same values as W&B's file
        from vibench.run_logs import wandb_history

        (wandb_file,) = (tmp_path / "out").glob("wandb/offline-run-*/run-*.wandb")
        assert epoch_curve(wandb_history(wandb_file)) == epoch_curve(read(tmp_path / "out" / "epochs.jsonl"))


def test_epochs_jsonl_fills_the_epochs_the_logger_lost(tmp_path):
    """A run begun before epochs.jsonl existed, resumed at epoch 1 by a version that writes it: its
    CSV log lacks epoch 1 (killed before it was written), epochs.jsonl has it, and ends in a line
    cut short by a kill. The curve has every epoch; the later row of an epoch wins."""
    from vibench.curves import missing_epochs
    from vibench.run_logs import epoch_curve, history

    log = tmp_path / "csv" / "version_0" / "metrics.csv"
    log.parent.mkdir(parents=True)
    log.write_text("epoch,step,val/elbo,train/elbo_epoch\n0,9,-120.5,-130.0\n2,29,-110.0,-111.0\n")
    (tmp_path / "epochs.jsonl").write_text(
        '{"epoch": 1, "step": 19, "val/elbo": -116.0}\n'
        '{"epoch": 1, "step": 19, "val/elbo": -115.0, "train/elbo_epoch": -117.0}\n{"epoch": 2, "st')
    curve = epoch_curve(history(tmp_path))
    assert missing_epochs(curve) == [] and [r["epoch"] for r in curve] == [0, 1, 2]
    assert curve[1] == {"epoch": 1, "val/elbo": -115.0, "train/elbo_epoch": -117.0, "step": 19}
    assert curve[2]["val/elbo"] == -110.0


def test_the_tested_model_is_found_on_the_validation_curve(tmp_path):
    """A run that tested its best validation epoch (pythae's 2x400 seed 123: 370 epochs of training,
    the curve's epoch index 369, val ELBO -95.667) is marked there; a run still training (an
    interrupted record) or a folder without a record is not marked."""
    from vibench.curves import tested_point

    curve = [{"epoch": e, "val/elbo": -100.0 + (0.01 * e if e <= 369 else 3.69 - 0.001 * (e - 369))} for e in range(500)]
    best = {"select": "best", "epoch": 370, "val_elbo": curve[369]["val/elbo"], "last_epoch": 500}
    (tmp_path / "record.json").write_text(json.dumps({"status": "completed", "evaluated_checkpoint": best}))
    assert tested_point(tmp_path, curve) == (370, pytest.approx(-96.31), "tested: the best validation ELBO, epoch 370")
    assert max(curve, key=lambda r: r["val/elbo"])["epoch"] + 1 == 370
    (tmp_path / "record.json").write_text(json.dumps({"status": "interrupted", "evaluated_checkpoint": None}))
    assert tested_point(tmp_path, curve) is None and tested_point(tmp_path / "nothing", curve) is None


def test_a_curve_csv_is_circled_from_the_record_given_for_it(tmp_path, monkeypatch, capsys):
    """A curve CSV has no record.json beside it: ``--records`` names the run's record, and its
    tested model is circled on that curve (the IWAE preset's figure, remade from committed files,
    kept its circles this way). A record of another run (its stated validation ELBO is not the
    curve's at that epoch) or of a run still training is refused with what was wrong."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vibench.curves import main as curves_main, write_csv

    curve = [{"epoch": e, "step": 10 * e, "val/elbo": -100.0 + 0.5 * e} for e in range(6)]
    write_csv(curve, tmp_path / "curve-a.csv")
    own = {"status": "completed", "evaluated_checkpoint": {"select": "last", "epoch": 6}, "metrics": {"val/elbo": -97.5}}
    other = {**own, "metrics": {"val/elbo": -96.0}}
    best = {"status": "completed", "evaluated_checkpoint": {"select": "best", "epoch": 4, "val_elbo": -98.5}, "metrics": {"val/elbo": -97.5}}
    for name, rec in {"own": own, "other": other, "best": best, "running": {"status": "interrupted", "evaluated_checkpoint": None}}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(rec))
    saved = []
    monkeypatch.setattr(plt.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    csv_a = str(tmp_path / "curve-a.csv")
    assert curves_main([csv_a, csv_a, "--labels", "a", "b", "--out", str(tmp_path / "c"), "--records", str(tmp_path / "own.json"), str(tmp_path / "best.json")]) == 0
    marks = [line for line in saved[-1].axes[0].lines if line.get_marker() == "o"]
    assert [(list(m.get_xdata()), list(m.get_ydata())) for m in marks] == [([6], [-97.5]), ([4], [-98.5])]
    assert [m.get_label() for m in marks] == ["a: tested: the last epoch, epoch 6", "b: tested: the best validation ELBO, epoch 4"]
    assert curves_main([csv_a, csv_a, "--labels", "a", "b", "--out", str(tmp_path / "c"), "--records", "-", str(tmp_path / "own.json")]) == 0  # '-': the CSV's own (none)
    assert sum(line.get_marker() == "o" for line in saved[-1].axes[0].lines) == 1
    capsys.readouterr()
    for wrong in ("other", "running"):
        assert curves_main([csv_a, "--out", str(tmp_path / "c"), "--records", str(tmp_path / f"{wrong}.json")]) == 2
        assert f"{wrong}.json names no tested model on run1's validation curve" in capsys.readouterr().err
    assert curves_main([csv_a, csv_a, "--out", str(tmp_path / "c"), "--records", str(tmp_path / "own.json")]) == 2  # one per run
    assert curves_main([csv_a, "--out", str(tmp_path / "c"), "--records", str(tmp_path / "gone.json")]) == 2
    assert "missing: " + str(tmp_path / "gone.json") in capsys.readouterr().err


def test_a_fresh_run_in_a_reused_folder_moves_the_old_epochs_jsonl_aside(compose_cfg, tmp_path):
    """Two runs from scratch in one folder (resume=null): the second's epochs.jsonl holds its own
    two epochs only, the first's three are kept beside it as epochs.jsonl-previous; the curve is
    the second run's, read from epochs.jsonl alone (it begins at epoch 0)."""
    from vibench.run_logs import epoch_curve, history
    from vibench.epoch_log import read
    from vibench.run import run

    common = ("iw_samples=20", "logger=csv", "images=false", "resume=null")
    run(compose_cfg("trainer.max_epochs=3", *common))
    first = read(tmp_path / "out" / "epochs.jsonl")
    run(compose_cfg("trainer.max_epochs=2", "seed=1", *common, f"results_dir={tmp_path / 'runs2'}"))
    rec = json.loads(next((tmp_path / "runs2").glob("*.json")).read_text())
    assert read(tmp_path / "out" / "epochs.jsonl-previous") == first and sorted({r["epoch"] for r in first}) == [0, 1, 2]
    curve = epoch_curve(history(tmp_path / "out"))
    assert [r["epoch"] for r in curve] == [0, 1] and curve[-1]["val/elbo"] == pytest.approx(rec["metrics"]["val/elbo"], abs=1e-6)


def test_an_epochs_jsonl_from_epoch_0_is_read_alone(tmp_path):
    """A run's epochs.jsonl that begins at epoch 0 holds every epoch: curves reads it without
    W&B's file (about a minute for a 3,000-epoch run; here a file that would not parse). One that
    begins later (a run begun before the file existed) is read after the logger's rows."""
    from vibench.run_logs import epoch_curve, history

    bad = tmp_path / "wandb" / "offline-run-1" / "run-1.wandb"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a W&B file")
    (tmp_path / "epochs.jsonl").write_text('{"epoch": 0, "step": 9, "val/elbo": -120.5}\n{"epoch": 1, "step": 19, "val/elbo": -115.0}\n')
    assert [r["val/elbo"] for r in epoch_curve(history(tmp_path))] == [-120.5, -115.0]
    (tmp_path / "epochs.jsonl").write_text('{"epoch": 1, "step": 19, "val/elbo": -115.0}\n')
    with pytest.raises(ValueError, match="not a W&B run file"):
        history(tmp_path)


def test_curves_name_the_epochs_a_run_s_logs_lack():
    """The IWAE preset's logs lack epoch 1,162 (killed after its checkpoint, before W&B wrote it):
    curves says so, and lists at most ten of many gaps."""
    from vibench.curves import gap_message, missing_epochs

    curve = [{"epoch": e} for e in range(3280) if e != 1162]
    assert missing_epochs(curve) == [1162]
    assert "lack epoch 1162;" in gap_message("preset", curve)
    assert gap_message("x", [{"epoch": e} for e in range(5)]) is None and missing_epochs([]) == []
    sparse = [{"epoch": e} for e in range(0, 30, 2)]  # 14 gaps
    assert "lack epochs 1, 3, 5, 7, 9, 11, 13, 15, 17, 19 and 4 more" in gap_message("x", sparse)


def test_elbo_axis_keeps_a_late_fall_in_view_and_cuts_the_first_epochs():
    """The IWAE preset's validation ELBO peaks early and falls for the last third of its epochs
    while the training ELBO rises. Its whole fall must stay on the axis; only the first tenth of
    each curve's epochs may fall below it. (The axis once started at the 10% quantile of the
    pooled values, which cut the preset's last 400 epochs off its compare.png.)"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vibench.curves import elbo_axes

    first = [-150.0, -130.0, -120.0, -110.0, -105.0, -101.0, -100.0, -99.0, -98.5, -98.2]
    val = first + [-98.0] * 60 + [-98.0 - 0.05 * i for i in range(1, 31)]  # 100 epochs, ends at -99.5
    train = [v - 5 for v in first] + [-97.0 + 0.1 * i for i in range(90)]  # rises to -88.1
    fig, ax = plt.subplots()
    elbo_axes(ax, val, train)
    low, high = ax.get_ylim()
    plt.close(fig)
    assert low <= -99.5 and low > -102.0  # the late fall is in view; epoch 0's -150 is not
    assert high >= -88.1


def test_comparison_legend_names_each_run_once_beside_the_axes(tmp_path, monkeypatch):
    """Four runs made a legend of ten entries (each run's validation and training curve, two
    circles) on the axes, where it hid a run's curves (the IWAE seeds figure). Now each run's colour
    is named once, the two line styles once, and the legend sits right of the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vibench.curves import write_comparison

    saved = {}
    monkeypatch.setattr(plt.Figure, "savefig", lambda fig, *a, **k: saved.setdefault("fig", fig))
    curve = [{"epoch": e, "val/elbo": -100.0 + e, "train/elbo_epoch": -99.0 + e} for e in range(5)]
    train_only = [{"epoch": e, "train/elbo_epoch": -99.0 + e} for e in range(5)]
    write_comparison({"a": curve, "b": curve, "c": train_only}, tmp_path, "t", {"a": (5, -96.0, "tested: the last epoch, epoch 5"), "b": None})
    ax = saved["fig"].axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["a", "a: tested: the last epoch, epoch 5", "b", "c", "validation", "training"]
    assert legend.get_bbox_to_anchor().x0 > ax.get_window_extent().x1  # right of the axes
    assert [line.get_linestyle() for line in legend.get_lines()][-2:] == ["-", "--"]


@pytest.mark.parametrize("logger", ["wandb", "csv"])
def test_learning_curve_of_a_resumed_run_holds_every_segment(compose_cfg, tmp_path, logger):
    """A run continued with resume=PATH logs its second segment into a new W&B run file or CSV
    version: the curve joins them, epochs 0-3 with each segment's own values (the CSV reader once
    read the last version alone, epochs 2-3)."""
    from vibench.run_logs import epoch_curve, history
    from vibench.run import run

    common = ("iw_samples=20", f"logger={logger}", "images=false")
    run(compose_cfg("trainer.max_epochs=2", *common))
    first = epoch_curve(history(tmp_path / "out"))
    run(compose_cfg("trainer.max_epochs=4", f"resume={tmp_path / 'out'}", *common, f"results_dir={tmp_path / 'runs2'}"))
    rec = json.loads(next((tmp_path / "runs2").glob("*.json")).read_text())
    curve = epoch_curve(history(tmp_path / "out"))
    assert [r["epoch"] for r in curve] == [0, 1, 2, 3]
    assert curve[:2] == first and curve[-1]["val/elbo"] == pytest.approx(rec["metrics"]["val/elbo"], abs=1e-4)


def test_runs_differing_only_in_seed_share_a_wandb_job_type(compose_cfg, tmp_path):
    """W&B's job_type (and the record's config_group) is the configuration without its seed:
    seeds 0 and 1 share it, so W&B's grouping averages them; another latent size does not."""
    import json

    from vibench.run import run

    groups = {}
    for tag, overrides in {"s0": ("seed=0",), "s1": ("seed=1",), "z3": ("seed=0", "latent=3")}.items():
        run(compose_cfg("trainer.max_epochs=1", "iw_samples=10", "images=false", "dataset.test_subset=20", *overrides,
                        f"output_dir={tmp_path / tag}", f"results_dir={tmp_path / 'runs' / tag}"))
        rec = json.loads(next((tmp_path / "runs" / tag).glob("*.json")).read_text())
        assert rec["tracking"]["kind"] == "wandb" and rec["tracking"]["job_type"] == rec["config_group"]
        groups[tag] = rec["config_group"]
    assert groups["s0"] == groups["s1"] != groups["z3"]


def test_wandb_chatter_does_not_bury_vibench_output(tmp_path):
    """A default run (W&B offline) piped to a file: no W&B warning or history lines, no raw ANSI
    colour codes; vibench's own table and the W&B sync command are there."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "vibench", "trainer.max_epochs=1", "iw_samples=10", "images=false", "dataset.test_subset=20",
                        f"hydra.run.dir={tmp_path / 'out'}", f"results_dir={tmp_path / 'runs'}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    both = r.stdout + r.stderr
    assert "wandb:" not in both and "anonymous" not in both and "\x1b[" not in both
    assert "test/iw_ll" in r.stdout and "wandb sync" in r.stdout
