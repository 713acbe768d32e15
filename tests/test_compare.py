"""Paired and unpaired differences between runs, and ``python -m vibench.compare``, against known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vibench import points
from vibench.compare import main as compare_main
from vibench.paired import paired_difference, seed_interval, unpaired_difference


def standardized(rng, n):
    e = rng.standard_normal(n)
    return (e - e.mean()) / e.std(ddof=1)


def test_paired_difference_recovers_a_known_shift_and_its_standard_error():
    """a_i = b_i + 0.3 + 0.2 e_i with mean(e) = 0 and sd(e) = 1 exactly: the difference is 0.3 and
    its standard error 0.2 / sqrt(N), however large the spread of b between points (sd 10 here)."""
    rng = np.random.default_rng(0)
    n = 400
    b = -100 + 10 * rng.standard_normal(n)
    a = b + 0.3 + 0.2 * standardized(rng, n)
    d = paired_difference(a, b, np.full(n, 0.01), np.full(n, 0.03))
    assert d.difference == pytest.approx(0.3, abs=1e-12)
    assert d.stderr == pytest.approx(0.2 / math.sqrt(n), rel=1e-12)
    assert (d.low, d.high) == pytest.approx((0.3 - 1.959964 * 0.01, 0.3 + 1.959964 * 0.01), abs=1e-6)
    assert d.mc_stderr == pytest.approx(math.sqrt(n * 0.04) / n)
    unpaired = unpaired_difference(a, b)  # the between-point spread swamps the shift when not paired
    assert unpaired.stderr > 40 * d.stderr


def test_paired_interval_covers_the_true_difference_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(2000):
        b = rng.standard_normal(200) * 5
        a = b + 0.1 + rng.standard_normal(200) * 0.5
        d = paired_difference(a, b)
        hits += d.low <= 0.1 <= d.high
    assert 0.93 <= hits / 2000 <= 0.97


def test_seed_intervals_paired_by_seed_and_welch():
    d = seed_interval({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert d.kind == "paired seeds" and d.difference == pytest.approx(2.0)
    half = 4.302653 * 1 / math.sqrt(3)  # t(0.975, 2 df) * sd / sqrt(n)
    assert (d.low, d.high) == pytest.approx((2 - half, 2 + half), abs=1e-5)
    w = seed_interval({0: 1.0, 1: 3.0}, {5: 0.0, 6: 2.0, 7: 4.0})
    # equal-variance-free Welch: se^2 = 2/2 + 4/3, df = (7/3)^2 / (1 + (4/3)^2/2)
    se = math.sqrt(1 + 4 / 3)
    assert w.kind == "Welch seeds" and w.difference == pytest.approx(0.0) and w.stderr == pytest.approx(se)
    assert seed_interval({0: 1.0}, {0: 2.0}) is None


def fake_run(folder, run_id, index, iw_ll, seed=0, latent=2, variant="v", **config):
    """A record and its per-point sidecar, as a run writes them."""
    values = {"index": np.asarray(index), "iw_ll": np.asarray(iw_ll, dtype=np.float64), "iw_ll_mc_var": np.full(len(index), 1e-4)}
    info = points.write(values, [folder], run_id, variant)
    rec = {"run_id": run_id, "status": "completed", "created": run_id, "config": {"seed": seed, "latent": latent, **config}, "metrics": {"test/iw_ll": float(np.mean(iw_ll))},
           "per_point": info, "dataset": {"variant": variant}}
    (folder / f"{run_id}.json").write_text(json.dumps(rec))


def test_compare_recovers_known_differences_per_configuration_and_across_seeds(tmp_path, capsys):
    """Side A is better than B by 0.5 nats at latent 2 and 1.0 at latent 5, on the same 300 points,
    three seeds each: compare pairs them point by point and gives the across-seed interval."""
    rng = np.random.default_rng(2)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    index = np.arange(300)
    for latent, shift in ((2, 0.5), (5, 1.0)):
        for seed in range(3):
            base = -100 + 8 * rng.standard_normal(300)
            fake_run(tmp_path / "b", f"b{latent}{seed}", index, base, seed, latent)
            fake_run(tmp_path / "a", f"a{latent}{seed}", index, base + shift + 0.1 * seed + 0.05 * standardized(rng, 300), seed, latent)
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "b"), "--json", "-"]) == 0
    rows = json.loads(capsys.readouterr().out)
    per_seed = {(r["configuration"], r["seed"]): r for r in rows}
    assert per_seed[("latent=2", 1)]["difference"] == pytest.approx(0.6, abs=1e-9)
    assert per_seed[("latent=2", 1)]["stderr"] == pytest.approx(0.05 / math.sqrt(300), rel=1e-9)
    assert per_seed[("latent=5", 0)]["kind"] == "paired points"
    across = per_seed[("latent=5", "3 vs 3 seeds")]
    assert across["kind"] == "paired seeds" and across["difference"] == pytest.approx(1.1, abs=1e-9)
    assert across["low"] < 1.1 < across["high"]


def test_compare_on_different_points_says_so_and_does_not_pair(tmp_path, capsys):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    fake_run(tmp_path / "a", "a", np.arange(100), np.full(100, -90.0) + np.linspace(-1, 1, 100))
    fake_run(tmp_path / "b", "b", np.arange(100, 200), np.full(100, -91.0) + np.linspace(-1, 1, 100))
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "b"), "--json", "-"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["kind"] == "unpaired points" and "different test points" in row["note"]
    assert row["difference"] == pytest.approx(1.0)


def test_a_test_subset_is_paired_with_the_whole_split_on_the_points_they_share(tmp_path, capsys):
    """A peek at a running model on 1,000 of the 10,000 test points (``dataset.test_subset=1000``)
    against a finished run on all of them: the subset's points are harder than average, so the
    unpaired difference of means is biased (0.18 here, its 95% interval missing 0.9). Paired on the shared
    points, A − B is the known 0.9 with the paired standard error. compare once left them unpaired.
    Overlapping indices of another dataset variant are never paired."""
    rng = np.random.default_rng(5)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    hardness = np.where(np.arange(10_000) < 1000, -0.6, 0.6 / 9)  # the first 1,000 points are harder
    base = -89 + hardness + 6 * standardized(rng, 10_000)
    subset = np.arange(1000)
    noise = 0.2 * standardized(rng, 1000)
    fake_run(tmp_path / "a", "peek", subset, base[subset] + 0.9 + noise, variant="static")
    fake_run(tmp_path / "b", "final", np.arange(10_000), base, variant="static")
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "b"), "--json", "-"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["kind"] == "paired points" and row["n"] == 1000 and "paired on the 1000 test points both evaluated" in row["note"]
    assert row["difference"] == pytest.approx(0.9, abs=1e-9) and row["stderr"] == pytest.approx(0.2 / math.sqrt(1000), rel=1e-9)
    assert row["a"] - row["b"] == pytest.approx(0.9, abs=1e-9) and row["b"] == pytest.approx(float(base[:1000].mean()))
    unpaired = unpaired_difference(base[subset] + 0.9 + noise, base)
    assert unpaired.high < 0.9 and unpaired.difference == pytest.approx(0.18, abs=0.01)  # what the unpaired comparison said
    fake_run(tmp_path / "c", "other_variant", np.arange(10_000), base, variant="dynamic")
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "c"), "--json", "-"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["kind"] == "unpaired points" and "different test points" in row["note"]


def test_one_run_against_one_run_of_another_seed_is_compared_and_says_so(tmp_path, capsys):
    """Two single runs of different seeds on the same points are compared point by point (the
    difference is 0.4 exactly), labelled with both seeds and warned that seed-to-seed spread is
    not in the interval. compare once printed an empty table and exited 0 for them."""
    rng = np.random.default_rng(3)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    base = -95 + 8 * rng.standard_normal(200)
    fake_run(tmp_path / "a", "a", np.arange(200), base + 0.4 + 0.1 * standardized(rng, 200), seed=1)
    fake_run(tmp_path / "b", "b", np.arange(200), base, seed=0)
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "b"), "--json", "-"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["seed"] == "1 vs 0" and row["kind"] == "paired points"
    assert row["difference"] == pytest.approx(0.4, abs=1e-9) and row["stderr"] == pytest.approx(0.1 / math.sqrt(200), rel=1e-9)
    assert "seed-to-seed" in row["note"]


def test_compare_refuses_seeds_with_nothing_to_compare(tmp_path, capsys):
    """A ran seeds 0 and 1, B seed 2: no seed in common and no interval across seeds from one
    seed, so compare says why and how to fix it, with exit 2, instead of an empty table."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    for seed in (0, 1):
        fake_run(tmp_path / "a", f"a{seed}", np.arange(10), np.zeros(10), seed=seed)
    fake_run(tmp_path / "b", "b2", np.arange(10), np.zeros(10), seed=2)
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "seeds (0, 1)" in err and "(2)" in err and "the same seeds" in err


