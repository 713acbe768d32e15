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
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from vibench.bench_costs import eval_rate, matmul_gflops, quantiles, startup_latency, svi_cost, sync
from vibench.bench_contenders import BATCH, D, PlainLoop, PyroLoop, PythaeLoop, optional
from vibench.records import cpu_load




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
    from vibench.run import build, make_datamodule
    from vibench.trainer_build import make_trainer

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
    return {k: v[1:] for k, v in times.items()}, times["vibench"][0], isinstance(module._loss, CompiledOrEager)


def machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device), "cpu": platform.processor() or platform.machine()}
    try:
        info["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return {**info, **cpu_load()}  # the load other work put on the cores as the benchmark began


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
    lines = [f"# vibench benchmark, {result['created']}", "", f"Machine: {m['cpu']}{', ' + m['gpu'] if 'gpu' in m else ''}; torch {m['torch']}, {m['threads']} threads, device {m['device']}; "
             f"load average {m.get('load_at_start')} on {m.get('cpu_count')} cores at the start. "
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
