"""Sweeps and distribution on a CPU-only machine: parallel jobs, DDP, and their refusal together."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def vibench(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "vibench", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_local_parallel_launcher_runs_four_jobs_two_at_a_time(tmp_path):
    r = vibench("-m", "hydra/launcher=local_parallel", "latent=2,3,4,5", "trainer.max_epochs=20", "iw_samples=20", "logger=none", "images=false",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", f"results_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    assert sorted(rec["config"]["latent"] for rec in recs) == [2, 3, 4, 5]
    assert all(rec["status"] == "completed" and rec["device"]["torch_threads"] == 1 for rec in recs)
    # never more than two jobs training at once: count overlaps of the training spans [first step,
    # first step + train_s], each inside its job's life (precise timestamps: `created` is rounded
    # to the second, and total_s also counts start-up before it, which overlapped under load)
    spans = [(rec["timing"]["first_step_at"], rec["timing"]["first_step_at"] + rec["timing"]["train_s"]) for rec in recs]
    for start, _ in spans:
        alive = sum(1 for s, e in spans if s <= start + 0.5 and e >= start + 0.5)
        assert alive <= 2
    assert len({int(s) for s, _ in spans}) >= 2  # in two waves, not all at once


def test_ddp_single_run_on_two_cpu_processes(tmp_path):
    r = vibench("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=2", "iw_samples=50", "images=false",
                f"hydra.run.dir={tmp_path / 'out'}", f"results_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (rec,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    assert rec["status"] == "completed" and rec["config"]["trainer"]["strategy"] == "ddp"
    assert rec["metrics"]["test/n"] == 250  # every test point once, gathered from both ranks
    assert rec["timing"]["train_examples"] == 2 * 2 * (1297 // 2)  # 2 epochs x 2 ranks x an equal share
    assert len(list((tmp_path / "out" / "wandb").glob("offline-run-*"))) == 1  # rank 0 alone holds a W&B run
    # output to a pipe: plain progress lines from rank 0 alone, and the epoch means they read are synced
    assert r.stdout.count("epoch 1/2 done: train ELBO") == 1 and r.stdout.count("epoch 2/2 done: train ELBO") == 1
    assert "sync_dist=True" not in r.stderr


def test_ddp_with_multirun_refused(tmp_path):
    r = vibench("-m", "trainer=ddp", "trainer.accelerator=cpu", "latent=2,5", f"hydra.sweep.dir={tmp_path / 's'}", f"results_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert r.returncode == 2 and "cannot be combined with -m" in r.stderr and "hydra/launcher=local_parallel" in r.stderr
    assert not (tmp_path / "runs").exists()
