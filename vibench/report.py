"""``python -m vibench.report [records or sweep folders ...] --out DIR``: a sweep report.

Writes ``DIR/index.html``, one self-contained page (figures embedded), and the figures as PNGs:
test ELBO and IW log-likelihood against each swept setting (latent size, L, k, schedule, method),
the ELBO-to-log-likelihood gap, wall-clock and throughput, VAE vs SVI when both are present, the
regression-check verdicts, and the configuration behind every point. Readable offline, without
W&B; ``--wandb`` also logs the table and figures to a W&B run (offline unless ``--wandb-mode online``).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev

from vibench.check import DEFAULT_REFERENCES
from vibench.selection import collect_records
from vibench.errors import VibenchError
from vibench.references import check, load_references

# Settings a sweep varies, how to read them from a record, and how to label them.
DIMENSIONS = {
    "latent": ("latent size", lambda r: r["config"].get("latent")),
    "mc_samples": ("Monte Carlo samples L", lambda r: r["config"].get("mc_samples")),
    "k": ("IWAE samples k", lambda r: _objective(r).get("samples") if _objective(r).get("name") == "iwae" else None),
    "objective": ("objective", lambda r: _objective(r).get("name")),
    "family": ("posterior family", lambda r: (r.get("inference") or {}).get("family", "gaussian")),
    "prior": ("prior", lambda r: (r.get("inference") or {}).get("prior", "standard_normal")),
    "annealing": ("KL schedule", lambda r: _schedule(r)),
    "method": ("inference method", lambda r: r.get("method") if r.get("method") != "svi" else f"svi ({r['inference'].get('svi_flavour')})"),
    "variant": ("dataset variant", lambda r: r["dataset"]["variant"]),
}
NUMERIC = {"latent", "mc_samples", "k"}


def _objective(rec: dict) -> dict:
    return (rec.get("inference") or {}).get("objective") or {}


def _schedule(rec: dict) -> str:
    a = (rec.get("inference") or {}).get("annealing") or {"name": "constant", "beta": 1.0}
    if a.get("name") in ("constant", "none"):
        return "none" if a.get("beta", 1.0) == 1.0 else f"beta={a['beta']}"
    return a["name"]


def point(rec: dict) -> dict:
    m, t = rec.get("metrics", {}), rec.get("timing", {})
    return {
        **{d: f(rec) for d, (_, f) in DIMENSIONS.items()},
        "seed": rec["config"].get("seed"), "run_id": rec["run_id"], "overrides": " ".join(rec.get("overrides", [])),
        "elbo": m.get("test/elbo"), "iw": m.get("test/iw_ll"), "elbo_se": m.get("test/elbo_stderr"), "iw_se": m.get("test/iw_ll_stderr"),
        "train_s": t.get("train_s"), "test_s": t.get("test_s"), "throughput": t.get("train_examples_per_s"), "K": rec.get("iw_samples"),
    }


def aggregate(points: list[dict], x: str, series_dims: list[str]) -> dict[str, list[tuple]]:
    """``{series label: [(x, elbo, elbo_err, iw, iw_err, n_seeds), ...]}``; errors are the standard
    deviation across seeds when there are several, else the record's standard error over test points."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for p in points:
        groups[(tuple(p[d] for d in series_dims), p[x])].append(p)
    series: dict[str, list[tuple]] = defaultdict(list)
    for (skey, xv), ps in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1] if isinstance(kv[0][1], (int, float)) else str(kv[0][1]))):
        label = ", ".join(f"{d}={v}" for d, v in zip(series_dims, skey)) or "runs"

        def stat(key: str):
            vals = [p[key] for p in ps]
            if len(vals) > 1:  # the spread another seed would show
                return mean(vals), stdev(vals)
            return vals[0], ps[0][f"{key}_se"] or 0.0

        e, ee = stat("elbo")
        i, ie = stat("iw")
        series[label].append((xv, e, ee, i, ie, len(ps)))
    return series


