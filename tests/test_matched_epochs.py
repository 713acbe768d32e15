"""Runs compared at the same epochs (``vibench.curves --at``): windowed means with known answers,
and anchors.md's matched-epoch table of the IWAE preset's seeds read back from its committed CSVs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "results/anchors/iwae_mnist/seeds_in_progress"


def line(n: int, slope: float = 1.0, offset: float = 0.0) -> list[dict]:
    return [{"epoch": e, "val/elbo": offset + slope * e} for e in range(n)]


def test_window_mean_of_a_straight_line_is_its_value_at_the_centre():
    from vibench.matched_epochs import window_mean

    assert window_mean(line(100), 50) == pytest.approx(50.0)
    assert window_mean(line(100), 50, window=1) == pytest.approx(50.0)
    assert window_mean(line(100, slope=-2.0), 20, window=5) == pytest.approx(-40.0)


def test_a_window_the_logs_do_not_cover_gives_no_value():
    """The last epochs of a run still training, the first epochs, and a gap in the logs: None,
    never a mean over fewer epochs (which would compare different stretches of training)."""
    from vibench.matched_epochs import window_mean

    assert window_mean(line(100), 96) is None  # needs epochs up to 101
    assert window_mean(line(100), 94) == pytest.approx(94.0)
    assert window_mean(line(100), 3) is None
    gap = [r for r in line(100) if r["epoch"] != 52]
    assert window_mean(gap, 50) is None and window_mean(gap, 60) == pytest.approx(60.0)
    with pytest.raises(ValueError, match="odd"):
        window_mean(line(100), 50, window=4)


def test_matched_rows_give_each_run_and_its_difference_from_the_first():
    from vibench.matched_epochs import matched_rows

    rows = matched_rows({"a": line(50), "b": line(50, offset=1.5), "c": line(20)}, [10, 30])
    assert rows[0] == pytest.approx({"epoch": 10, "a": 10.0, "b": 11.5, "c": 10.0, "b - a": 1.5, "c - a": 0.0})
    assert rows[1]["c"] is None and rows[1]["c - a"] is None and rows[1]["b - a"] == pytest.approx(1.5)


def test_anchors_table_of_the_iwae_seeds_comes_from_the_committed_curves(capsys):
    """anchors.md's 11-epoch means (seed 0, seed 1, the code variant) at epochs 200, 1,000 and
    1,957, read back from the curve CSVs committed beside them, through the command's own path."""
    from vibench.curves import main
    from vibench.matched_epochs import matched_rows
    from vibench.run_logs import epoch_curve, history

    curves = {name: epoch_curve(history(SEEDS / f"curve-{name}.csv")) for name in ("preset_seed0", "preset_seed1", "code_k1")}
    rows = {r["epoch"]: r for r in matched_rows(curves, [200, 1000, 1957])}
    assert [round(rows[e]["preset_seed0"], 2) for e in (200, 1000, 1957)] == [-98.49, -98.39, -98.52]
    assert [round(rows[e]["preset_seed1 - preset_seed0"], 2) for e in (200, 1000, 1957)] == [0.92, 1.43, 1.72]
    assert round(rows[1957]["code_k1"], 2) == -95.59
    # the command line prints the same table and, without --out, writes nothing
    args = [str(SEEDS / "curve-preset_seed0.csv"), str(SEEDS / "curve-preset_seed1.csv"), "--labels", "s0", "s1", "--at", "200", "1957"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "-98.49" in out and "+1.72" in out and "s1 - s0" in out
    assert main([*args, "--window", "4"]) == 2 and "odd" in capsys.readouterr().err


def test_with_out_the_table_is_also_a_csv(tmp_path):
    import csv

    from vibench.curves import main

    assert main([str(SEEDS / "curve-preset_seed0.csv"), str(SEEDS / "curve-preset_seed1.csv"), "--labels", "s0", "s1",
                 "--at", "200", "3000", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "matched.csv")))
    assert [r["epoch"] for r in rows] == ["200", "3000"]
    assert round(float(rows[0]["s1 - s0"]), 2) == 0.92 and rows[1]["s1"] == "" and float(rows[1]["s0"]) < -98
    assert (tmp_path / "compare.png").is_file()


@pytest.mark.parametrize("source", [SEEDS / "curve-preset_seed1.csv", SEEDS.parent / "curves" / "curve-preset.csv"])
def test_a_curve_csv_read_back_is_written_again_byte_for_byte(tmp_path, source):
    """A curve CSV given as a run comes out of ``curves --out`` unchanged (it used to turn the
    step 2499 into 2499.0, and the preset's training loss of exactly 90 at epoch 2506, logged as
    a whole number, into 90.0)."""
    from vibench.curves import write_csv
    from vibench.run_logs import epoch_curve, history

    assert ",90,2" in source.read_text() or "seed1" in source.name
    write_csv(epoch_curve(history(source)), tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == source.read_bytes()


def test_one_run_with_at_and_no_out_writes_nothing(tmp_path, capsys):
    """Bug: with one run, ``--at`` without ``--out`` also wrote curve.csv and curve.png (into a run
    folder, or crashed on a curve CSV's path), though the help says the table alone is printed. A
    curve CSV without ``--out`` or ``--at`` is refused with what to give."""
    import shutil

    from vibench.curves import main

    source = tmp_path / "curve-s.csv"
    shutil.copy(SEEDS / "curve-preset_seed1.csv", source)
    assert main([str(source), "--at", "200"]) == 0 and "-97.57" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve-s.csv"]
    assert main([str(source)]) == 2 and "--out" in capsys.readouterr().err


def committed_curves_commands() -> list[list[str]]:
    """anchors.md's ``python -m vibench.curves`` commands whose runs are all committed files (not
    ``outputs/`` folders, which a checkout lacks), as argument lists."""
    import re
    import shlex

    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "results/anchors.md").read_text(), re.S)
    commands = []
    for text in (ln for block in blocks for ln in block.splitlines() if ln.startswith("python -m vibench.curves ")):
        args = shlex.split(text)[3:]
        runs = args[: next((i for i, a in enumerate(args) if a.startswith("--")), len(args))]
        if all(r.startswith("results/") for r in runs):
            commands.append(args)
    return commands


@pytest.mark.parametrize("args", committed_curves_commands(), ids=lambda a: Path(a[0]).parent.name)
def test_anchors_curves_commands_remake_their_committed_files(args, tmp_path, monkeypatch, capsys):
    """Each such command runs as written from the repository root, and the files it writes are
    the committed ones (curve CSVs and matched.csv byte for byte; the figure is remade, not
    compared), so the commands in anchors.md still make what anchors.md shows."""
    from vibench.curves import main

    monkeypatch.chdir(ROOT)
    out = args.index("--out") + 1 if "--out" in args else None
    assert main([*args[:out], str(tmp_path), *args[out + 1 :]] if out else args) == 0
    if out:
        made = sorted(p.name for p in tmp_path.iterdir())
        assert "compare.png" in made
        committed = [name for name in made if name.endswith(".csv") and (ROOT / args[out] / name).exists()]
        assert committed  # a run's CSV committed elsewhere (seeds_in_progress/) is not committed twice
        for name in committed:
            assert (tmp_path / name).read_bytes() == (ROOT / args[out] / name).read_bytes(), name
    else:
        assert "11-epoch means" in capsys.readouterr().out


def test_the_committed_curves_commands_are_found():
    assert len(committed_curves_commands()) >= 2
