"""The output-bias start against the preset at epoch 200, on three seeds, all tested on seed 0's
1,000 test points: per seed, the paired difference over points (vibench.compare's); across the
three seeds, a t interval on the per-seed differences (vibench.paired.seed_interval), which
includes the spread between training seeds.

    python results/anchors/iwae_mnist/ablation/output_bias_seeds.py

(`python -m vibench.compare` would split the controls into two configurations, since seed 1's
control was tested with `evaluate=`; the records are otherwise the same setting.)
"""

from pathlib import Path

from vibench.compare import compare_runs
from vibench.paired import seed_interval
from vibench.records import read_record

HERE = Path(__file__).resolve().parent
CONTROL = {0: "20261124-015142-da039a", 1: "20261124-072505-75098a", 2: "20261124-080119-dea1b4"}
OUTPUT_BIAS = {0: "20261124-042452-0d0e06", 1: "20261124-111643-081b1c", 2: "20261124-111644-ce76f0"}


def main() -> None:
    control = {s: read_record(HERE / f"{run}.json") for s, run in CONTROL.items()}
    bias = {s: read_record(HERE / f"{run}.json") for s, run in OUTPUT_BIAS.items()}
    for seed in sorted(control):
        row = compare_runs(bias[seed], control[seed], "iw_ll")
        assert row["kind"] == "paired points" and row["n"] == 1000, row
        print(f"seed {seed}: output bias {row['a']:.3f}, control {row['b']:.3f}, difference {row['difference']:+.3f} (se {row['stderr']:.3f} over points)")
    across = seed_interval({s: r["metrics"]["test/iw_ll"] for s, r in bias.items()}, {s: r["metrics"]["test/iw_ll"] for s, r in control.items()})
    print(f"3 seeds ({across.kind}): difference {across.difference:+.3f}, se {across.stderr:.3f}, 95% interval [{across.low:.3f}, {across.high:.3f}]")


if __name__ == "__main__":
    main()
