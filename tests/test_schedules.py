"""KL-annealing schedules at known points, and a run's logged beta following its schedule."""

from __future__ import annotations

import csv
import functools
import math

import pytest

from vibench.schedules import KLSchedule, constant, cyclical, linear, logistic


def test_constant():
    assert constant(0) == constant(10**6) == 1.0
    assert constant(5, beta=0.25) == 0.25


def test_linear_warmup_points():
    assert linear(0, warmup=100) == 0.0
    assert linear(50, warmup=100) == 0.5          # mid-rise
    assert linear(100, warmup=100) == 1.0         # end of warm-up
    assert linear(1000, warmup=100) == 1.0        # stays at the end value
    assert linear(25, warmup=100, start=0.2, end=0.6) == pytest.approx(0.3)
    assert linear(3, warmup=0) == 1.0


def test_logistic_points():
    # Bowman et al.: k = 0.0025, t0 = 2500; 1 / (1 + e^{6.25}) = 0.001927 at t = 0
    assert logistic(2500) == 0.5
    assert logistic(0) == pytest.approx(1 / (1 + math.exp(6.25)))
    assert logistic(5000) == pytest.approx(1 / (1 + math.exp(-6.25)))
    assert logistic(10**9) == 1.0 and logistic(-(10**9)) == 0.0  # no overflow


def test_cyclical_points():
    f = functools.partial(cyclical, total=100, cycles=4, ratio=0.5)  # period 25, rise over 12.5
    assert f(0) == 0.0                       # start of cycle 1
    assert f(6.25) == pytest.approx(0.5)     # mid-rise
    assert f(12.5) == 1.0 and f(20) == 1.0   # end of rise, plateau
    assert f(25) == 0.0                      # cycle boundary: back to 0
    assert f(31.25) == pytest.approx(0.5)
    assert f(99.9) == 1.0 and f(100) == 1.0 and f(150) == 1.0


def test_schedule_units():
    s = KLSchedule(functools.partial(linear, warmup=2), per="epochs")
    assert s(step=10, steps_per_epoch=10) == 0.5  # 1 epoch of a 2-epoch warm-up
    assert KLSchedule(functools.partial(linear, warmup=40), per="steps")(10, 10) == 0.25
    assert s.describe() == {"name": "linear", "warmup": 2, "per": "epochs"}
    with pytest.raises(ValueError):
        KLSchedule(constant, per="minutes")


def test_run_logs_beta_following_the_schedule(compose_cfg, tmp_path):
    from vibench.run import run

    # digits: 1297 / 100 = 13 steps per epoch; linear warm-up over 2 epochs = 26 steps
    run(compose_cfg("annealing=linear", "annealing.fn.warmup=2", "trainer.max_epochs=3", "trainer.log_every_n_steps=1", "iw_samples=20", "logger=csv", "images=false"))
    (metrics,) = (tmp_path / "out").rglob("metrics.csv")
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("train/beta")]
    assert len(rows) == 39
    for r in rows:
        step = int(r["step"])
        assert float(r["train/beta"]) == pytest.approx(min(1.0, step / 26), abs=1e-6)


def test_hydra_partials_become_plain_partials():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from vibench.schedules import plain_partial

    hydra_fn = instantiate(OmegaConf.create({"_target_": "vibench.schedules.linear", "_partial_": True, "warmup": 4}))
    plain = plain_partial(hydra_fn)
    assert type(plain) is functools.partial and plain(1.0) == hydra_fn(1.0) == 0.25
    assert KLSchedule(hydra_fn).fn.func is linear


def test_annealing_none_is_recorded_as_none(compose_cfg):
    from hydra.utils import instantiate

    assert instantiate(compose_cfg("annealing=none").annealing).describe() == {"name": "none", "beta": 1.0, "per": "steps"}
    assert instantiate(compose_cfg("annealing=constant", "annealing.fn.beta=0.5").annealing).describe()["name"] == "constant"
    assert instantiate(compose_cfg("annealing=none").annealing).is_unit and not instantiate(compose_cfg("annealing=constant", "annealing.fn.beta=0.5").annealing).is_unit
