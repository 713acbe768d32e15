"""Non-amortized SVI and the gap decomposition against exact answers."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from tests.linear_gaussian import FixedGuide, make_model, sample_data
from vibench.evaluation import evaluate_batch
from vibench.gap import gap_decomposition, summarize_gaps
from vibench.families import DiagonalGaussian
from vibench.local_fit import fit_heldout, refine
from vibench.networks import Decoder, Encoder
from vibench.model import GenerativeModel
from vibench.records import read_record
from vibench.run import run

adam = functools.partial(torch.optim.Adam, lr=2e-2)


gaussian = DiagonalGaussian(2)


def test_gaussian_family_starts_at_the_prior_and_reads_mean_then_log_variance():
    family = DiagonalGaussian(3)
    q = family.distribution(family.init_params(2))
    assert torch.allclose(q.mean, torch.zeros(2, 3)) and torch.allclose(q.stddev, torch.ones(2, 3))
    q = family.distribution(torch.tensor([[1.0, 2.0, 3.0, 0.0, 2 * math.log(2), -2 * math.log(2)]]))
    assert torch.allclose(q.mean, torch.tensor([[1.0, 2.0, 3.0]])) and torch.allclose(q.stddev, torch.tensor([[1.0, 2.0, 0.5]]))


def test_svi_reaches_the_exact_posterior_with_orthogonal_w():
    """Orthogonal W: the exact posterior is diagonal, so a fitted q_i attains ELBO = log p(x)."""
    torch.manual_seed(0)
    model = make_model(dim=6, latent=2, orthogonal=True)
    x = sample_data(model, 100)
    init = gaussian.init_params(len(x), dtype=torch.float64)
    fit = fit_heldout(model, gaussian, x, init, adam, samples=8, max_steps=3000, window=100, patience=5)
    params = fit.params
    assert fit.converged.all() and (fit.steps < 3000).all() and len(set(fit.steps.tolist())) > 1  # each point stopped by its own rule
    post = model.exact_posterior(x)
    q = gaussian.distribution(params)
    # log p(x) - ELBO(q) = KL(q || p(z|x)) exactly; both Gaussian, so it is closed-form: no MC noise
    q_full = torch.distributions.MultivariateNormal(q.mean, covariance_matrix=torch.diag_embed(q.variance))
    gap = torch.distributions.kl_divergence(q_full, post)
    assert gap.max() < 0.05  # per datapoint
    # and the evaluator's Monte Carlo ELBO agrees with log p(x) - KL on average
    out = evaluate_batch(model, FixedGuide(lambda _: q), x, None, num_samples=2000, chunk=2000)
    exact = model.exact_marginal().log_prob(x)
    assert (out["elbo"] - (exact - gap)).mean().abs() < 0.01
    # the fitted parameters are the posterior's, up to the noise of the last stochastic steps
    # (a mean off by 0.3 posterior standard deviations costs 0.045 nats of KL)
    assert ((params[:, :2] - post.mean).abs() / post.stddev).max() < 0.3
    assert torch.allclose(params[:, 2:].exp(), post.variance, rtol=0.2)


def test_refine_touches_only_local_parameters():
    model = make_model()
    x = sample_data(model, 10)
    params = refine(model, gaussian, x, gaussian.init_params(10, dtype=torch.float64), 5, functools.partial(torch.optim.SGD, lr=0.1))
    assert not params.requires_grad and params.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def small_vae(seed=0):
    torch.manual_seed(seed)
    model = GenerativeModel(4, Decoder(4, 64, hidden=[32], likelihood="bernoulli")).double()
    encoder = Encoder(64, 4, hidden=[32]).double()
    return model, encoder


def test_fitted_q_star_beats_the_encoder_and_gaps_add_up():
    from sklearn.datasets import load_digits

    model, encoder = small_vae()
    x = torch.from_numpy((load_digits().data[:40] > 8).astype("float64"))
    parts = gap_decomposition(model, encoder, x, torch.arange(40), iw_samples=500, chunk=500, optimizer=adam, samples=10, max_steps=1500, window=50, patience=5)
    # q* is the best of the family for each point: its ELBO is at least the encoder's. Both gaps are
    # >= 0 on average; per point, the estimates carry Monte Carlo noise of about 0.07 nats at K = 500.
    assert parts["amortization"].mean() > 0.1 and (parts["amortization"] > -0.2).all()
    assert parts["approximation"].mean() > 0 and (parts["approximation"] > -0.2).all()
    # the decomposition adds up by construction
    assert torch.allclose(parts["approximation"] + parts["amortization"], parts["inference"], atol=1e-10)
    assert torch.allclose(parts["inference"], parts["log_px"] - parts["elbo_encoder"], atol=1e-10)
    summary = summarize_gaps([parts])
    assert summary["gap/approximation"] + summary["gap/amortization"] == pytest.approx(summary["gap/inference"], abs=1e-9)
    assert summary["gap/n"] == 40


@pytest.mark.parametrize("inference, flavour", [("svi", "persistent"), ("svi_reset", "reset"), ("svi_encoder", "encoder")])
def test_svi_runs_end_to_end_and_records_its_flavour(compose_cfg, tmp_path, inference, flavour):
    cfg = compose_cfg(f"inference={inference}", "inference.strategy.inner_steps=3", "trainer.max_epochs=1", "iw_samples=100",
                      "inference.strategy.heldout.max_steps=100", "logger=none", "images=false")
    run(cfg)
    (path,) = (tmp_path / "runs").glob("*.json")
    rec = read_record(path)
    assert rec["method"] == "svi" and rec["inference"]["svi_flavour"] == flavour and rec["inference"]["inner_steps"] == 3
    assert rec["inference"]["inner_optimizer"] == {"name": "SGD", "lr": 1.0, "momentum": 0.5}
    m = rec["metrics"]
    assert m["test/elbo"] <= m["test/iw_ll"]
    assert rec["timing"]["inner_s"] > 0 and rec["timing"]["heldout_fit_s"] > 0
    assert 0 < m["test/heldout_fit_steps"] <= 100
    # 100 steps cannot show more than 3 non-improving 50-step windows: no fit converged, and the record says so
    assert m["test/heldout_converged"] == 0.0
    assert any("held-out q_i fits of 100%" in w and "Raise inference.strategy.heldout.max_steps" in w for w in rec["warnings"])


def test_svi_learns_linear_gaussian_and_approaches_exact_ll(compose_cfg, tmp_path):
    cfg = compose_cfg("+experiment=linear_gaussian", "inference=svi", "dataset.source.orthogonal=true", "trainer.max_epochs=10",
                      "inference.strategy.inner_steps=10", "inference.strategy.inner_optimizer.lr=0.05", "inference.strategy.inner_optimizer.momentum=0.5",
                      "iw_samples=500", "logger=none")
    run(cfg)
    (path,) = (tmp_path / "runs").glob("*.json")
    m = read_record(path)["metrics"]
    assert m["test/elbo"] <= m["test/iw_ll"] <= m["test/exact_ll"] + 0.01
    assert m["test/exact_ll"] - m["test/elbo"] < 0.2


def test_gap_run_from_config_reports_the_three_numbers(compose_cfg, tmp_path):
    cfg = compose_cfg("gap.enabled=true", "gap.n_points=20", "gap.iw_samples=200", "gap.max_steps=200", "gap.window=20", "gap.samples=5",
                      "trainer.max_epochs=2", "iw_samples=100", "logger=none", "images=false")
    run(cfg)
    (path,) = (tmp_path / "runs").glob("*.json")
    rec = read_record(path)
    m = rec["metrics"]
    assert m["gap/approximation"] + m["gap/amortization"] == pytest.approx(m["gap/inference"], abs=1e-9)
    assert m["gap/inference"] == pytest.approx(m["gap/log_px"] - m["gap/elbo_encoder"], abs=1e-9)
    assert m["gap/n"] == 20 and rec["timing"]["gap_s"] > 0
    # 200 steps from the prior at lr 1e-3 cannot converge: the record says so
    assert m["gap/converged"] == 0.0 and "stopped at gap.max_steps=200 before converging" in rec["warnings"][0]
    # and from the saved checkpoint, without training
    ckpt = tmp_path / "out" / "checkpoints" / "last.ckpt"
    cfg2 = compose_cfg("gap.enabled=true", f"gap.checkpoint={ckpt}", "gap.n_points=20", "gap.iw_samples=200", "gap.max_steps=200", "gap.window=20",
                       "gap.samples=5", "iw_samples=100", "logger=none", "images=false", f"results_dir={tmp_path / 'runs2'}")
    run(cfg2)
    (path2,) = (tmp_path / "runs2").glob("*.json")
    rec2 = read_record(path2)
    # the record describes the checkpoint's model (its steps and epochs), and nothing was trained
    assert rec2["gap_checkpoint"] == str(ckpt) and rec2["global_step"] == rec["global_step"] > 0 and rec2["epochs"] == 2
    assert rec2["timing"]["train_s"] < 0.05 * rec["timing"]["train_s"] or rec2["timing"]["train_s"] == 0
    # same trained model, same seed: the same test ELBO up to Monte Carlo noise
    assert rec2["metrics"]["test/elbo"] == pytest.approx(m["test/elbo"], abs=0.5)


def test_gap_from_the_encoder_starts_no_worse():
    from sklearn.datasets import load_digits

    model, encoder = small_vae()
    x = torch.from_numpy((load_digits().data[:40] > 8).astype("float64"))
    parts = gap_decomposition(model, encoder, x, torch.arange(40), iw_samples=500, chunk=500, optimizer=adam, samples=10, max_steps=50, window=10, patience=100, init="encoder")
    # 50 steps from the encoder: not converged (patience never runs out), yet no worse than the encoder
    assert not parts["converged"].any() and parts["amortization"].mean() > 0


def test_gap_refuses_svi_before_training(compose_cfg):
    from vibench.errors import ConfigError

    with pytest.raises(ConfigError, match="inference=vae"):
        run(compose_cfg("gap.enabled=true", "inference=svi", "logger=none"))


def test_clip_per_datapoint_known_values():
    from vibench.local_fit import clip_per_datapoint

    g = torch.tensor([[3.0, 0.0, 0.0, 4.0], [0.3, 0.0, 0.0, 0.4]])  # row norms 5 and 0.5
    clipped = clip_per_datapoint(g, 1.0)
    assert torch.allclose(clipped[0], g[0] / 5) and torch.allclose(clipped[1], g[1])
    assert clip_per_datapoint(g, None) is g


def test_inner_sgd_at_lr_1_improves_a_784_dim_bernoulli_elbo():
    """Regression: without per-datapoint clipping, SGD lr 1 (Kim et al.'s setting) threw q_i off
    (a validation ELBO of -415,517 nats on MNIST). With clipping at 5 it climbs."""
    from vibench.local_fit import negative_elbo_sum

    torch.manual_seed(0)
    model = GenerativeModel(5, Decoder(5, 784, hidden=[500], likelihood="bernoulli"))
    with torch.no_grad():  # an informative decoder: the posterior sits far from the prior
        model.decoder.net[0].weight.mul_(3)
        model.decoder.net[2].weight.mul_(3)
        x = model.likelihood(torch.randn(50, 5)).sample()
    family = DiagonalGaussian(5)
    init = family.init_params(50)
    sgd = functools.partial(torch.optim.SGD, lr=1.0, momentum=0.5)

    def elbo(params):
        return -negative_elbo_sum(model, family, x, params, samples=200).item() / 50

    refined = refine(model, family, x, init, 20, sgd, samples=1)
    assert elbo(refined) > elbo(init) + 50 and torch.isfinite(refined).all()
    unclipped = refine(model, family, x, init, 20, sgd, samples=1, max_grad_norm=None)
    assert elbo(refined) > elbo(unclipped)


def test_gap_fit_reports_progress_in_a_log_file(monkeypatch, capsys):
    """Written to a file (not a terminal), the fit's progress is a plain line every 30 s: the step,
    the cap, and how many points have stopped (the gap's fit was silent for 22 minutes)."""
    import itertools
    import time

    from vibench.analyses import fit_progress

    clock = itertools.count(0.0, 31.0)  # every reading 31 s after the last
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    with fit_progress("gap: fitting q*", 2, 1000) as on_window:
        on_window(100, 3, 10)
        on_window(200, 7, 10)
    out = capsys.readouterr().out
    assert "gap: fitting q*: step 100 of at most 1000, 3/10 points stopped" in out
    assert "step 200 of at most 1000, 7/10 points stopped" in out


def test_a_persistent_svi_checkpoint_can_be_evaluated_without_training(compose_cfg, tmp_path):
    """evaluate= on a persistent SVI run loads its q_i table (it failed: 'Unexpected key(s) in
    state_dict: local.table') and tests the trained model: its ELBO is that of the run's own test
    up to Monte Carlo and fitting noise, far from an untrained model's."""
    common = ("inference=svi", "inference.strategy.inner_steps=3", "trainer.max_epochs=2", "iw_samples=50", "inference.strategy.heldout.max_steps=100", "logger=none", "images=false")
    run(compose_cfg(*common, f"results_dir={tmp_path / 'trained'}"))
    trained = read_record(next((tmp_path / "trained").glob("*.json")))
    run(compose_cfg(*common, f"evaluate={tmp_path / 'out'}", f"output_dir={tmp_path / 'eval'}", f"results_dir={tmp_path / 'evaluated'}"))
    evaluated = read_record(next((tmp_path / "evaluated").glob("*.json")))
    assert evaluated["status"] == "completed" and evaluated["evaluated_checkpoint"]["select"] == "given"
    assert evaluated["metrics"]["test/elbo"] == pytest.approx(trained["metrics"]["test/elbo"], abs=0.3)
    assert evaluated["global_step"] == trained["global_step"]
