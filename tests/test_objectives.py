"""Estimators against exact answers: a linear-Gaussian model has closed-form log p(x) and p(z|x)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from tests.linear_gaussian import FixedGuide, make_model, perturbed_posterior, sample_data
from vibench.evaluation import evaluate_batch
from vibench.objectives import combine_iw_chunks, effective_sample_size, elbo, iw_bound, kl_estimate, log_weights


def test_iw_bound_known_values():
    # weights 1 and 3: log((1 + 3) / 2) = log 2
    log_w = torch.tensor([[0.0], [math.log(3.0)]], dtype=torch.float64)
    assert iw_bound(log_w).item() == pytest.approx(math.log(2.0), abs=1e-12)
    # ELBO is the mean of the log weights: (0 + log 3) / 2
    assert elbo(log_w).item() == pytest.approx(0.5 * math.log(3.0), abs=1e-12)
    # constant weights: every bound equals the constant
    assert iw_bound(torch.full((7, 3), -5.0)).tolist() == pytest.approx([-5.0] * 3)


def test_iw_bound_stays_finite_for_very_negative_weights():
    # naive log(mean(exp(.))) underflows to -inf here; logsumexp does not: -1000 + log((1 + e^-1)/2)
    log_w = torch.tensor([[-1000.0], [-1001.0]], dtype=torch.float64)
    assert iw_bound(log_w).item() == pytest.approx(-1000 + math.log((1 + math.exp(-1)) / 2), abs=1e-9)


def test_chunked_iw_equals_unchunked():
    log_w = torch.randn(100, 4, dtype=torch.float64) * 3
    chunks = torch.stack([torch.logsumexp(c, 0) for c in log_w.split(30)])
    assert torch.allclose(combine_iw_chunks(chunks, 100), iw_bound(log_w), atol=1e-12)


def test_effective_sample_size_extremes():
    assert effective_sample_size(torch.zeros(50, 1)).item() == pytest.approx(50.0)
    dominated = torch.tensor([[0.0], [-100.0], [-100.0]])
    assert effective_sample_size(dominated).item() == pytest.approx(1.0, abs=1e-6)


def test_log_weights_is_joint_minus_q():
    assert log_weights(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(0.5)).item() == 2.5


def test_exact_posterior_gives_exact_log_likelihood():
    """With q = p(z|x), every log weight equals log p(x): ELBO = IW = exact to 1e-6."""
    model = make_model()
    x = sample_data(model, 64)
    exact = model.exact_marginal().log_prob(x)
    guide = FixedGuide(model.exact_posterior)
    out = evaluate_batch(model, guide, x, None, num_samples=50, chunk=7)
    assert torch.allclose(out["iw_ll"], exact, atol=1e-6)
    assert torch.allclose(out["elbo"], exact, atol=1e-6)
    # and through the Monte Carlo KL path: the full-covariance posterior has no closed-form KL
    # to the mean-field prior registered in torch, so the evaluator falls back to samples.
    assert torch.allclose(out["recon"] - out["kl"], exact, atol=1e-6)


def test_exact_marginal_matches_bayes_rule():
    """log p(x) = log p(x|z) + log p(z) - log p(z|x) at any z: checks the closed forms against each other."""
    model = make_model()
    x = sample_data(model, 8)
    z = torch.randn(8, 2, dtype=torch.float64)
    log_px_z, log_pz = model.log_joint_terms(x, z)
    rhs = log_px_z + log_pz - model.exact_posterior(x).log_prob(z)
    assert torch.allclose(model.exact_marginal().log_prob(x), rhs, atol=1e-10)


def test_imperfect_q_orders_bounds_and_iw_converges():
    """ELBO <= IW(K) <= log p(x) within Monte Carlo error, and IW(K) -> log p(x) as K grows."""
    torch.manual_seed(0)
    model = make_model()
    x = sample_data(model, 200)
    exact = model.exact_marginal().log_prob(x).mean().item()
    guide = perturbed_posterior(model)
    results = {k: evaluate_batch(model, guide, x, None, num_samples=k, chunk=500) for k in (1, 10, 100, 5000)}
    means = {k: r["iw_ll"].mean().item() for k, r in results.items()}
    elbo_5000 = results[5000]["elbo"].mean().item()
    # the ELBO estimated with 5000 samples is accurate; the gap to log p(x) is KL(q || p(z|x)) > 0
    assert elbo_5000 < means[10] < means[100] < means[5000]
    assert means[5000] <= exact + 1e-3
    gaps = [exact - means[k] for k in (1, 10, 100, 5000)]
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 0.02 < gaps[0]
    # IW with K = 1 is an ELBO estimate: it matches the 5000-sample ELBO within its standard error
    se = results[1]["iw_ll"].std().item() / math.sqrt(len(x))
    assert abs(means[1] - elbo_5000) < 4 * se


def test_analytic_and_monte_carlo_kl_agree():
    torch.manual_seed(0)
    q = Independent(Normal(torch.tensor([[0.3, -1.0], [2.0, 0.1]], dtype=torch.float64), torch.tensor([[0.5, 1.2], [0.9, 0.3]], dtype=torch.float64)), 1)
    p = Independent(Normal(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)), 1)
    analytic = kl_estimate(q, p, analytic=True)
    # closed form 1/2 sum(s^2 + m^2 - 1 - log s^2) for the first row:
    m, s = torch.tensor([0.3, -1.0]), torch.tensor([0.5, 1.2])
    assert analytic[0].item() == pytest.approx(0.5 * float((s**2 + m**2 - 1 - torch.log(s**2)).sum()), abs=1e-6)
    z = q.sample((200_000,))
    mc = kl_estimate(q, p, z, analytic=False)
    se = (q.log_prob(z) - p.log_prob(z)).std(0) / math.sqrt(len(z))
    assert ((mc - analytic).abs() < 4 * se).all()


def test_kl_monte_carlo_needs_samples():
    q = Independent(Normal(torch.zeros(1, 2), torch.ones(1, 2)), 1)
    with pytest.raises(ValueError):
        kl_estimate(q, q, analytic=False)


def test_score_function_baseline_excludes_the_current_batch():
    """Regression: the L = 1 running-mean baseline was the buffer itself, updated in place before
    use, so it contained the current batch's own f and biased the estimator."""
    from vibench.losses import ScoreFunctionELBO
    from vibench.model import GenerativeModel
    from vibench.networks import Decoder, Encoder

    torch.manual_seed(0)
    model, encoder, objective = GenerativeModel(3, Decoder(3, 10, [8])), Encoder(10, 3, [8]), ScoreFunctionELBO(samples=1)
    objective.baseline.fill_(-5.0)
    x = (torch.rand(4, 10) < 0.5).float()
    q = encoder(x, None)
    torch.manual_seed(1)
    recon, _, surrogate = objective.terms(model, q, x, 1.0)
    log_q = None
    torch.manual_seed(1)
    z = q.sample((1,))
    log_q = q.log_prob(z)
    f = model.likelihood(z).log_prob(x).detach()
    expected = ((f - (-5.0)) * log_q).mean(0)  # the baseline from before this batch
    assert torch.allclose(surrogate, expected, atol=1e-5)
    assert objective.baseline.item() == pytest.approx(0.9 * -5.0 + 0.1 * f.mean().item(), abs=1e-5)


