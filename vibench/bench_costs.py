"""Measurements of ``python -m vibench.bench`` beside the training interleave: the matrix-multiply
rate, the K-sample evaluation against it, SVI's cost per batch against the VAE's, and the time
from the command line to the first training step."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from vibench.bench_contenders import BATCH, D, H, Z


def quantiles(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "q1": q[0], "q3": q[2], "n": len(xs)}


def matmul_gflops(device: torch.device, seconds: float = 1.0) -> float:
    """float32 rate of the decoder's big product, [10000, 500] @ [500, 784], measured now."""
    a, b = torch.randn(10000, H, device=device), torch.randn(H, D, device=device)
    flops, rates = 2 * 10000 * H * D, []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(rates) < 5:
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(flops / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def eval_rate(data: torch.Tensor, k: int, points: int, device: torch.device, chunk_mib: float, blocks: int = 5) -> dict:
    """vibench's K-sample evaluation of ``points`` test images: sample-points per second, decoder
    GFLOP/s, and its share of the matrix-multiply rate measured right before and after each of
    ``blocks`` blocks (K / blocks samples each), so that a change of CPU speed hits both sides."""
    from vibench.evaluation import CompiledChunk, evaluate_batch, samples_per_chunk
    from vibench.model import GenerativeModel
    from vibench.networks import Decoder, Encoder

    model = GenerativeModel(Z, Decoder(Z, D, [H])).to(device)
    enc = Encoder(D, Z, [H]).to(device)
    x = data[:points].to(device)
    batch = min(points, 500)
    chunk = samples_per_chunk(batch, Z, [H], D, chunk_mib)
    # as vibench decides with eval.compile=auto for this K over the full 10,000-image test set
    compiled = k * 10000 >= 10_000_000
    fused = CompiledChunk(model) if compiled else None
    t = time.perf_counter()
    evaluate_batch(model, enc, x[:batch], None, min(k, 50), chunk, compiled=fused)  # warm-up (and compile)
    sync(device.type)
    compile_s = time.perf_counter() - t
    k_block = max(1, k // blocks)
    flops = points * k_block * 2 * (Z * H + H * D)
    seconds, shares = 0.0, []
    for _ in range(blocks):
        before = matmul_gflops(device, 0.2)
        t = time.perf_counter()
        for i in range(0, points, batch):
            evaluate_batch(model, enc, x[i : i + batch], None, k_block, chunk, compiled=fused)
        sync(device.type)
        dt = time.perf_counter() - t
        seconds += dt
        shares.append(flops / dt / 1e9 / ((before + matmul_gflops(device, 0.2)) / 2))
    sample_points = points * k_block * blocks
    return {"k": k_block * blocks, "points": points, "blocks": blocks, "compiled": compiled, "compile_and_warmup_s": compile_s, "seconds": seconds, "sample_points_per_s": sample_points / seconds,
            "decoder_gflops": flops * blocks / seconds / 1e9, "share_of_matmul_rate": quantiles(shares),
            "chunk_samples": chunk, "chunk_mib": chunk_mib, "full_test_k5000_minutes": 10000 * 5000 / (sample_points / seconds) / 60}


def svi_cost(data: torch.Tensor, inner: int, reps: int, device: torch.device) -> dict[str, float]:
    """Seconds per batch of an SVI step (``inner`` refinement steps + one model step) and of a VAE step."""
    import functools

    from vibench.families import DiagonalGaussian
    from vibench.local_fit import refine
    from vibench.model import GenerativeModel
    from vibench.networks import Decoder, Encoder
    from vibench.objectives import kl_estimate

    model = GenerativeModel(Z, Decoder(Z, D, [H])).to(device)
    family = DiagonalGaussian(Z)
    enc = Encoder(D, Z, [H], family=family).to(device)
    opt = torch.optim.Adam([*model.parameters(), *enc.parameters()], lr=1e-3)
    sgd = functools.partial(torch.optim.SGD, lr=1.0, momentum=0.5)

    def step(q, x):
        z = q.rsample()
        loss = -(model.likelihood(z).log_prob(x) - kl_estimate(q, model.prior())).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def vae(x):
        step(enc(x), x)

    def svi(x):
        step(family.distribution(refine(model, family, x, family.init_params(len(x), device=device), inner, sgd)), x)

    ratios, t_vae, t_svi = [], [], []
    for r in range(reps + 1):
        x = data[r * BATCH % (len(data) - BATCH):][:BATCH].to(device)
        for fn, acc in ((vae, t_vae), (svi, t_svi)):
            t = time.perf_counter()
            for _ in range(5 if fn is vae else 1):
                fn(x)
            sync(device.type)
            acc.append((time.perf_counter() - t) / (5 if fn is vae else 1))
        if r:
            ratios.append(t_svi[-1] / t_vae[-1] / (inner + 1))
    return {"inner_steps": inner, "vae_step_s": statistics.median(t_vae[1:]), "svi_step_s": statistics.median(t_svi[1:]), "svi_over_inner_plus_1_vae": quantiles(ratios)}


def startup_latency(device: str) -> float:
    """Seconds from launching ``python -m vibench +experiment=aevb_mnist`` to its first training step."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        r = subprocess.run([sys.executable, "-m", "vibench", "+experiment=aevb_mnist", "trainer.max_steps=1", "iw_samples=1", "dataset.test_subset=10",
                            "logger=none", "images=false", f"trainer.accelerator={device}", f"hydra.run.dir={tmp}/out", f"results_dir={tmp}/runs"], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(r.stderr[-2000:])
        (rec,) = [json.loads(p.read_text()) for p in Path(tmp, "runs").glob("*.json")]
        return rec["timing"]["first_step_at"] - t0
