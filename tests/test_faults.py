"""Fault injection: NaN losses, SIGKILL and resume, SIGTERM, failing jobs in a sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vibench.errors import NonFiniteLoss
from vibench.methods import VariationalInference
from vibench.run import run

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def records_in(folder):
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def test_nan_loss_stops_the_run_names_the_step_and_records_failure(compose_cfg, tmp_path, monkeypatch):
    real = VariationalInference.training_loss

    def poisoned(self, x, idx):
        loss = real(self, x, idx)
        return loss * float("nan") if self.global_step >= 3 else loss

    monkeypatch.setattr(VariationalInference, "training_loss", poisoned)
    cfg = compose_cfg("trainer.max_epochs=3", "trainer.log_every_n_steps=5", "checkpoint.every_n_steps=2", "logger=none")
    with pytest.raises(NonFiniteLoss) as e:
        run(cfg)
    msg = str(e.value)
    assert "NaN or infinite at step 3" in msg and "last good checkpoint is" in msg and "last.ckpt" in msg
    (rec,) = records_in(tmp_path / "runs")
    assert rec["status"] == "failed" and "NaN or infinite at step 3" in rec["error"] and "metrics" not in rec
    # the checkpoint on disk predates the NaN: it was not overwritten with poisoned weights
    ckpt = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] <= 3 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def train_cmd(tmp_path, out, runs, *extra, logger="none"):
    return [sys.executable, "-m", "vibench", "dataset.batch_size=10", "trainer.max_epochs=8", "checkpoint.every_n_steps=7", "iw_samples=50",
            f"logger={logger}", "images=false", "trainer.deterministic=true", f"hydra.run.dir={out}", f"results_dir={runs}", *extra]


def epoch_means(out) -> dict[int, float]:
    """``{epoch: train/elbo_epoch}`` of a run folder's learning curve, as ``vibench.curves`` reads it."""
    from vibench.run_logs import epoch_curve, history

    return {row["epoch"]: row["train/elbo_epoch"] for row in epoch_curve(history(out)) if "train/elbo_epoch" in row}


def checkpoint_step(path) -> int:
    try:
        return torch.load(path, weights_only=False, map_location="cpu")["global_step"]
    except Exception:
        return -1


