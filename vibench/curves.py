"""``python -m vibench.curves RUN_FOLDER [RUN_FOLDER ...]``: learning curves from runs' logs.

One run: its learning curve. Several runs (``--out DIR``, optionally ``--labels ...``): their
validation ELBOs in one figure.

Reads the epoch-level history that a run logged (:mod:`vibench.run_logs`: ``epochs.jsonl``, which
holds every epoch a checkpoint holds, W&B's offline run file or Lightning's CSV log) from the
run's output folder, and writes ``curve.csv`` (one row per epoch: epoch, step, and every
epoch-level metric: ``val/elbo``, ``train/elbo_epoch``, ``train/lr``, ...) and ``curve.png``.
Given several run folders, it writes ``curve-<label>.csv`` for each and ``compare.png``: their
validation (solid) and training (dashed) ELBOs against the epoch, one colour per run. A circle
marks the model a finished run tested (the best validation epoch or the last; from the
``record.json`` in its folder, or from ``--records``). With ``--at EPOCH ...`` it also prints the runs' validation ELBOs
at those epochs, each a mean over the epochs around it, with each run's difference from the first
(:mod:`vibench.matched_epochs`), and with ``--out`` also writes it to ``matched.csv``; given
``--at`` and no ``--out``, it prints that table alone and writes nothing. Works offline: no W&B account or network is needed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from vibench.epoch_log import EPOCH_KEYS
from vibench.records import read_record
from vibench.run_logs import epoch_curve, history


def missing_epochs(curve: list[dict]) -> list[int]:
    """Epochs between a curve's first and last that its logs lack (a run killed after an epoch's
    checkpoint and before its logger wrote that epoch resumes at the next one, leaving a gap)."""
    epochs = {r["epoch"] for r in curve}
    return sorted(set(range(min(epochs), max(epochs) + 1)) - epochs) if epochs else []


def gap_message(label: str, curve: list[dict]) -> str | None:
    """A warning naming the epochs that ``label``'s curve lacks, or None; at most 10 listed."""
    gaps = missing_epochs(curve)
    if not gaps:
        return None
    shown = ", ".join(map(str, gaps[:10])) + (f" and {len(gaps) - 10} more" if len(gaps) > 10 else "")
    return f"curves: {label}'s logs lack epoch{'s' if len(gaps) > 1 else ''} {shown}; the curve joins its neighbours there"


def summary(curve: list[dict]) -> str:
    """``3280 epochs; validation ELBO best -97.73 at epoch 400, last -98.95``: the curve in a line
    (epochs counted as trained, the x of the figure)."""
    val = [(r["epoch"] + 1, r["val/elbo"]) for r in curve if "val/elbo" in r]
    if not val:
        return f"{len(curve)} epochs; no validation ELBO"
    best = max(val, key=lambda p: p[1])
    return f"{len(curve)} epochs; validation ELBO best {best[1]:.2f} at epoch {best[0]}, last {val[-1][1]:.2f}"


def tested_point(run: Path, curve: list[dict]) -> tuple[int, float, str] | None:
    """Where the model a run tested sits on its validation curve, from the ``record.json`` that a
    completed run leaves in its folder, or from a record file given as ``run`` (a curve CSV has no
    folder: ``--records``): ``(epochs of training behind it, its validation ELBO, a label)``, or
    None (a run still training, or no validation that epoch). The curve's x is the number of epochs
    trained (epoch index + 1), as the record's ``evaluated_checkpoint.epoch``."""
    try:
        record = read_record(run if run.suffix == ".json" else run / "record.json")
    except (OSError, json.JSONDecodeError):
        return None
    return tested_on(record, curve)


def tested_on(record: dict, curve: list[dict]) -> tuple[int, float, str] | None:
    """:func:`tested_point` from a loaded record."""
    tested = record.get("evaluated_checkpoint") or {}
    if record.get("status") != "completed" or tested.get("epoch") is None:
        return None
    epochs = int(tested["epoch"])
    row = next((r for r in curve if r["epoch"] + 1 == epochs and "val/elbo" in r), None)
    if row is None:
        return None
    how = {"best": "the best validation ELBO", "last": "the last epoch", "given": "the given checkpoint"}.get(tested.get("select"), str(tested.get("select")))
    return epochs, float(row["val/elbo"]), f"tested: {how}, epoch {epochs}"


