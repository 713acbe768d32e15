"""Validation and training ELBO per epoch: pythae's own trainer against vibench, same protocol.

    python results/anchors/pythae_vae_mnist/plot_pythae_vs_vibench.py PYTHAE_LOSSES_CSV VIBENCH_CURVE_CSV OUT_PNG

PYTHAE_LOSSES_CSV is what run_pythae_vae.py writes (epoch from 1, losses = negative ELBOs);
VIBENCH_CURVE_CSV is what `python -m vibench.curves RUN` writes (epoch from 0, ELBOs). Epoch e of
pythae is epoch e - 1 of vibench: both are the model after e passes over the data. The lower
panel shows vibench minus pythae, in nats.
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def columns(path: str, epoch_shift: int, keys: dict[str, tuple[str, float]]) -> dict[str, dict[int, float]]:
    out = {name: {} for name in keys}
    for row in csv.DictReader(open(path)):
        for name, (key, sign) in keys.items():
            if row.get(key) not in (None, "", "nan"):
                out[name][int(float(row["epoch"])) + epoch_shift] = sign * float(row[key])
    return out


def main(pythae_csv: str, vibench_csv: str, out_png: str) -> None:
    p = columns(pythae_csv, 0, {"val": ("eval_loss", -1.0), "train": ("train_loss", -1.0)})
    v = columns(vibench_csv, 1, {"val": ("val/elbo", 1.0), "train": ("train/elbo_epoch", 1.0)})
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, height_ratios=[3, 1])
    for name, style in (("val", "-"), ("train", "--")):
        for src, label, colour in ((p, "pythae 0.1.2 BaseTrainer", "tab:orange"), (v, "vibench", "tab:blue")):
            e = sorted(src[name])
            top.plot(e, [src[name][i] for i in e], style, color=colour, lw=1, label=f"{label}, {name} ELBO")
        common = sorted(set(p[name]) & set(v[name]))
        bottom.plot(common, [v[name][i] - p[name][i] for i in common], style, color="k", lw=0.8, label=f"{name}: vibench - pythae")
    top.set_ylim(-105, -88)
    top.set_ylabel("ELBO per image (nats)")
    top.legend(fontsize=8)
    top.grid(alpha=0.3)
    bottom.axhline(0, color="grey", lw=0.5)
    bottom.set_ylim(-1.5, 1.5)
    bottom.set_xlabel("epoch (passes over the 50k training images)")
    bottom.set_ylabel("difference (nats)")
    bottom.legend(fontsize=8)
    top.set_title("pythae's VAE protocol (lr 1e-4, batch 100, MultiStepLR): pythae's trainer and vibench")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