def start_and_wait_for_checkpoint(cmd, ckpt, min_step: int, cwd) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file() and checkpoint_step(ckpt) >= min_step:
            return proc
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no checkpoint at step >= {min_step} appeared; stderr: {proc.stderr.read()[-2000:]}")


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    # 1297 digits / batch 10 = 130 steps per epoch; checkpoints every 7 steps fall mid-epoch.
    reference = subprocess.run(train_cmd(tmp_path, tmp_path / "ref", tmp_path / "ref_runs", logger="csv"), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-2000:]
    out, runs = tmp_path / "killed", tmp_path / "killed_runs"
    proc = start_and_wait_for_checkpoint(train_cmd(tmp_path, out, runs, logger="csv"), out / "checkpoints" / "last.ckpt", 300, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint_step(out / "checkpoints" / "last.ckpt")
    assert 300 <= killed_at < 1040 and killed_at % 130 != 0  # mid-epoch, before the end
    assert not list(runs.glob("*.json"))  # SIGKILL: nothing finished, nothing recorded
    resumed = subprocess.run(train_cmd(tmp_path, out, runs, logger="csv"), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (ref,) = records_in(tmp_path / "ref_runs")
    (res,) = records_in(runs)
    assert res["resumed_from"].endswith("last.ckpt") and res["global_step"] == ref["global_step"] == 1040
    # the record names the run's two parts: from step 0, and from the checkpoint's step, each with its code
    assert [(p["from_step"], p["from_epoch"]) for p in res["training_parts"]] == [(0, 0), (killed_at, killed_at // 130)]
    assert [p["from_step"] for p in ref["training_parts"]] == [0]
    assert all(p["commit"] == ref["git"]["commit"] and p["started"] for p in res["training_parts"])
    assert [p["training_loss"] for p in res["training_parts"]] == ["eager", "eager"]  # 1,040 steps: auto does not compile
    # CPU, one thread, deterministic: the same batches and the same noise, so the same numbers.
    for key in ("test/elbo", "test/iw_ll", "test/kl", "val/elbo"):
        assert res["metrics"][key] == pytest.approx(ref["metrics"][key], abs=1e-6), key
    # the logged training curve too, the epoch cut by the kill included: its mean counts the steps
    # before the checkpoint (it was once the mean of the steps after the resume alone)
    ref_means, res_means = epoch_means(tmp_path / "ref"), epoch_means(out)
    assert sorted(ref_means) == sorted(res_means) == list(range(8)) and killed_at // 130 in res_means
    for epoch, mean in ref_means.items():
        assert res_means[epoch] == pytest.approx(mean, abs=1e-5), epoch


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    out, runs = tmp_path / "run", tmp_path / "runs"
    cmd = train_cmd(tmp_path, out, runs, "trainer.max_epochs=50", "checkpoint.every_n_steps=null")
    ckpt = out / "checkpoints" / "last.ckpt"
    proc = start_and_wait_for_checkpoint(cmd, ckpt, 130, tmp_path)  # after epoch 1
    signalled = time.time()
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, stderr[-2000:]
    step = checkpoint_step(ckpt)
    assert f"stopped by SIGTERM at step {step};" in stderr and "resume=" in stderr and "Traceback" not in stderr
    (rec,) = records_in(runs)
    assert rec["status"] == "interrupted" and f"SIGTERM at step {step}" in rec["error"]
    # saved where it stopped, after the signal: not the last epoch end's checkpoint left as it was.
    # (The step itself may be an epoch's end, 130, when the signal lands during that epoch's
    # validation on a loaded machine: CI on 2026-11-24 beside two long runs.)
    assert step >= 130 and ckpt.stat().st_mtime >= signalled


def test_multirun_with_a_failing_job_finishes_the_others(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "vibench", "-m", "latent=2,3,0,4", "trainer.max_epochs=1", "iw_samples=20", "logger=none", "images=false",
         f"hydra.sweep.dir={tmp_path / 'sweep'}", f"results_dir={tmp_path / 'runs'}"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 1
    assert "1 job(s) of the sweep failed" in r.stderr and "latent=0" in r.stderr
    recs = {rec["config"]["latent"]: rec for rec in records_in(tmp_path / "runs")}
    assert sorted(recs) == [0, 2, 3, 4]
    assert [recs[k]["status"] for k in (2, 3, 4)] == ["completed"] * 3
    assert recs[0]["status"] == "failed" and "latent must be an integer >= 1" in recs[0]["error"] and recs[0]["job_num"] == 2
    # The sweep is a unit: a summary row per job, and its folder or its id selects exactly its records.
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert [(j["job"], j["overrides"], j["status"]) for j in summary["jobs"]] == [
        (0, "latent=2", "completed"), (1, "latent=3", "completed"), (2, "latent=0", "failed"), (3, "latent=4", "completed")]
    assert "sweep " in r.stdout and "latent=0" in r.stdout and "failed" in r.stdout
    from vibench.selection import collect_records

    other = dict(recs[2], run_id="unrelated", sweep_id=None, sweep_dir=None)
    (tmp_path / "runs" / "unrelated.json").write_text(json.dumps(other))
    assert sorted(r["run_id"] for r in collect_records([str(tmp_path / "sweep")])) == sorted(r["run_id"] for r in recs.values())
    os.environ["VIBENCH_RESULTS_DIR"] = str(tmp_path / "runs")
    try:
        assert len(collect_records([summary["sweep_id"]])) == 4 and len(collect_records([f"sweep-{summary['sweep_id']}"])) == 4
    finally:
        del os.environ["VIBENCH_RESULTS_DIR"]
    check = subprocess.run([sys.executable, "-m", "vibench.check", str(tmp_path / "sweep")], capture_output=True, text=True, env=ENV, timeout=120)
    assert "4 record(s)" in check.stdout, check.stdout + check.stderr


def test_reused_output_folder_never_resumes_another_or_a_finished_run(compose_cfg, tmp_path, capsys):
    """resume=auto resumes only an interrupted run of the same configuration. In one reused output
    folder: a different configuration starts afresh (no size-mismatch traceback), and so does an
    identical one after a finished run (it trains, rather than re-testing the old model); each
    time the old checkpoints are moved aside and the console says so."""
    from vibench.run import run

    seen: set[str] = set()

    def new_record():
        """The one record the last run wrote (runs a second apart share `created`: not sortable by time)."""
        (path,) = {str(p) for p in (tmp_path / "runs").glob("*.json")} - seen
        seen.add(path)
        return json.loads(Path(path).read_text())

    common = ("trainer.max_epochs=2", "iw_samples=20", "logger=none", "images=false")
    run(compose_cfg(*common))
    first = new_record()
    run(compose_cfg(*common, "dataset=linear_gaussian", "model=linear", "latent=2"))  # another config, same folder
    err = capsys.readouterr().err
    second = new_record()
    assert second["status"] == "completed" and second["resumed_from"] is None and second["run_id"] != first["run_id"]
    assert "a different configuration" in err and "dataset.name: 'digits' -> 'linear_gaussian'" in err and "starting afresh" in err
    assert (tmp_path / "out" / f"checkpoints-{first['run_id']}" / "last.ckpt").is_file()  # moved, not overwritten

    run(compose_cfg(*common, "dataset=linear_gaussian", "model=linear", "latent=2"))  # identical to the second, which finished
    err = capsys.readouterr().err
    third = new_record()
    assert "which finished" in err and third["resumed_from"] is None
    assert third["global_step"] == second["global_step"] > 0 and third["epochs"] == 2
    assert third["timing"]["train_s"] > 0.3 * second["timing"]["train_s"]  # it trained: a resumed finished run takes ~0.002 s


def test_explicit_resume_continues_a_finished_run_for_longer_without_early_stopping(compose_cfg, tmp_path):
    """resume=PATH may lengthen a finished run and change its early-stopping patience (continuing an
    early-stopped anchor run through its remaining learning-rate decays): it trains on from epoch 1 to 3."""
    from vibench.run import run

    common = ("iw_samples=20", "logger=none", "images=false", "dataset.batch_size=100")
    run(compose_cfg("trainer.max_epochs=1", "early_stopping.patience=5", *common, f"results_dir={tmp_path / 'first'}"))
    first = json.loads(next((tmp_path / "first").glob("*.json")).read_text())
    run(compose_cfg("trainer.max_epochs=3", "early_stopping.patience=null", *common, f"resume={tmp_path / 'out'}", f"output_dir={tmp_path / 'longer'}", f"results_dir={tmp_path / 'second'}"))
    second = json.loads(next((tmp_path / "second").glob("*.json")).read_text())
    assert second["resumed_from"] and second["epochs"] == 3
    assert second["global_step"] == 3 * first["global_step"]
    # the record counts the training time of both segments, carried in the checkpoint
    t1, t2 = first["timing"], second["timing"]
    assert "train_s_all_segments" not in t1
    assert t2["train_s_all_segments"] == pytest.approx(t1["train_s"] + t2["train_s"], abs=0.005)
    assert t2["val_s_all_segments"] == pytest.approx(t1["val_s"] + t2["val_s"], abs=0.005)


def test_a_compiled_run_resumed_matches_an_uninterrupted_one(compose_cfg, tmp_path):
    """The compiled training loss draws its noise from torch's generator, which a checkpoint
    restores: a compiled run resumed at an epoch's end gives the uninterrupted run's numbers, and
    both parts say they ran compiled. About 20 s (three short runs, two compilations)."""
    from vibench.run import run

    def only(folder):
        (path,) = folder.glob("*.json")
        return json.loads(path.read_text())

    common = ("train.compile=true", "iw_samples=20", "logger=none", "images=false")
    run(compose_cfg("trainer.max_epochs=4", *common, f"output_dir={tmp_path / 'a'}", f"results_dir={tmp_path / 'ra'}"))
    run(compose_cfg("trainer.max_epochs=2", *common, f"output_dir={tmp_path / 'b'}", f"results_dir={tmp_path / 'rb1'}"))
    run(compose_cfg("trainer.max_epochs=4", *common, f"resume={tmp_path / 'b'}", f"output_dir={tmp_path / 'b'}", f"results_dir={tmp_path / 'rb'}"))
    whole, resumed = only(tmp_path / "ra"), only(tmp_path / "rb")
    assert [p["training_loss"] for p in resumed["training_parts"]] == ["compiled", "compiled"] and resumed["resumed_from"]
    assert [p["training_loss"] for p in whole["training_parts"]] == ["compiled"]
    for key in ("val/elbo", "test/elbo", "test/iw_ll"):
        assert resumed["metrics"][key] == pytest.approx(whole["metrics"][key], abs=1e-6), key


def test_explicit_resume_of_another_configuration_is_refused(compose_cfg, tmp_path):
    from vibench.errors import ConfigError
    from vibench.run import run

    run(compose_cfg("trainer.max_epochs=1", "iw_samples=20", "logger=none", "images=false"))
    with pytest.raises(ConfigError, match="different configuration .*latent: 10 -> 3"):
        run(compose_cfg("trainer.max_epochs=1", "iw_samples=20", "logger=none", "images=false", "latent=3", f"resume={tmp_path / 'out'}"))


def test_a_run_moved_to_another_machine_resumes_where_the_data_lives_elsewhere(tmp_path):
    """Bug: the data folder and cache were part of the resume fingerprint, so a run started on a lent
    GPU (data under /tmp/data) was not resumed on the CPU machine (data under ../shared/data): it was
    moved aside and restarted from epoch 0. Where the data is read from is not what a run computes;
    any other difference still refuses."""
    from vibench.resume import find_resume_checkpoint

    def flat(root, latent=40):
        return {"latent": latent, "dataset.name": "binarized_mnist", "dataset.source._target_": "vibench.data.sources.binarized_mnist",
                "dataset.source.root": root, "dataset.source.cache_dir": f"{root}/cache", "dataset.source.download": True}

    last = tmp_path / "out" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"callbacks": {"ResumeState": {"run_id": "gpu-run", "config": flat("/tmp/data"), "finished": False}}}, last)
    path, message = find_resume_checkpoint("auto", tmp_path / "out", flat("/work/shared/data"))
    assert path == last and "resuming the interrupted run gpu-run" in message
    assert find_resume_checkpoint(str(tmp_path / "out"), tmp_path / "elsewhere", flat("/work/shared/data"))[0] == last

    path, message = find_resume_checkpoint("auto", tmp_path / "out", flat("/work/shared/data", latent=20))
    assert path is None and "latent: 40 -> 20" in message and "dataset.source.root" not in message


def test_best_checkpoint_survives_a_resume_into_another_folder(tmp_path):
    """Bug: on resume=PATH into another output folder, Lightning dropped the best validation score
    (it reloads it only for an unchanged folder), so the continued run selected the best model of its
    new epochs alone. The earlier best.ckpt is now copied over with its score; a worse epoch does not
    replace it, and the old folder is not touched. A file at the old path that another run wrote
    (a folder moved from another machine) is never taken for it."""
    from types import SimpleNamespace

    from vibench.checkpoints import BestCheckpoint

    def best_file(path, score):
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"epoch": 7, "callbacks": {old.state_key: {"best_model_score": torch.tensor(score)}}}, path)

    old = BestCheckpoint(tmp_path / "first" / "checkpoints")
    best = tmp_path / "first" / "checkpoints" / "best.ckpt"
    best_file(best, -97.5)
    score = torch.tensor(-97.5)
    old.best_model_path, old.best_model_score, old.kth_best_model_path, old.best_k_models, old.kth_value = str(best), score, str(best), {str(best): score}, score
    state = old.state_dict()
    assert old.state_key == "ModelCheckpoint{'monitor': 'val/elbo', 'mode': 'max', 'every_n_train_steps': 0, 'every_n_epochs': 1, 'train_time_interval': None}"

    new = BestCheckpoint(tmp_path / "longer" / "checkpoints")
    new.load_state_dict(state)
    copied = tmp_path / "longer" / "checkpoints" / "best.ckpt"
    assert new.best_model_path == str(copied) and copied.read_bytes() == best.read_bytes()
    assert float(new.best_model_score) == -97.5
    trainer = SimpleNamespace(strategy=SimpleNamespace(reduce_boolean_decision=lambda decision: decision))
    assert not new.check_monitor_top_k(trainer, torch.tensor(-98.0)) and new.check_monitor_top_k(trainer, torch.tensor(-97.0))

    # a folder moved whole (the old path gone): its own best.ckpt, beside last.ckpt, is the best
    best.unlink()
    moved = BestCheckpoint(tmp_path / "longer" / "checkpoints")
    moved.load_state_dict(state)
    assert moved.best_model_path == str(copied) and float(moved.best_model_score) == -97.5

    # the old path holds another run's best (score -96.0): not copied; Lightning's fallback, with its warning
    best_file(best, -96.0)
    elsewhere = BestCheckpoint(tmp_path / "third" / "checkpoints")
    with pytest.warns(UserWarning, match="dirpath has changed"):
        elsewhere.load_state_dict(state)
    assert not (tmp_path / "third" / "checkpoints" / "best.ckpt").exists()
    # ... unless the folder resumed from (resume=PATH of a run folder copied from another machine) holds it
    copied_run = BestCheckpoint(tmp_path / "fourth" / "checkpoints", resumed_folder=tmp_path / "longer" / "checkpoints")
    copied_run.load_state_dict(state)
    assert float(copied_run.best_model_score) == -97.5 and (tmp_path / "fourth" / "checkpoints" / "best.ckpt").read_bytes() == copied.read_bytes()


def test_last_checkpoint_moves_with_its_folder_without_a_warning(tmp_path, recwarn):
    from vibench.checkpoints import LastCheckpoint

    old = LastCheckpoint(tmp_path / "gpu" / "checkpoints", every_n_epochs=1, every_n_train_steps=None)
    old.best_model_path = str(tmp_path / "gpu" / "checkpoints" / "last.ckpt")
    assert old.state_key == "ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, 'train_time_interval': None}"
    (tmp_path / "here" / "checkpoints").mkdir(parents=True)
    (tmp_path / "here" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    new = LastCheckpoint(tmp_path / "here" / "checkpoints", every_n_epochs=1, every_n_train_steps=None)
    new.load_state_dict(old.state_dict())
    assert new.best_model_path == str(tmp_path / "here" / "checkpoints" / "last.ckpt")
    assert not [w for w in recwarn if "dirpath has changed" in str(w.message)]


def test_a_setting_added_later_with_a_null_default_does_not_stop_a_resume(tmp_path):
    """A checkpoint written before a setting existed resumes when the setting is null ("off") now,
    whether by resume=auto or resume=PATH; a value that differs, old or new, still refuses it."""
    from vibench.errors import ConfigError
    from vibench.resume import find_resume_checkpoint

    old = {"latent": 50, "optimizer.lr": 0.001, "early_stopping.patience": None}
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    torch.save({"callbacks": {"ResumeState": {"run_id": "r1", "config": old, "finished": False}}}, last)
    now = {**old, "model.decoder.output_bias": None}
    assert find_resume_checkpoint("auto", tmp_path, now)[0] == last
    assert find_resume_checkpoint(str(tmp_path), tmp_path, now)[0] == last
    with pytest.raises(ConfigError, match="output_bias: None -> 'train_mean'"):
        find_resume_checkpoint(str(tmp_path), tmp_path, {**old, "model.decoder.output_bias": "train_mean"})
    with pytest.raises(ConfigError, match="latent: 50 -> None"):
        find_resume_checkpoint(str(tmp_path), tmp_path, {**old, "latent": None})
    path, note = find_resume_checkpoint("auto", tmp_path, {**old, "model.decoder.output_bias": "train_mean"})
    assert path is None and "a different configuration" in note and not last.exists()  # moved aside


def test_a_checkpoint_from_before_the_parts_were_recorded_says_so():
    from types import SimpleNamespace

    from vibench.faults import UNRECORDED_PART, ResumeState

    old = ResumeState("r1")
    old.load_state_dict({"run_id": "r1", "torch_rng": torch.get_rng_state()})  # no "parts": an older checkpoint
    old.on_train_start(SimpleNamespace(global_step=5000, current_epoch=2), None)
    assert old.parts()[0] == UNRECORDED_PART and old.parts()[0]["commit"] is None
    assert (old.parts()[1]["from_step"], old.parts()[1]["from_epoch"]) == (5000, 2)
    later = ResumeState("r1", code={"commit": "abc", "dirty": False})
    later.load_state_dict(old.state_dict())  # its own parts travel in its checkpoints
    later.on_train_start(SimpleNamespace(global_step=9000, current_epoch=4), None)
    assert [p["from_step"] for p in later.parts()] == [0, 5000, 9000] and later.parts()[2]["commit"] == "abc"


def test_config_group_ignores_seeds_null_settings_data_location_and_evaluate():
    """Two seeds of one configuration, the second run by a vibench with an added null setting,
    its data read from elsewhere and its checkpoint re-tested with ``evaluate=``: one group. A
    setting with a value (latent 3) is another group, and so is a setting turned on."""
    from vibench.resume import config_group

    base = {"latent": 2, "seed": 0, "dataset.shuffle_seed": "${seed}", "dataset.source.root": "/a", "evaluate": None}
    later = {**base, "seed": 1, "new_setting": None, "dataset.source.root": "/b", "evaluate": "outputs/run"}
    assert config_group(base) == config_group(later)
    assert config_group(base) != config_group({**base, "latent": 3})
    assert config_group(later) != config_group({**later, "new_setting": "on"})
