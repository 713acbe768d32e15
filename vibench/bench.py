"""``python -m vibench.bench``: how fast is vibench, against a plain loop and its peers, on this machine?

Model: Kingma & Welling's MNIST VAE (784-500-20 tanh encoder, 20-500-784 Bernoulli decoder,
batch 100, L = 1, Adam lr 1e-3). Contenders run **interleaved in blocks** of ``--block`` steps in
one process: vibench's real Lightning loop (the same Trainer and callbacks as ``python -m
vibench``) runs, and after each of its blocks a callback runs one block of every other contender.
Machines here change speed (other processes, CPU clock states), so only ratios of adjacent blocks
are reported as medians with their spread; never single absolute times.

Contenders: (a) vibench; (b) a minimal plain PyTorch loop of the identical model, the reference
(default Adam, and Adam(fused=True)); (c) Pyro SVI (Trace_ELBO) and (d) pythae's VAE with its own
trainer, when installed. Also measured: the matrix-multiply
rate, the K-sample IW evaluation against it, SVI's cost per batch against the VAE's, and the
time from the command line to the first training step. Results go to ``results/bench/``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

D, H, Z, BATCH = 784, 500, 20, 100


def quantiles(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "q1": q[0], "q3": q[2], "n": len(xs)}


class PlainLoop:
    """The reference: a minimal PyTorch loop of the identical model, independent of vibench's code."""

    def __init__(self, data: torch.Tensor, fused: bool = False, seed: int = 0):
        torch.manual_seed(seed)
        self.data, self.g = data, torch.Generator().manual_seed(seed)
        self.enc = nn.Sequential(nn.Linear(D, H), nn.Tanh(), nn.Linear(H, 2 * Z)).to(data.device)
        self.dec = nn.Sequential(nn.Linear(Z, H), nn.Tanh(), nn.Linear(H, D)).to(data.device)
        self.opt = torch.optim.Adam([*self.enc.parameters(), *self.dec.parameters()], lr=1e-3, fused=fused or None)
        self.prior = Independent(Normal(torch.zeros(Z, device=data.device), torch.ones(Z, device=data.device)), 1)

    def block(self, steps: int) -> None:
        for _ in range(steps):
            x = self.data[torch.randint(len(self.data), (BATCH,), generator=self.g).to(self.data.device)]
            mu, logvar = self.enc(x).chunk(2, -1)
            q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
            recon = Independent(Bernoulli(logits=self.dec(q.rsample())), 1).log_prob(x)
            loss = -(recon - kl_divergence(q, self.prior)).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()


class PyroLoop:
    """Pyro SVI with Trace_ELBO on the identical model (pyro-ppl, optional)."""

    def __init__(self, data: torch.Tensor):
        import pyro
        import pyro.distributions as pdist
        from pyro.infer import SVI, Trace_ELBO
        from pyro.optim import Adam

        pyro.clear_param_store()
        self.data, self.g = data, torch.Generator().manual_seed(1)
        enc = nn.Sequential(nn.Linear(D, H), nn.Tanh(), nn.Linear(H, 2 * Z))
        dec = nn.Sequential(nn.Linear(Z, H), nn.Tanh(), nn.Linear(H, D))

        def model(x):
            pyro.module("decoder", dec)
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", pdist.Normal(torch.zeros(len(x), Z), 1.0).to_event(1))
                pyro.sample("x", pdist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

        def guide(x):
            pyro.module("encoder", enc)
            mu, logvar = enc(x).chunk(2, -1)
            with pyro.plate("data", len(x)):
                pyro.sample("z", pdist.Normal(mu, torch.exp(0.5 * logvar)).to_event(1))

        # Pyro's loss sums over the batch where the others average; Adam's step does not depend on that scale.
        self.svi = SVI(model, guide, Adam({"lr": 1e-3}), loss=Trace_ELBO())

    def block(self, steps: int) -> None:
        for _ in range(steps):
            self.svi.step(self.data[torch.randint(len(self.data), (BATCH,), generator=self.g)])


class PythaeLoop:
    """pythae's VAE (its model, loss and reparameterization) trained by pythae's own ``BaseTrainer``
    (pythae, optional). A block is one trainer epoch over a dataset of ``block`` minibatches, so
    its DataLoader, per-step ``loss.item()`` and progress bar are counted, as a pythae user pays them."""

    def __init__(self, data: torch.Tensor, block: int, workdir: str):
        from pythae.data.datasets import BaseDataset
        from pythae.models import VAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.trainers import BaseTrainer, BaseTrainerConfig

        class Enc(BaseEncoder):
            def __init__(self):
                super().__init__()
                self.net, self.mu, self.lv = nn.Sequential(nn.Linear(D, H), nn.Tanh()), nn.Linear(H, Z), nn.Linear(H, Z)

            def forward(self, x):
                h = self.net(x.reshape(len(x), -1))
                return ModelOutput(embedding=self.mu(h), log_covariance=self.lv(h))

        class Dec(BaseDecoder):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(Z, H), nn.Tanh(), nn.Linear(H, D), nn.Sigmoid())

            def forward(self, z):
                return ModelOutput(reconstruction=self.net(z).reshape(len(z), 1, 28, 28))

        model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=Z, reconstruction_loss="bce"), encoder=Enc(), decoder=Dec())
        images = data[: block * BATCH].reshape(-1, 1, 28, 28)
        config = BaseTrainerConfig(output_dir=workdir, num_epochs=10**6, learning_rate=1e-3, per_device_train_batch_size=BATCH, optimizer_cls="Adam", no_cuda=True, steps_saving=None, steps_predict=None)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            self.trainer = BaseTrainer(model, BaseDataset(images, torch.zeros(len(images))), training_config=config)
            self.trainer.prepare_training()
        self.block_steps, self.epoch = block, 0

    def block(self, steps: int) -> None:
        assert steps == self.block_steps, "a pythae block is one epoch of its trainer"
        self.epoch += 1
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its progress bar still renders
            self.trainer.train_step(self.epoch)


