"""The sweep report: a self-contained page with the figures, checks and configs."""

from __future__ import annotations

import copy
import json

import pytest

from vibench.report import build_figures, main, point
from tests.test_check import record


def sweep_records() -> list[dict]:
    recs = []
    for latent in (2, 5, 10):
        for seed in (0, 1):
            r = record(-100.0 + latent + seed * 0.5, run_id=f"z{latent}s{seed}")
            r["config"] = copy.deepcopy(r["config"])
            r["config"]["latent"], r["config"]["seed"], r["config"]["mc_samples"] = latent, seed, 1
            r["metrics"].update({"test/elbo": -104.0 + latent, "test/elbo_stderr": 0.3, "test/kl": 20.0})
            r["overrides"] = [f"latent={latent}", f"seed={seed}"]
            r["timing"] = {"train_s": 10.0, "test_s": 5.0, "train_examples_per_s": 5000.0}
            recs.append(r)
    failed = {"run_id": "broken", "status": "failed", "error": "NonFiniteLoss: NaN at step 3", "overrides": ["latent=20"], "config": {"latent": 20}}
    return recs + [failed]


def test_figures_per_swept_setting():
    points = [point(r) for r in sweep_records() if r["status"] == "completed"]
    figures = build_figures(points)
    assert set(figures) == {"bounds_vs_latent", "gap_vs_latent", "timing"}
    assert all(v.startswith(b"\x89PNG") for v in figures.values())


def test_report_page_is_self_contained(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    for r in sweep_records():
        (folder / f"{r['run_id']}.json").write_text(json.dumps(r))
    assert main([str(folder), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "src='http" not in page  # no network needed
    assert "7 run(s): 6 completed, 1 not" in page and "NaN at step 3" in page
    assert "latent=10 seed=1" in page  # the configuration behind each point
    assert (tmp_path / "report" / "bounds_vs_latent.png").is_file()


def test_variants_never_share_axes_and_labels_are_whole():
    recs = [r for r in sweep_records() if r["status"] == "completed"]
    digits = copy.deepcopy(recs[0])
    digits.update(run_id="digits", overrides=[], dataset={"name": "digits", "variant": "digits_dynamic"})
    long = copy.deepcopy(recs[1])
    long["overrides"] = ["+experiment=aevb_mnist", "latent=5", "model.decoder.hidden=[400,400]", "optimizer.lr=3e-4"]
    points = [point(r) for r in [*recs[2:], long, digits]]
    figures = build_figures(points)
    variant = recs[0]["dataset"]["variant"]
    assert f"timing_{variant}" in figures and "timing_digits_dynamic" in figures and "timing" not in figures
    from vibench.report import run_labels

    labels = run_labels([point(long), point(digits)])
    assert labels[1] == "(defaults)"
    assert labels[0].replace("\n", " ") == " ".join(long["overrides"])  # wrapped, never cut


def test_gap_legend_and_default_run_config_are_labelled(tmp_path):
    from vibench.report import render

    recs = [r for r in sweep_records() if r["status"] == "completed"]
    default = copy.deepcopy(recs[0])
    default["overrides"] = []
    page = render([default], {}, [], "t")
    assert "(defaults: " in page and "latent 2" in page and "<code class='id'>z2s0</code>" in page


def test_gap_figure_legend_names_the_quantity():
    from vibench.report import figure_bounds

    points = [point(r) for r in sweep_records() if r["status"] == "completed"]
    fig = figure_bounds(points, "latent", [], gap=True)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["IW log-likelihood - ELBO"]


def test_report_shows_ais_beside_iw():
    from vibench.report import ais_cell

    assert ais_cell({"ais/log_px": -90.0, "ais/iw_ll": -90.4}) == "-90.00 (-90.40)"
    assert ais_cell({"gap/log_px_ais": -88.0, "gap/log_px_iw": -88.3}) == "-88.00 (-88.30, gap points)"
    assert ais_cell({}) == ""


def test_runs_table_shows_the_monte_carlo_error_beside_the_spread_of_repeats():
    from vibench.report import mc_cell

    assert mc_cell({"test/iw_ll_mc_stderr": 0.0025}) == "0.0025"
    # R = 4 repeats: the record's MC error is for their mean; one evaluation's is twice that
    cell = mc_cell({"test/iw_ll_mc_stderr": 0.0025, "test/iw_ll_repeats": [-1.0, -1.0, -1.0, -1.0], "test/iw_ll_repeat_sd": 0.006})
    assert cell == "0.0025 (one evaluation 0.0050; sd of the 4 repeats 0.0060)"


def test_seed_summary_gives_mean_and_sd_across_seeds_per_configuration():
    """Records differing only in seed (and the seed-derived dataset seeds) form one row; another
    latent size is another row; a configuration with one seed has no row."""
    from vibench.seeds import seed_summary

    def rec(latent, seed, iw):
        return {"run_id": f"{latent}-{seed}", "status": "completed", "overrides": [f"latent={latent}", f"seed={seed}"],
                "config": {"latent": latent, "seed": seed, "dataset": {"shuffle_seed": seed, "subset_seed": seed}},
                "metrics": {"test/iw_ll": iw, "test/elbo": iw - 1}}

    rows = seed_summary([rec(2, 0, -100.0), rec(2, 1, -102.0), rec(2, 2, -104.0), rec(5, 0, -90.0), rec(5, 1, -91.0), rec(9, 0, -80.0)])
    by = {r["label"]: r for r in rows}
    assert set(by) == {"latent=2", "latent=5"}
    assert by["latent=2"]["test/iw_ll"] == pytest.approx(-102.0) and by["latent=2"]["test/iw_ll_sd"] == pytest.approx(2.0) and by["latent=2"]["n"] == 3
    assert by["latent=5"]["test/elbo"] == pytest.approx(-91.5) and by["latent=5"]["test/elbo_sd"] == pytest.approx(0.5**0.5)


def test_seed_summary_joins_seeds_run_under_two_versions_as_check_does():
    """A seed run by a later vibench has a setting with a null default that the first lacks, a
    different stored ``config_group``, and its data read from elsewhere; one of them was tested
    with ``evaluate=``: still one configuration (two seeds, mean -101), as in ``vibench.check``.
    A setting that has a value is still another configuration."""
    from vibench.seeds import seed_summary

    def rec(seed, iw, group, **extra):
        config = {"latent": 2, "seed": seed, "dataset": {"shuffle_seed": seed, "source": {"root": f"/data{seed}"}}, **extra}
        return {"run_id": str(seed), "status": "completed", "overrides": ["latent=2", f"seed={seed}"], "config_group": group,
                "config": config, "metrics": {"test/iw_ll": iw, "test/elbo": iw - 5}}

    rows = seed_summary([rec(0, -100.0, "cfg-0000000000"), rec(1, -102.0, "cfg-1111111111", new_setting=None, evaluate="outputs/x")])
    assert len(rows) == 1 and rows[0]["n"] == 2 and rows[0]["test/iw_ll"] == pytest.approx(-101.0)
    assert seed_summary([rec(0, -100.0, "a"), rec(1, -102.0, "a", new_setting=3)]) == []