def test_compare_refuses_sweeps_with_no_common_configuration(tmp_path, capsys):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    for latent in (2, 5):
        fake_run(tmp_path / "a", f"a{latent}", np.arange(10), np.zeros(10), latent=latent)
    for latent in (3, 4):
        fake_run(tmp_path / "b", f"b{latent}", np.arange(10), np.zeros(10), latent=latent)
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "no configuration of A matches" in capsys.readouterr().err


def test_of_two_records_of_one_seed_the_later_is_compared_even_within_a_second():
    """Records carry their start to the millisecond: two runs of one seed started in the same
    second still order, and compare keeps the later (it once tied at the second, and the order of
    the files decided)."""
    import re
    import time

    from vibench.compare import groups
    from vibench.records import now

    first = now()
    time.sleep(0.002)
    second = now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", first) and second > first
    earlier, later = {"run_id": "b", "created": first}, {"run_id": "a", "created": second}
    flat = {"latent": 2, "seed": 0}
    for order in ([earlier, later], [later, earlier]):
        assert groups(order, [flat, flat], ["latent"]) == ({(2,): {0: later}}, {"a": ["b"]})


def test_compare_runs_pairs_records_read_with_read_record():
    """compare_runs on two records read with ``read_record`` (as a script does) pairs their points:
    A − B is 0.7 exactly. It once answered "no per-point file" for them, since only
    ``collect_records`` said where a record came from; a record without that now raises."""
    import tempfile
    from pathlib import Path

    from vibench.compare import compare_runs
    from vibench.records import read_record

    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        base = -90 + np.linspace(-3, 3, 200)
        fake_run(folder, "a", np.arange(200), base + 0.7)
        fake_run(folder, "b", np.arange(200), base)
        a, b = read_record(folder / "a.json"), read_record(folder / "b.json")
        row = compare_runs(a, b, "iw_ll")
        assert row["kind"] == "paired points" and row["n"] == 200
        assert row["difference"] == pytest.approx(0.7, abs=1e-9) and row["stderr"] == pytest.approx(0.0, abs=1e-9)
        del a["_path"]
        with pytest.raises(ValueError, match="read it with vibench.records.read_record"):
            compare_runs(a, b, "iw_ll")


