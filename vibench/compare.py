"""``python -m vibench.compare A B``: how much better is A than B, and how sure are we.

A and B are each a record, a folder of records, a multirun folder or a sweep id, or several of
these joined by commas. Their records are grouped by configuration: the settings that vary within
A or within B, except the seed and ``evaluate`` (a sweep over ``latent=2,5`` gives one group per
latent size; a run that re-tested a checkpoint with ``evaluate=`` is a run of the configuration
that trained it). Of two records of one configuration and seed, the later is compared and the row
names the other. Groups with equal values are matched;
a side with a single configuration is matched with every group of the other. For each matched
pair and each seed both ran (or, for one run against one run, whatever their seeds), the
difference of the test metric (``--metric``, default ``iw_ll``) is paired point by point when
both runs were evaluated on the same test points (same ``per_point.test_index_hash``), or on
the points they share when their sets overlap (a run on ``dataset.test_subset`` against one on
the whole split of the same dataset variant), else unpaired, and says so. With several seeds,
an interval on the seed means follows (:mod:`vibench.paired`). Exit codes: 0 compared; 2 bad
input or nothing to compare.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vibench import points
from vibench.errors import VibenchError
from vibench.paired import paired_difference, seed_interval, unpaired_difference
from vibench.resume import is_seed_key, result_config
from vibench.selection import collect_records


# Not a configuration: which checkpoint a run tested. A run that tests a checkpoint with
# ``evaluate=`` has the settings the checkpoint was trained with (it refuses others), so it belongs
# with the runs of that configuration, e.g. one seed of a sweep re-tested on other test points.
NOT_CONFIGURATION_KEYS = ("evaluate",)


def varying_keys(flats: list[dict]) -> set[str]:
    """Keys of flattened configs (:func:`~vibench.resume.result_config`) with more than one value
    among them, but the seeds and :data:`NOT_CONFIGURATION_KEYS`."""
    keys = set().union(*flats) if flats else set()
    return {k for k in keys if not is_seed_key(k) and k not in NOT_CONFIGURATION_KEYS and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1}


def groups(records: list[dict], flats: list[dict], keys: list[str]) -> tuple[dict[tuple, dict[int, dict]], dict[str, list[str]]]:
    """``{(value of each key): {seed: record}}`` (``flats[i]`` is ``records[i]``'s flattened config);
    of two records of one seed, the later one. Also ``{kept run id: [the run ids it superseded]}``."""
    out: dict[tuple, dict[int, dict]] = {}
    superseded: dict[str, list[str]] = {}
    for rec, flat in sorted(zip(records, flats), key=lambda rf: rf[0].get("created", "")):
        group = out.setdefault(tuple(flat.get(k) for k in keys), {})
        if (old := group.get(flat.get("seed"))) is not None:
            superseded[rec["run_id"]] = [*superseded.pop(old["run_id"], []), old["run_id"]]
        group[flat.get("seed")] = rec
    return out, superseded


def left_out_note(row: dict, superseded: dict[str, list[str]]) -> dict:
    """``row`` with a note naming the older records of its runs' seeds that were left out."""
    older = [f"{run} (older than {kept})" for kept in (row.get("a_run"), row.get("b_run")) for run in superseded.get(kept, [])]
    if not older:
        return row
    return {**row, "note": "; ".join(filter(None, (row.get("note"), f"left out, the same configuration and seed: {', '.join(older)}")))}


def compare_runs(a: dict, b: dict, metric: str) -> dict:
    """One seed's comparison of two records: paired on the same points, else unpaired."""
    pa, pb = points.read(a), points.read(b)
    row = {"a": a["metrics"].get(f"test/{metric}"), "b": b["metrics"].get(f"test/{metric}"), "a_run": a["run_id"], "b_run": b["run_id"]}
    if pa is None or pb is None or metric not in pa or metric not in pb:
        missing = [r["run_id"] for r, p in ((a, pa), (b, pb)) if p is None or metric not in p]
        return {**row, "note": f"no per-point file for {', '.join(missing)}: no interval"}
    var = f"{metric}_mc_var"
    if a["per_point"]["test_index_hash"] == b["per_point"]["test_index_hash"]:
        return {**row, **paired_difference(pa[metric], pb[metric], pa.get(var), pb.get(var)).as_dict()}
    variant = lambda r: (r.get("dataset") or {}).get("variant")  # noqa: E731
    common, ia, ib = np.intersect1d(pa["index"], pb["index"], assume_unique=True, return_indices=True)
    if len(common) >= 2 and variant(a) == variant(b):  # e.g. a run on a test subset against one on the whole split
        cut = lambda p, i: None if p.get(var) is None else p[var][i]  # noqa: E731
        diff = paired_difference(pa[metric][ia], pb[metric][ib], cut(pa, ia), cut(pb, ib))
        note = f"paired on the {len(common)} test points both evaluated (A has {len(pa['index'])}, B {len(pb['index'])}); A and B are the means on them"
        return {**row, "a": float(pa[metric][ia].mean()), "b": float(pb[metric][ib].mean()), **diff.as_dict(), "note": note}
    return {**row, **unpaired_difference(pa[metric], pb[metric]).as_dict(), "note": "different test points: unpaired"}


def compare(side_a: list[dict], side_b: list[dict], metric: str = "iw_ll") -> list[dict]:
    """Rows of comparisons: per matched configuration, one per shared seed, then one across seeds."""
    side_a = [r for r in side_a if r.get("status") == "completed" and r.get("metrics")]
    side_b = [r for r in side_b if r.get("status") == "completed" and r.get("metrics")]
    if not side_a or not side_b:
        raise VibenchError("each side needs at least one completed run record.")
    flat_a, flat_b = ([result_config(r.get("config") or {}) for r in side] for side in (side_a, side_b))
    keys = sorted(varying_keys(flat_a) | varying_keys(flat_b))
    (ga, older_a), (gb, older_b) = groups(side_a, flat_a, keys), groups(side_b, flat_b, keys)
    if len(ga) == 1 or len(gb) == 1:
        pairs = [(ka, kb) for ka in ga for kb in gb]
    else:
        pairs = [(k, k) for k in ga if k in gb]
    if not pairs:
        raise VibenchError(f"no configuration of A matches one of B on {', '.join(keys)}: compare sweeps over the same values.")
    # name groups by the settings the user overrode (latent=2), not the ones interpolated from them (model.latent=2)
    overridden = {o.split("=", 1)[0].lstrip("+~") for r in side_a + side_b for o in r.get("overrides") or []}
    shown = [i for i, k in enumerate(keys) if k in overridden] or list(range(len(keys)))
    rows = []
    for ka, kb in pairs:
        label = ", ".join(f"{keys[i]}={ka[i]}" if ka[i] == kb[i] else f"{keys[i]}={ka[i]}/{kb[i]}" for i in shown) or "all"
        a, b = ga[ka], gb[kb]
        for seed in sorted(set(a) & set(b), key=str):
            rows.append(left_out_note({"configuration": label, "seed": seed, **compare_runs(a[seed], b[seed], metric)}, {**older_a, **older_b}))
        if len(a) == len(b) == 1 and a.keys() != b.keys():  # one run against one run of another seed
            ((sa, ra),), ((sb, rb),) = a.items(), b.items()
            row = compare_runs(ra, rb, metric)
            note = "; ".join(filter(None, (row.get("note"), "different seeds: the interval leaves out seed-to-seed spread")))
            rows.append(left_out_note({"configuration": label, "seed": f"{sa} vs {sb}", **row, "note": note}, {**older_a, **older_b}))
        across = seed_interval({s: r["metrics"][f"test/{metric}"] for s, r in a.items()}, {s: r["metrics"][f"test/{metric}"] for s, r in b.items()})
        if across is not None:
            rows.append({"configuration": label, "seed": f"{len(a)} vs {len(b)} seeds", "a": sum(r["metrics"][f"test/{metric}"] for r in a.values()) / len(a),
                         "b": sum(r["metrics"][f"test/{metric}"] for r in b.values()) / len(b), **across.as_dict()})
    if not rows:
        seeds_a = sorted({str(s) for ka, _ in pairs for s in ga[ka]})
        seeds_b = sorted({str(s) for _, kb in pairs for s in gb[kb]})
        raise VibenchError(f"A's seeds ({', '.join(seeds_a)}) and B's ({', '.join(seeds_b)}) have none in common, and a side with one seed gives no "
                           "interval across seeds: run the same seeds on both sides, or at least two on each.")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vibench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", help="A: a record, a folder of records, a multirun folder or a sweep id, or several joined by commas")
    parser.add_argument("b", help="B: the same, compared with A (differences are A - B)")
    parser.add_argument("--metric", default="iw_ll", choices=("iw_ll", "elbo"), help="the per-point test metric (default iw_ll)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH ('-': print JSON instead of the table)")
    parser.add_argument("--plot", metavar="PATH", help="a figure of the differences with their 95%% intervals (PNG)")
    args = parser.parse_args(argv)
    from vibench.report_console import print_error

    try:
        rows = compare(collect_records(args.a.split(",")), collect_records(args.b.split(",")), args.metric)
    except VibenchError as e:
        print_error(str(e))
        return 2
    if args.json == "-":
        print(json.dumps(rows, indent=2, default=str))
    else:
        print_table(rows, args)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2, default=str) + "\n")
    if args.plot:
        difference_plot(rows, args.metric, f"A − B: {side_name(args.a)} − {side_name(args.b)}", args.plot)
    return 0