def figure_bounds(points, x, series_dims, gap: bool = False):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4.2), dpi=110)
    numeric = x in NUMERIC
    series = aggregate(points, x, series_dims)
    for n, (label, rows) in enumerate(series.items()):
        xs = [r[0] for r in rows] if numeric else [str(r[0]) for r in rows]
        colour = f"C{n % 10}"
        solid, dashed = ("o-", "s--") if numeric else ("o", "s")  # categories are not ordered: no connecting lines
        if gap:
            what = "IW log-likelihood - ELBO"
            ax.errorbar(xs, [r[3] - r[1] for r in rows], fmt=solid, color=colour, label=what if label == "runs" else f"{what} ({label})", capsize=3)
        else:
            ax.errorbar(xs, [r[3] for r in rows], yerr=[r[4] for r in rows], fmt=solid, color=colour, capsize=3, label=f"IW log-likelihood ({label})")
            ax.errorbar(xs, [r[1] for r in rows], yerr=[r[2] for r in rows], fmt=dashed, color=colour, capsize=3, alpha=0.8, label=f"ELBO ({label})")
    if numeric:
        values = sorted({p[x] for p in points})
        if len(values) > 2 and values[0] > 0 and values[-1] / values[0] >= 10:
            ax.set_xscale("log")
        ax.set_xticks(values, labels=[str(v) for v in values])
        ax.minorticks_off()
    ax.set_xlabel(DIMENSIONS[x][0])
    ax.set_ylabel("IW log-likelihood - ELBO (nats)" if gap else "test bound (nats per image)")
    seeds = max(r[5] for rows in series.values() for r in rows)
    err = f"sd over {seeds} seeds" if seeds > 1 else "standard error over test points"
    ax.set_title(("ELBO-to-log-likelihood gap" if gap else "Test bounds") + f" vs {DIMENSIONS[x][0]}" + ("" if gap else f"\n(error bars: {err}; K = {points[0]['K']})"), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def run_labels(points: list[dict], width: int = 38) -> list[str]:
    """Each run's label: the overrides that differ between the runs (the shared ones say nothing
    here), wrapped to ``width`` characters, never cut; ``(defaults)`` for a run without overrides."""
    import textwrap

    shared = set.intersection(*(set(p["overrides"].split()) for p in points)) if len(points) > 1 else set()
    labels = []
    for p in points:
        own = " ".join(o for o in p["overrides"].split() if o not in shared)
        labels.append(textwrap.fill(own, width, break_long_words=True) if own else "(defaults)" if not p["overrides"] else "(shared settings)")
    return labels


def figure_timing(points, variant: str):
    import matplotlib.pyplot as plt

    labels = run_labels(points)
    lines = sum(label.count("\n") + 1 for label in labels)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, max(2.5, 0.3 * lines + 1.2)), dpi=110, sharey=True)
    y = range(len(points))
    a.barh(y, [p["throughput"] or 0 for p in points], color="C0")
    a.set_xlabel("training throughput (examples / s)")
    b.barh(y, [p["train_s"] or 0 for p in points], color="C1", label="training")
    b.barh(y, [p["test_s"] or 0 for p in points], left=[p["train_s"] or 0 for p in points], color="C2", label="evaluation")
    b.set_xlabel("wall-clock (s)")
    b.legend(fontsize=7)
    a.set_yticks(list(y), labels=labels, fontsize=7)
    fig.suptitle(f"Wall-clock and throughput per run ({variant})", fontsize=10)
    fig.tight_layout()
    return fig


def png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def build_figures(points: list[dict]) -> dict[str, bytes]:
    """Figures per dataset variant (variants are not comparable, so never share an axis)."""
    figures = {}
    variants = sorted({p["variant"] for p in points})
    for variant in variants:
        mine = [p for p in points if p["variant"] == variant]
        suffix = f"_{variant}" if len(variants) > 1 else ""
        varying = [d for d in DIMENSIONS if d != "variant" and len({str(p[d]) for p in mine}) > 1]
        for x in varying:
            others = [d for d in varying if d != x]
            figures[f"bounds_vs_{x}{suffix}"] = png(figure_bounds(mine, x, others))
            if x in NUMERIC:
                figures[f"gap_vs_{x}{suffix}"] = png(figure_bounds(mine, x, others, gap=True))
        figures[f"timing{suffix}"] = png(figure_timing(mine, variant))  # runs of one variant only, like every figure
    return figures