def test_committed_output_bias_ablation_gives_the_numbers_anchors_md_reports(capsys):
    """results/anchors.md's three-seed ablation table, from the committed records: per seed the
    paired difference over the 1,000 shared test points, across seeds +0.92 (se 0.22), -0.03 to 1.87."""
    from tests.conftest import REPO

    d = REPO / "results" / "anchors" / "iwae_mnist" / "ablation"
    bias = ",".join(str(d / f"{r}.json") for r in ("20261124-042452-0d0e06", "20261124-111643-081b1c", "20261124-111644-ce76f0"))
    control = ",".join(str(d / f"{r}.json") for r in ("20261124-015142-da039a", "20261124-072505-75098a", "20261124-080119-dea1b4"))
    assert compare_main([bias, control, "--json", "-"]) == 0
    rows = {r["seed"]: r for r in json.loads(capsys.readouterr().out)}
    got = {s: (round(rows[s]["a"], 3), round(rows[s]["b"], 3), round(rows[s]["difference"], 3), round(rows[s]["stderr"], 3), rows[s]["n"]) for s in (0, 1, 2)}
    assert got == {0: (-90.539, -91.859, 1.320, 0.174, 1000), 1: (-90.303, -91.170, 0.867, 0.143, 1000), 2: (-90.552, -91.112, 0.560, 0.141, 1000)}
    across = rows["3 vs 3 seeds"]
    assert across["kind"] == "paired seeds" and [round(across[k], 3) for k in ("difference", "stderr", "low", "high")] == [0.916, 0.221, -0.034, 1.866]


def test_a_seed_retested_with_evaluate_stays_in_its_configuration(tmp_path, capsys):
    """The IWAE ablation: three seeds of a setting against three controls, all on the same 100
    points, but the control of seed 1 was tested on other points first and re-tested on these with
    evaluate=. compare once made the re-test a configuration of its own (evaluate varied), so the
    three seeds were never paired. Now the re-test is seed 1 of the controls, the older record is
    named as left out, and the across-seed difference is the known mean of 1.0, 0.5 and 1.5. The
    sides are given as comma-separated records."""
    rng = np.random.default_rng(3)
    d = tmp_path / "ablation"
    d.mkdir()
    base = {s: -91 + 5 * standardized(rng, 100) for s in range(3)}
    fake_run(d, "c0", np.arange(100), base[0], seed=0, evaluate=None)
    fake_run(d, "c1_first", np.arange(100, 200), base[1], seed=1, evaluate=None)  # other points: superseded by the re-test
    fake_run(d, "c1_retest", np.arange(100), base[1], seed=1, evaluate="outputs/control_seed1")
    fake_run(d, "c2", np.arange(100), base[2], seed=2, evaluate=None)
    for s, shift in ((0, 1.0), (1, 0.5), (2, 1.5)):
        fake_run(d, f"x{s}", np.arange(100), base[s] + shift, seed=s, evaluate=None, output_bias="train_mean")
    a = ",".join(str(d / f"x{s}.json") for s in range(3))
    b = ",".join(str(d / f"{r}.json") for r in ("c0", "c1_first", "c1_retest", "c2"))
    assert compare_main([a, b, "--json", "-"]) == 0
    rows = {r["seed"]: r for r in json.loads(capsys.readouterr().out)}
    assert [rows[s]["difference"] for s in (0, 1, 2)] == pytest.approx([1.0, 0.5, 1.5], abs=1e-9)
    assert rows[1]["b_run"] == "c1_retest" and "left out, the same configuration and seed: c1_first (older than c1_retest)" in rows[1]["note"]
    across = rows["3 vs 3 seeds"]
    assert across["kind"] == "paired seeds" and across["difference"] == pytest.approx(1.0, abs=1e-9) and across["stderr"] == pytest.approx(0.5 / math.sqrt(3))
    from vibench.compare import side_name

    assert side_name(a) == f"3 paths in {d}" and side_name(str(d / "x0.json")) == str(d / "x0.json")  # the table's title
