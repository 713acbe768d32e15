"""CUDA paths: training, the compiled K-sample evaluation, 1-device DDP and the parallel launcher's
device pinning. Marked ``gpu``: they run with ``python -m pytest -m gpu`` on a GPU machine and skip
cleanly elsewhere. The device-selection logic they rely on is tested on any machine below them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def vibench(*args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "vibench", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def records(folder):
    return [json.loads(p.read_text()) for p in folder.glob("*.json")]


@pytest.mark.gpu
def test_training_and_test_on_cuda(tmp_path):
    r = vibench("trainer.accelerator=gpu", "trainer.devices=1", "trainer.max_epochs=2", "iw_samples=100", "logger=none", f"hydra.run.dir={tmp_path / 'out'}", f"results_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (rec,) = records(tmp_path / "runs")
    assert rec["device"]["type"].startswith("cuda") and rec["status"] == "completed"
    assert rec["metrics"]["test/elbo"] <= rec["metrics"]["test/iw_ll"] < 0


@pytest.mark.gpu
def test_compiled_evaluation_on_cuda_matches_eager():
    from vibench.evaluation import CompiledChunk, evaluate_batch
    from vibench.model import GenerativeModel
    from vibench.networks import Decoder, Encoder

    torch.manual_seed(0)
    model = GenerativeModel(20, Decoder(20, 784, [500])).cuda()
    enc = Encoder(784, 20, [500]).cuda()
    x = (torch.rand(200, 784, device="cuda") < 0.2).float()
    with torch.no_grad():
        torch.manual_seed(1)
        eager = evaluate_batch(model, enc, x, None, 2000, 500)
        torch.manual_seed(1)
        chunk = CompiledChunk(model)
        compiled = evaluate_batch(model, enc, x, None, 2000, 500, compiled=chunk)
    assert not chunk.failed  # it compiled, rather than falling back to eager
    assert torch.allclose(eager["iw_ll"], compiled["iw_ll"], atol=2e-3) and torch.allclose(eager["elbo"], compiled["elbo"], atol=2e-3)


@pytest.mark.gpu
def test_ddp_on_one_gpu(tmp_path):
    r = vibench("trainer=ddp", "trainer.accelerator=gpu", "trainer.devices=1", "trainer.max_epochs=1", "iw_samples=50", "logger=none", f"hydra.run.dir={tmp_path / 'out'}", f"results_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (rec,) = records(tmp_path / "runs")
    assert rec["status"] == "completed" and rec["metrics"]["test/n"] == 250 and rec["device"]["type"].startswith("cuda")


@pytest.mark.gpu
def test_local_parallel_pins_each_job_to_a_gpu(tmp_path):
    r = vibench("-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2", "latent=2,3", "trainer.max_epochs=1", "iw_samples=20", "logger=none", "images=false",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", f"results_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = sorted(records(tmp_path / "runs"), key=lambda rec: rec["job_num"])
    n = torch.cuda.device_count()
    assert [rec["device"]["type"] for rec in recs] == [f"cuda:{j % n}" for j in range(2)]


# --- the selection logic of those paths, on any machine ---------------------------------------
def test_device_for_job_packs_jobs_round_robin():
    from vibench.trainer_build import device_for_job

    assert [device_for_job(j, 4)["devices"] for j in range(8)] == [[0], [1], [2], [3], [0], [1], [2], [3]]  # n_jobs=8: 2 per GPU
    assert device_for_job(5, 1) == {"accelerator": "gpu", "devices": [0]}  # every job on the one GPU
    assert device_for_job(3, 0) == {"accelerator": "cpu", "devices": 1}


def test_bench_refuses_cuda_without_a_gpu_before_any_work(monkeypatch):
    from vibench import bench

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device"):
        bench.pick_device("cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        bench.pick_device("gpu0")
    assert bench.pick_device("cpu").type == "cpu"
    monkeypatch.setattr(bench, "load_data", lambda: pytest.fail("data loaded before the device was checked"))
    assert bench.main(["--device", "cuda"]) == 2