def table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def f2(x) -> str:
    return "" if x is None else f"{x:.2f}"


def ais_cell(m: dict) -> str:
    """AIS beside IW on the same points, when the run measured it (``ais.enabled``, or the gap's)."""
    if "ais/log_px" in m:
        return f"{f2(m['ais/log_px'])} ({f2(m['ais/iw_ll'])})"
    if "gap/log_px_ais" in m:
        return f"{f2(m['gap/log_px_ais'])} ({f2(m['gap/log_px_iw'])}, gap points)"
    return ""


def mc_cell(m: dict) -> str:
    """The IW estimate's Monte Carlo standard error (what re-running the estimator would change),
    and the spread of its repeats with eval.repeats."""
    mc = m.get("test/iw_ll_mc_stderr")
    cell = "" if mc is None else f"{mc:.4f}"
    if mc is not None and "test/iw_ll_repeat_sd" in m:  # the record's value is for the mean of the R repeats
        r = len(m.get("test/iw_ll_repeats") or [1])
        cell += f" (one evaluation {mc * r**0.5:.4f}; sd of the {r} repeats {m['test/iw_ll_repeat_sd']:.4f})"
    return cell


def describe_defaults(rec: dict) -> str:
    """What a run without overrides ran: its dataset, method, latent size and epochs."""
    cfg = rec.get("config") or {}
    return ", ".join(str(v) for v in ((rec.get("dataset") or {}).get("name"), rec.get("method"), f"latent {cfg.get('latent')}", f"{(cfg.get('trainer') or {}).get('max_epochs')} epochs") if v)


def seed_table(records: list[dict]) -> str:
    """Configurations run with several seeds: mean ± sd across seeds, and n."""
    from vibench.seeds import seed_summary

    rows = [[html.escape(r["label"]), f"{f2(r['test/elbo'])} ± {f2(r['test/elbo_sd'])}", f"{f2(r['test/iw_ll'])} ± {f2(r['test/iw_ll_sd'])}", r["n"], ", ".join(map(str, r["seeds"]))] for r in seed_summary(records)]
    return table(["configuration", "test ELBO, mean ± sd over seeds", "test IW log-lik., mean ± sd over seeds", "n", "seeds"], rows) if rows else "<p>No configuration was run with more than one seed.</p>"


def render(records: list[dict], figures: dict[str, bytes], comparisons, title: str) -> str:
    done = [r for r in records if r.get("status") == "completed"]
    failed = [r for r in records if r.get("status") != "completed"]
    runs = [[html.escape(" ".join(r.get("overrides", [])) or "(defaults)"), f"<code class='id'>{r['run_id']}</code>", r["dataset"]["variant"] if "dataset" in r else "", r.get("method", ""),
             f2(r["metrics"].get("test/elbo")), f2(r["metrics"].get("test/iw_ll")) + f" ± {f2(r['metrics'].get('test/iw_ll_stderr'))}", mc_cell(r["metrics"]),
             f2(r["metrics"].get("test/kl")), r.get("iw_samples", ""), ais_cell(r["metrics"]), f2(r["timing"].get("train_s")), f2(r["timing"].get("test_s"))] for r in done]
    verdict_class = {"pass": "pass", "fail": "fail"}
    checks = [[c.reference.id, html.escape(c.reference.source), f"<code class='id'>{html.escape(c.run_label)}</code>", f2(c.reference.value), f2(c.measured), f2(c.difference), f2(c.allowed), html.escape(c.noise),
               f"<span class='{verdict_class.get(c.verdict, 'na')}'>{c.verdict}</span> {html.escape(c.why)}"] for c in comparisons]
    imgs = "".join(f"<figure><img alt='{k}' src='data:image/png;base64,{base64.b64encode(v).decode()}'><figcaption>{k}.png</figcaption></figure>" for k, v in figures.items())
    configs = "".join(f"<details><summary><code class='id'>{r['run_id']}</code>: {html.escape(' '.join(r.get('overrides', [])) or '(defaults: ' + describe_defaults(r) + ')')}</summary><pre>{html.escape(json.dumps(r.get('config', {}), indent=1))}</pre></details>" for r in records)
    failures = table(["run", "overrides", "status", "error"], [[r["run_id"], html.escape(" ".join(r.get("overrides", []))), r.get("status"), html.escape(str(r.get("error", "")))] for r in failed]) if failed else "<p>None.</p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}} table{{border-collapse:collapse;font-size:13px;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} th{{background:#f3f3f3}} td:first-child{{text-align:left}}