def test_iw_monte_carlo_variance_matches_the_spread_of_repeats_on_synthetic_weights():
    """log w ~ N(0, 1): Var[log mean w] ≈ (e - 1) / K (delta method). The estimate computed from
    one draw of K weights matches the spread of 4000 independent draws within 20%."""
    from vibench.objectives import iw_mc_variance

    torch.manual_seed(0)
    k = 1000
    log_w = torch.randn(k, 4000, dtype=torch.float64)  # 4000 independent estimates of the same quantity
    estimates = torch.logsumexp(log_w, 0) - math.log(k)
    var = iw_mc_variance(torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0), k)
    empirical = estimates.var().item()
    assert empirical == pytest.approx((math.e - 1) / k, rel=0.1)  # (e^1 - 1)/K = 0.00172
    assert var.mean().item() == pytest.approx(empirical, rel=0.2)


def test_iw_monte_carlo_error_on_a_poor_q_matches_repeated_evaluations():
    """Linear-Gaussian model, a deliberately poor q (IW bias 0.05 nats at K = 200, an MNIST VAE's
    Monte Carlo error regime): the delta-method Monte Carlo error of the mean IW estimate over 50
    points matches the spread over 100 repeated evaluations within 20% (measured: 0.0343 vs 0.0348).
    With a much worse q (shift 0.6, scale 1.6) it underestimates by ~45%: heavy-tailed weights make
    the sample variance of w unreliable, and eval.repeats measures the spread directly."""
    from tests.linear_gaussian import make_model, perturbed_posterior, sample_data
    from vibench.evaluation import evaluate_batch, summarize

    model = make_model(dim=6, latent=3, sigma=0.5)
    x = sample_data(model, 50)
    guide = perturbed_posterior(model, shift=0.3, scale=1.3)
    torch.manual_seed(0)
    means, reported = [], []
    with torch.no_grad():
        for _ in range(100):
            parts = evaluate_batch(model, guide, x, None, 200, 200)
            means.append(parts["iw_ll"].mean().item())
            reported.append(summarize({k: v for k, v in parts.items() if k != "z_mean"})["test/iw_ll_mc_stderr"])
    spread = torch.tensor(means).std().item()
    assert sum(reported) / len(reported) == pytest.approx(spread, rel=0.2)
