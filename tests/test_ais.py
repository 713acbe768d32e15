"""AIS and BDMC against the exact log p(x) of a linear-Gaussian model, in float64."""

from __future__ import annotations

import math

import pytest
import torch

from tests.linear_gaussian import make_model
from vibench.ais import ais, log_mean_exp_with_stderr, reverse_ais, sigmoid_schedule


def simulated(n: int = 40, seed: int = 3):
    """(model, z, x) with x drawn from the model given z: z is an exact posterior sample for x."""
    model = make_model(dim=6, latent=3, sigma=0.5, seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        z = model.prior().sample((n,))
        x = model.likelihood(z).sample()
    return model, z, x


def test_schedule_runs_from_zero_to_one():
    b = sigmoid_schedule(10)
    assert b[0] == 0 and b[-1] == 1 and len(b) == 11 and bool((b[1:] > b[:-1]).all())


def test_log_mean_exp_stderr_delta_method():
    # equal weights: the mean is exact, no error; one dominant chain of C: sqrt(1 - 1/C)
    lme, se = log_mean_exp_with_stderr(torch.zeros(8, 2, dtype=torch.float64))
    assert torch.allclose(lme, torch.zeros(2, dtype=torch.float64)) and torch.allclose(se, torch.zeros(2, dtype=torch.float64))
    lw = torch.tensor([[0.0], [-1e4], [-1e4], [-1e4]], dtype=torch.float64)
    lme, se = log_mean_exp_with_stderr(lw)
    assert lme.item() == pytest.approx(-math.log(4)) and se.item() == pytest.approx(math.sqrt(0.75))


def test_ais_approaches_the_exact_log_px_as_t_grows():
    model, _, x = simulated()
    exact = model.exact_marginal().log_prob(x).detach()
    prior = model.prior().expand([len(x)])
    gaps = {}
    for steps in (10, 100, 1000):
        torch.manual_seed(0)
        res = ais(model, x, prior, chains=16, steps=steps, leapfrog=5, step_size=0.1)
        gaps[steps] = float((exact - res.log_px).mean())
    # a stochastic lower bound, tightening with T; within 0.05 nats at T = 1000
    assert gaps[10] > gaps[100] > gaps[1000] > -0.02
    assert abs(gaps[1000]) < 0.05
    assert 0.4 < res.accept_rate < 0.95


def test_bdmc_brackets_the_exact_log_px():
    model, z, x = simulated()
    exact = model.exact_marginal().log_prob(x).detach()
    prior = model.prior().expand([len(x)])
    torch.manual_seed(1)
    lower = ais(model, x, prior, chains=8, steps=100, leapfrog=5, step_size=0.1).log_px
    upper = reverse_ais(model, x, prior, z, chains=8, steps=100, leapfrog=5, step_size=0.1).log_px
    # on average over points, lower <= exact <= upper; the sandwich is narrow at T = 100
    assert float(lower.mean()) <= float(exact.mean()) + 0.01 <= float(upper.mean()) + 0.02
    assert 0 < float((upper - lower).mean()) < 0.5


def test_ais_at_the_end_of_a_run_and_in_the_gap_decomposition(compose_cfg, tmp_path):
    """ais.enabled: AIS beside IW on the same points and the BDMC sandwich in the record; with the
    gap on, its log p(x) is the larger of AIS and IW for each point (Cremer et al.)."""
    import json

    from vibench.run import run

    small = ("ais.enabled=true", "ais.n_points=20", "ais.chains=4", "ais.steps=30", "ais.leapfrog=3", "ais.iw_samples=500", "ais.batch_points=10", "ais.bdmc_points=10")
    run(compose_cfg("trainer.max_epochs=2", "iw_samples=50", "logger=none", "images=false", *small))
    rec = json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    m = rec["metrics"]
    assert m["ais/n"] == 20 and 0 < m["ais/accept_rate"] <= 1 and m["ais/seconds"] > 0 and m["ais/mc_stderr"] >= 0
    assert m["ais/minus_iw"] == pytest.approx(m["ais/log_px"] - m["ais/iw_ll"])
    assert m["bdmc/n"] == 10 and m["bdmc/lower"] <= m["bdmc/upper"] and m["bdmc/width"] == pytest.approx(m["bdmc/upper"] - m["bdmc/lower"])
    assert rec["ais"]["steps"] == 30 and rec["ais"]["chains"] == 4

    run(compose_cfg("trainer.max_epochs=2", "iw_samples=50", "logger=none", "images=false", "gap.enabled=true", "gap.n_points=10", "gap.max_steps=200", "gap.iw_samples=200", *small, f"results_dir={tmp_path / 'gap'}"))
    g = json.loads(next((tmp_path / "gap").glob("*.json")).read_text())["metrics"]
    assert g["gap/log_px"] >= max(g["gap/log_px_iw"], g["gap/log_px_ais"]) - 1e-9
    assert g["gap/inference"] == pytest.approx(g["gap/approximation"] + g["gap/amortization"])
    assert "ais/log_px" not in g  # AIS ran on the gap's points only