figure{{display:inline-block;margin:0.5em}} img{{max-width:640px;border:1px solid #ddd}} .pass{{color:#080;font-weight:bold}} .fail{{color:#c00;font-weight:bold}} .na{{color:#a60}}
pre{{font-size:11px;background:#fafafa;padding:0.5em}} .id{{white-space:nowrap}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(records)} run(s): {len(done)} completed, {len(failed)} not. Log-likelihoods in nats per image (higher is better); IW = importance-weighted bound with K samples.</p>
<h2>Figures</h2>{imgs or "<p>No completed runs.</p>"}
<h2>Seeds</h2>{seed_table(records)}
<h2>Runs</h2>{table(["overrides", "run", "variant", "method", "test ELBO", "test IW log-lik. ± se over test points", "its Monte Carlo se", "KL", "K", "AIS log p(x) (IW on its points)", "train s", "eval s"], runs)}
<h2>Regression checks</h2>{table(["reference", "source", "run", "reference", "measured", "difference", "allowed", "noise allowed for", "verdict"], checks) if checks else "<p>No record matches a reference in the registry.</p>"}
<h2>Failed or interrupted runs</h2>{failures}
<h2>Configurations</h2>{configs}
</body></html>"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vibench.report", description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="*", default=["results/runs"], help="record files, folders, multirun folders or sweep ids (default: results/runs)")
    parser.add_argument("--out", default="report", help="output folder (default: report/)")
    parser.add_argument("--title", default="vibench sweep report")
    parser.add_argument("--references", default=str(DEFAULT_REFERENCES))
    parser.add_argument("--wandb", action="store_true", help="also log the table and figures to W&B")
    parser.add_argument("--wandb-mode", default="offline", choices=["offline", "online"])
    args = parser.parse_args(argv)
    from vibench.report_console import print_error

    try:
        records = collect_records(args.records)
        comparisons, _ = check(records, load_references(args.references))
    except VibenchError as e:
        print_error(str(e))
        return 2
    import matplotlib

    matplotlib.use("Agg")
    points = [point(r) for r in records if r.get("status") == "completed"]
    figures = build_figures(points)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in figures.items():
        (out / f"{name}.png").write_bytes(data)
    (out / "index.html").write_text(render(records, figures, comparisons, args.title))
    if args.wandb:
        log_to_wandb(points, figures, out, args.wandb_mode, args.title)
    from vibench.seeds import print_seed_table

    print_seed_table(records)
    print(f"report: {out / 'index.html'} ({len(figures)} figures, {len(records)} records)")
    return 0


def log_to_wandb(points, figures, out: Path, mode: str, title: str) -> None:
    import wandb
    from PIL import Image

    run = wandb.init(project="vibench", job_type="report", name=title, mode=mode, dir=str(out))
    try:
        cols = ["run_id", "overrides", "variant", "method", "latent", "mc_samples", "k", "annealing", "elbo", "iw", "iw_se", "train_s", "test_s"]
        run.log({"report/runs": wandb.Table(columns=cols, data=[[p[c] for c in cols] for p in points])})
        run.log({f"report/{k}": wandb.Image(Image.open(io.BytesIO(v))) for k, v in figures.items()})
    finally:
        wandb.finish()


if __name__ == "__main__":
    sys.exit(main())