def optional(name: str, make):
    try:
        return make()
    except ImportError:
        print(f"bench: {name} is not installed; skipped", file=sys.stderr)
        return None


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


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from vibench.__main__ import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def lightning_interleaved(data_overrides: list[str], contenders: dict, block: int, rounds: int, device: str, workdir: Path) -> tuple[dict[str, list[float]], float, bool]:
    """Run vibench's real training loop; after each block of its steps, one block of every other contender."""
    import lightning as L

    from vibench.compiling import CompiledOrEager
    from vibench.run import build, make_datamodule, make_trainer

    times: dict[str, list[float]] = {"vibench": [], **{name: [] for name in contenders}}

    class Interleave(L.Callback):
        def __init__(self):
            self.mark, self.last = None, 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.mark is None:
                self.mark = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step - self.last < block:  # optimizer steps (train.steps_per_call per Lightning step)
                return
            self.last = trainer.global_step
            sync(device)
            times["vibench"].append(time.perf_counter() - self.mark)
            for name, c in contenders.items():
                t = time.perf_counter()
                c.block(block)
                sync(device)
                times[name].append(time.perf_counter() - t)
            if len(times["vibench"]) >= rounds + 1:
                trainer.should_stop = True
            self.mark = time.perf_counter()

    cfg = compose(["+experiment=aevb_mnist", *data_overrides, "logger=none", "images=false", "trainer.max_epochs=1000", f"trainer.accelerator={device}",
                   f"output_dir={workdir}", f"results_dir={workdir}/runs", "resume=null"])
    L.seed_everything(0, verbose=False)
    datamodule = make_datamodule(cfg)
    datamodule.load()
    module = build("inference", cfg.inference, model=build("model", cfg.model), optimizer=build("optimizer", cfg.optimizer))
    trainer, *_ = make_trainer(cfg, workdir, "bench", False, {"limit_val_batches": 0}, extra_callbacks=(Interleave(),))
    trainer.fit(module, datamodule=datamodule)
    # the first block warms up (and includes any compiling): reported apart, left out of the ratios
    return {k: v[1:] for k, v in times.items()}, times["vibench"][0], isinstance(module._reparam_loss, CompiledOrEager)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def eval_rate(data: torch.Tensor, k: int, points: int, device: torch.device, chunk_mib: float, blocks: int = 5) -> dict:
    """vibench's K-sample evaluation of ``points`` test images: sample-points per second, decoder
    GFLOP/s, and its share of the matrix-multiply rate measured right before and after each of
    ``blocks`` blocks (K / blocks samples each), so that a change of CPU speed hits both sides."""
    from vibench.evaluation import CompiledChunk, evaluate_batch, samples_per_chunk
    from vibench.model import GenerativeModel
    from vibench.networks import Decoder, GaussianEncoder

    model = GenerativeModel(Z, Decoder(Z, D, [H])).to(device)
    enc = GaussianEncoder(D, Z, [H]).to(device)
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

    from vibench.guides import gaussian
    from vibench.local_fit import refine
    from vibench.model import GenerativeModel
    from vibench.networks import Decoder, GaussianEncoder
    from vibench.objectives import kl_estimate

    model = GenerativeModel(Z, Decoder(Z, D, [H])).to(device)
    enc = GaussianEncoder(D, Z, [H]).to(device)
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
        step(gaussian(refine(model, x, torch.zeros(len(x), 2, Z, device=device), inner, sgd)), x)

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


def machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device), "cpu": platform.processor() or platform.machine()}
    try:
        info["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


TARGETS = {  # issue 6: each a ratio measured in one run of this command
    "vibench / plain (default Adam)": ("<=", 1.00),
    "pyro / vibench": (">=", 1.45),
    "pythae / vibench": (">=", 1.25),
    "decoder share of matmul rate (IW eval)": (">=", 0.80),
    "SVI step / ((K_inner + 1) VAE steps)": ("<=", 1.10),
    "start-up to first step (s)": ("<=", 10.0),
}


def load_data() -> tuple[torch.Tensor, torch.Tensor, str]:
    import os

    from vibench.data.sources import binarized_mnist

    try:
        s = binarized_mnist(os.environ.get("VIBENCH_DATA_DIR", "data"), str(Path.home() / ".cache" / "vibench"), download=False)
        return s.train, s.test, "static binarized MNIST"
    except Exception as e:  # timing does not depend on the pixel values much
        print(f"bench: MNIST not available ({str(e).splitlines()[0]}); using random binary images", file=sys.stderr)
        g = torch.Generator().manual_seed(0)
        return (torch.rand(50000, D, generator=g) < 0.13).float(), (torch.rand(10000, D, generator=g) < 0.13).float(), "random binary 784-dim"


def pick_device(name: str) -> torch.device:
    """The benchmark's device, or a ValueError saying why it cannot run there (before any work)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a torch device: use cpu or cuda (cuda:N for a given GPU).") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this machine has no CUDA device (torch {torch.__version__}, cuda {torch.version.cuda}). Run it on a GPU machine, or use --device cpu.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here.")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: the benchmark runs on cpu or cuda.")
    return device


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vibench.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--block", type=int, default=100, help="steps per interleaved block")
    parser.add_argument("--rounds", type=int, default=10, help="blocks per contender (after one warm-up block)")
    parser.add_argument("--eval-k", type=int, default=5000, help="K for the evaluation measurement")
    parser.add_argument("--eval-points", type=int, default=500, help="test images for the evaluation measurement")
    parser.add_argument("--chunk-mib", type=float, default=None, help="evaluation chunk budget (default: vibench's config)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="results/bench")
    parser.add_argument("--no-peers", action="store_true", help="skip Pyro and pythae")
    parser.add_argument("--train-compile", default="auto", choices=("auto", "true", "false"), help="vibench's train.compile (default: the config's auto, as a user's run of this length gets); compile time is reported, and excluded from the blocks")
    args = parser.parse_args(argv)
    try:
        device = pick_device(args.device)
    except ValueError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    train, test, data_name = load_data()
    train_dev = train.to(device)
    chunk_mib = args.chunk_mib or compose([]).eval.chunk_mib
    with tempfile.TemporaryDirectory() as tmp:
        contenders = {"plain": PlainLoop(train_dev), "plain_fused_adam": PlainLoop(train_dev, fused=True)}
        if not args.no_peers and device.type == "cpu":
            for name, make in (("pyro", lambda: PyroLoop(train)), ("pythae", lambda: PythaeLoop(train, args.block, f"{tmp}/pythae"))):
                if (c := optional(name, make)) is not None:
                    contenders[name] = c
        rate_before = matmul_gflops(device)
        times, first_block_s, compiled = lightning_interleaved([f"train.compile={args.train_compile}"], contenders, args.block, args.rounds, args.device, Path(tmp))
        rate_after = matmul_gflops(device)
    ratios = {name: quantiles([a / b for a, b in zip(times[name], times["plain"])]) for name in times if name != "plain"}
    per_epoch = {name: statistics.median(v) * (50000 / BATCH / args.block) for name, v in times.items()}
    peers = {f"{p} / vibench": quantiles([a / b for a, b in zip(times[p], times["vibench"])]) for p in ("pyro", "pythae") if p in times}
    rate = statistics.median([rate_before, rate_after, matmul_gflops(device)])
    evaluation = eval_rate(test, args.eval_k, args.eval_points, device, chunk_mib)
    svi = svi_cost(train, 20, 8, device)
    startup = startup_latency(args.device)
    measured = {
        "vibench / plain (default Adam)": ratios["vibench"]["median"],
        "decoder share of matmul rate (IW eval)": evaluation["share_of_matmul_rate"]["median"],
        "SVI step / ((K_inner + 1) VAE steps)": svi["svi_over_inner_plus_1_vae"]["median"],
        "start-up to first step (s)": startup,
        **{k: v["median"] for k, v in peers.items()},
    }
    verdicts = {k: (v, TARGETS[k], (v <= TARGETS[k][1]) if TARGETS[k][0] == "<=" else (v >= TARGETS[k][1])) for k, v in measured.items()}
    result = {"machine": machine(device), "data": data_name, "vibench_train_compile": compiled, "vibench_first_block_s": first_block_s, "block_steps": args.block, "rounds": args.rounds, "matmul_gflops": rate,
              "block_seconds": {k: quantiles(v) for k, v in times.items()}, "epoch_seconds_estimate": per_epoch, "ratio_to_plain": ratios, "peers": peers,
              "evaluation": evaluation, "svi": svi, "startup_to_first_step_s": startup,
              "targets": {k: {"measured": v, "target": f"{t[0]} {t[1]}", "met": ok} for k, (v, t, ok) in verdicts.items()}, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    write(result, Path(args.out))
    return 0


def write(result: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    out.mkdir(parents=True, exist_ok=True)
    stem = f"bench-{result['machine']['device'].split(':')[0]}-{time.strftime('%Y%m%d-%H%M%S')}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    m = result["machine"]
    lines = [f"# vibench benchmark, {result['created']}", "", f"Machine: {m['cpu']}{', ' + m['gpu'] if 'gpu' in m else ''}; torch {m['torch']}, {m['threads']} threads, device {m['device']}. "
             f"Data: {result['data']}. Matrix-multiply rate measured in this run: {result['matmul_gflops']:.0f} GFLOP/s (float32).", "",
             f"Training, interleaved blocks of {result['block_steps']} steps ({result['rounds']} rounds), time relative to the plain loop in the adjacent block. "
             f"vibench {'with' if result['vibench_train_compile'] else 'without'} train.compile (its first, excluded block took {result['vibench_first_block_s']:.1f} s):", "",
             "| contender | ratio to plain (median) | IQR | est. seconds per epoch |", "|---|---|---|---|"]
    for name, q in result["ratio_to_plain"].items():
        lines.append(f"| {name} | {q['median']:.3f} | {q['q1']:.3f} to {q['q3']:.3f} | {result['epoch_seconds_estimate'][name]:.2f} |")
    lines.append(f"| plain | 1.000 | | {result['epoch_seconds_estimate']['plain']:.2f} |")
    e = result["evaluation"]
    lines += ["", f"IW evaluation, K = {e['k']} on {e['points']} test images: {e['sample_points_per_s']:.3g} sample-points/s, decoder at {e['decoder_gflops']:.0f} GFLOP/s = "
              f"{e['share_of_matmul_rate']['median']:.0%} of the matmul rate measured around each of its {e['blocks']} blocks (IQR {e['share_of_matmul_rate']['q1']:.0%} to {e['share_of_matmul_rate']['q3']:.0%}) ({'compiled, ' + format(e['compile_and_warmup_s'], '.0f') + ' s to compile' if e['compiled'] else 'eager'}); chunks of {e['chunk_samples']} samples ({e['chunk_mib']} MiB budget); "
              f"full test set at K = 5000: {e['full_test_k5000_minutes']:.1f} min (extrapolated).", "",
              "| target | measured | target | met |", "|---|---|---|---|"]
    for k, v in result["targets"].items():
        lines.append(f"| {k} | {v['measured']:.3f} | {v['target']} | {'yes' if v['met'] else '**no**'} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    table = Table(title=f"vibench bench ({m['device']}, {m['threads']} threads)")
    for col in ("target", "measured", "target", "met"):
        table.add_column(col)
    for k, v in result["targets"].items():
        table.add_row(k, f"{v['measured']:.3f}", v["target"], "[green]yes[/]" if v["met"] else "[red]no[/]")
    Console().print(table)
    print(f"bench: {out / stem}.md and .json")


if __name__ == "__main__":
    sys.exit(main())