def side_name(arg: str) -> str:
    """A side as the title names it: the path, or for several joined by commas, how many and their
    common folder (``--json`` names each row's runs)."""
    import os

    parts = arg.split(",")
    if len(parts) == 1:
        return arg
    try:
        folder = os.path.commonpath(parts)
    except ValueError:  # absolute and relative paths mixed
        folder = ""
    return f"{len(parts)} paths" + (f" in {folder}" if folder else "")


def print_table(rows: list[dict], args) -> None:
    from rich.console import Console
    from rich.table import Table

    def f(x, d=3):
        return "" if x is None else f"{x:.{d}f}"

    table = Table(title=f"vibench compare: A = {side_name(args.a)}, B = {side_name(args.b)}, test/{args.metric} (nats; A − B > 0: A is better)")
    for col in ("configuration", "seed", "A", "B", "A − B", "se", "95% interval", "MC se", "how", "n"):
        table.add_column(col, justify="left" if col in ("configuration", "seed", "how") else "right")
    for r in rows:
        interval = f"[{f(r['low'])}, {f(r['high'])}]" if "low" in r else ""
        how = r.get("kind", "") + (f" ({r['note']})" if r.get("note") else "")
        table.add_row(r["configuration"], str(r["seed"]), f(r["a"]), f(r["b"]), f(r.get("difference")), f(r.get("stderr")), interval, f(r.get("mc_stderr")), how, str(r.get("n", "")))
    Console(width=None if Console().is_terminal else 200).print(table)


def difference_plot(rows: list[dict], metric: str, title: str, path: str) -> None:
    """A − B per configuration with its 95% interval: across seeds where there are several, else per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if "low" in r and (r["kind"].endswith("seeds") or not any(o["configuration"] == r["configuration"] and o.get("kind", "").endswith("seeds") for o in rows))]
    labels = [f"{r['configuration']}" + ("" if r["kind"].endswith("seeds") else f" (seed {r['seed']})") for r in shown]
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(shown) + 1.4))
    y = range(len(shown))
    diffs = [r["difference"] for r in shown]
    ax.errorbar(diffs, y, xerr=[[d - r["low"] for d, r in zip(diffs, shown)], [r["high"] - d for d, r in zip(diffs, shown)]], fmt="o", capsize=3)
    ax.axvline(0.0, color="grey", lw=0.8, ls=":")
    ax.set_yticks(list(y), labels)
    ax.set_xlabel(f"difference in test/{metric} (nats), 95% interval")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