def record_fits(rec: dict, tested: tuple[int, float, str] | None) -> bool:
    """Whether a record given for a curve CSV is that run's: the validation ELBO it states for its
    tested model (``evaluated_checkpoint.val_elbo`` for the best epoch, the last epoch's
    ``metrics["val/elbo"]`` for the last) is the curve's at that epoch, to 1e-3 nats."""
    if tested is None:
        return False
    ckpt = rec["evaluated_checkpoint"]
    stated = ckpt.get("val_elbo", rec.get("metrics", {}).get("val/elbo") if ckpt.get("select") == "last" else None)
    return stated is None or abs(float(stated) - tested[1]) < 1e-3


def mark_tested(ax, tested: tuple[int, float, str] | None, colour: str = "black", prefix: str = "") -> None:
    if tested is not None:
        ax.plot([tested[0]], [tested[1]], ls="none", marker="o", ms=8, mfc="none", mew=1.5, color=colour, label=prefix + tested[2], zorder=5)


def write_csv(curve: list[dict], path: Path) -> None:
    """One row per epoch: epoch, step and the epoch-level metrics the run logged."""
    keys = ["epoch", "step", *[k for k in EPOCH_KEYS if any(k in r for r in curve)]]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(curve)


def elbo_axes(ax, *series: list[float]) -> None:
    """Epochs across, ELBO (nats per image) up. Each series is one curve's values in epoch order;
    the axis starts at the lowest value any curve takes after its first tenth of epochs, so that
    the first epochs do not flatten the rest, a curve that falls late (overfitting) stays in view,
    and a short run's whole curve does too."""
    series = tuple(s for s in series if s)
    if series:
        low = min(min(s[len(s) // 10 :]) for s in series)
        ax.set_ylim(low - 0.2, max(max(s) for s in series) + 0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO, nats per image")
    ax.grid(alpha=0.3)


def write(curve: list[dict], out: Path, title: str, tested: tuple[int, float, str] | None = None) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    write_csv(curve, out / "curve.csv")
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    values = []  # one list per curve
    for key, label in (("train/elbo_epoch", "training ELBO (epoch mean)"), ("val/elbo", "validation ELBO")):
        points = [(r["epoch"] + 1, r[key]) for r in curve if key in r]
        if points:
            ax.plot(*zip(*points), label=label)
            values.append([v for _, v in points])
    mark_tested(ax, tested)
    elbo_axes(ax, *values)
    if any("train/lr" in r for r in curve):
        lr = ax.twinx()
        lr.plot([r["epoch"] + 1 for r in curve if "train/lr" in r], [r["train/lr"] for r in curve if "train/lr" in r], color="grey", lw=0.8, ls=":", label="learning rate")
        lr.set_yscale("log")
        lr.set_ylabel("learning rate")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "curve.png")
    plt.close(fig)
    return out / "curve.csv", out / "curve.png"


def write_comparison(curves: dict[str, list[dict]], out: Path, title: str, tested: dict[str, tuple[int, float, str] | None] | None = None) -> Path:
    """``curve-<label>.csv`` per run and ``compare.png``: validation (solid) and training (dashed)
    ELBO of every run against the epoch, and a circle on the model each finished run tested. The
    legend, beside the axes, names each run's colour once and the two line styles once."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.lines import Line2D

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=110)
    values = []  # one list per curve
    for (label, curve), colour in zip(curves.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10):
        write_csv(curve, out / f"curve-{label}.csv")
        for key, style in (("val/elbo", "-"), ("train/elbo_epoch", "--")):
            points = [(r["epoch"] + 1, r[key]) for r in curve if key in r]
            if points:  # a run's colour is named once, on its validation curve (or its training one, if that is all it has)
                named = style == "-" or not any("val/elbo" in r for r in curve)
                ax.plot(*zip(*points), ls=style, color=colour, lw=1.0, label=label if named else None)
                values.append([v for _, v in points])
        mark_tested(ax, (tested or {}).get(label), colour, f"{label}: ")
    elbo_axes(ax, *values)
    styles = [Line2D([], [], color="black", lw=1.0, ls="-", label="validation"), Line2D([], [], color="black", lw=1.0, ls="--", label="training")]
    # beside the axes, not on them: with several runs the legend would hide a curve
    ax.legend(handles=ax.get_legend_handles_labels()[0] + styles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "compare.png")
    plt.close(fig)
    return out / "compare.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vibench.curves", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="run", help="a run's output folder (outputs/DATE/TIME, or multirun/DATE/TIME/N), or a curve CSV this command wrote; several: compare.png")
    parser.add_argument("--out", default=None, help="where the CSV and PNG files go (default: the run folder; with several runs, required)")
    parser.add_argument("--labels", nargs="+", default=None, help="one name per run for the comparison (default: run1, run2, ...)")
    parser.add_argument("--records", nargs="+", default=None, metavar="RECORD",
                        help="one run record per run, whose tested model is circled (for a curve CSV, which has no record.json beside it); '-' for a run's own")
    parser.add_argument("--title", default=None)
    parser.add_argument("--at", nargs="+", type=int, default=None, metavar="EPOCH",
                        help="also print each run's metric at these epochs (logged indices, from 0), a mean over --window epochs centred on each")
    parser.add_argument("--window", type=int, default=11, help="epochs averaged around each --at epoch (odd; default 11)")
    parser.add_argument("--metric", default="val/elbo", help="the epoch-level metric --at reads (default val/elbo; e.g. train/elbo_epoch)")
    args = parser.parse_args(argv)
    if len(args.runs) > 1 and args.out is None and args.at is None:
        print("curves: several runs need --out DIR for their comparison (or --at EPOCH ... for a table alone)", file=sys.stderr)
        return 2
    from vibench.matched_epochs import check_window

    try:
        check_window(args.window)
    except ValueError as e:
        print(f"curves: --{e}", file=sys.stderr)
        return 2
    if args.out is None and args.at is None and Path(args.runs[0]).suffix == ".csv":
        print("curves: a curve CSV has no run folder to write into; give --out DIR", file=sys.stderr)
        return 2
    labels = args.labels or [f"run{i + 1}" for i in range(len(args.runs))]
    if len(labels) != len(args.runs) or any(not l.replace("-", "").replace("_", "").replace(".", "").isalnum() for l in labels):
        print(f"curves: give one --labels name per run ({len(args.runs)}), of letters, digits, '-', '_' or '.'", file=sys.stderr)
        return 2
    records = args.records or ["-"] * len(args.runs)
    missing = [r for r in records if r != "-" and not Path(r).is_file()]
    if len(records) != len(args.runs) or missing:
        print(f"curves: give one --records file per run ({len(args.runs)}), or '-' for a run's own record.json; missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    curves, tested = {}, {}
    for label, run, record in zip(labels, args.runs, records):
        try:
            curve = epoch_curve(history(Path(run)))
        except (FileNotFoundError, ValueError) as e:
            print(f"curves: {e}", file=sys.stderr)
            return 2
        if not curve:
            print(f"curves: {run}'s logs hold no epoch-level metrics", file=sys.stderr)
            return 2
        try:  # read once: its tested model, and whether it is this run's
            given = None if record == "-" else read_record(record)
        except json.JSONDecodeError:
            given = {}
        given = given if given is None or isinstance(given, dict) else {}  # not a record: refused below
        curves[label], tested[label] = curve, tested_point(Path(run), curve) if given is None else tested_on(given, curve)
        if given is not None and not record_fits(given, tested[label]):
            print(f"curves: {record} names no tested model on {label}'s validation curve (not a completed run's record, or not this run's)", file=sys.stderr)
            return 2
        if (gap := gap_message(run if len(args.runs) == 1 else label, curve)) is not None:
            print(gap, file=sys.stderr)
    if args.at is not None:
        from vibench.matched_epochs import matched_rows, print_matched, write_matched

        if not any(args.metric in r for c in curves.values() for r in c):
            print(f"curves: no run logged {args.metric!r}; epoch-level metrics are named like val/elbo, train/elbo_epoch", file=sys.stderr)
            return 2
        rows = matched_rows(curves, args.at, args.window, args.metric)
        print_matched(rows, args.window, args.metric)
        if args.out is None:  # the table alone, as asked
            return 0
        print(f"curves: the table -> {write_matched(rows, Path(args.out) / 'matched.csv')}")
    if len(curves) == 1:
        ((_, curve),) = curves.items()
        paths = write(curve, Path(args.out) if args.out else Path(args.runs[0]), args.title or args.runs[0], tested[labels[0]])
        print(f"curves: {summary(curve)} -> {paths[0]}, {paths[1]}")
        return 0
    png = write_comparison(curves, Path(args.out), args.title or " vs ".join(labels), tested)
    for label, curve in curves.items():
        print(f"curves: {label}: {summary(curve)}")
    print(f"curves: -> {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
