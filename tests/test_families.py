"""Posterior families (flows) and the VampPrior against exact answers, in float64."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch.distributions import Independent, Normal

from tests.linear_gaussian import make_model, sample_data
from vibench.evaluation import evaluate_batch
from vibench.families import DiagonalGaussian
from vibench.flows import IAF, Planar
from vibench.local_fit import fit_heldout
from vibench.networks import Encoder
from vibench.priors import VampPrior

FLOWS = [Planar(3, layers=4), IAF(3, layers=3, hidden=5)]


def random_params(family, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return family.init_params(n, dtype=torch.float64) + 0.4 * torch.randn(n, family.n_params, generator=g, dtype=torch.float64)


def flow_by_hand(family, params: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """The flow's map applied to base samples ``z0`` ``[B, latent]`` (fresh transforms: no cache)."""
    z = z0
    for t in family.distribution(params).transforms:
        z = t(z)
    return z


@pytest.mark.parametrize("family", FLOWS, ids=lambda f: f.name)
def test_flow_density_is_the_change_of_variables_with_autograds_jacobian(family):
    """log q(y) = log N(z0; mu, sigma) - log|det dy/dz0|, the Jacobian from autograd, per point, to 1e-6."""
    params = random_params(family, 4)
    base = family.base(params)
    torch.manual_seed(5)
    z0 = base.sample()
    expected = []
    for i in range(len(z0)):
        jac = torch.autograd.functional.jacobian(lambda zi: flow_by_hand(family, params[i : i + 1], zi[None])[0], z0[i])
        expected.append(base.log_prob(z0)[i] - torch.linalg.slogdet(jac)[1])
    expected = torch.stack(expected)
    torch.manual_seed(5)
    q = family.distribution(params)
    y = q.sample()  # the same base draw, through q's own transforms
    assert torch.allclose(y, flow_by_hand(family, params, z0), atol=1e-12)
    assert torch.allclose(q.log_prob(y), expected, atol=1e-6, rtol=0)  # from the forward pass's cache, as in training
    if family.density_anywhere:  # IAF: through the inverse, at a point this q did not produce
        assert torch.allclose(family.distribution(params).log_prob(y.clone()), expected, atol=1e-6, rtol=0)
    else:
        with pytest.raises(NotImplementedError, match="posterior=iaf"):
            family.distribution(params).log_prob(y.clone())


@pytest.mark.parametrize("family", FLOWS, ids=lambda f: f.name)
def test_a_flow_with_zero_parameters_is_its_base_gaussian(family):
    params = torch.zeros(3, family.n_params, dtype=torch.float64)
    params[:, : 2 * family.latent] = random_params(DiagonalGaussian(family.latent), 3)
    q, base = family.distribution(params), family.base(params)
    torch.manual_seed(0)
    z = q.sample((7,))
    torch.manual_seed(0)
    assert torch.equal(z, base.sample((7,)))
    assert torch.allclose(q.log_prob(z), base.log_prob(z), atol=1e-12)
    if family.density_anywhere:
        anywhere = torch.randn(5, 3, 3, dtype=torch.float64)
        assert torch.allclose(family.distribution(params).log_prob(anywhere), base.log_prob(anywhere), atol=1e-12)


def test_a_local_fit_starts_at_the_identity_flow():
    for family in FLOWS:
        params = family.init_params(4, dtype=torch.float64)
        z = torch.randn(6, 4, 3, dtype=torch.float64)
        assert torch.allclose(flow_by_hand(family, params, z), z, atol=1e-12)


def test_vampprior_density_is_the_mixture_by_brute_force():
    torch.manual_seed(0)
    encoder = Encoder(6, 3, hidden=[8]).double()
    prior = VampPrior(3, 6, components=4).double()

    class Strategy:
        pass

    strategy = Strategy()
    strategy.encoder = encoder
    prior.attach(strategy)
    z = torch.randn(5, 2, 3, dtype=torch.float64)
    brute = []
    for k in range(4):  # (1/K) sum_k N(z; mu_k, diag sigma_k^2), one component at a time
        params = encoder.net(prior.pseudo_inputs[k].clamp(0, 1))
        mu, logvar = params[:3], params[3:]
        brute.append(Independent(Normal(mu, (0.5 * logvar).exp()), 1).log_prob(z))
    expected = torch.logsumexp(torch.stack(brute), dim=0) - math.log(4)
    assert torch.allclose(prior().log_prob(z), expected, atol=1e-12)
    # its pseudo-inputs and the encoder learn through it
    prior().log_prob(z).sum().backward()
    assert prior.pseudo_inputs.grad is not None and encoder.net[0].weight.grad is not None


def test_vampprior_refuses_an_inference_without_encoder_or_a_planar_family():
    from vibench.errors import ConfigError

    prior = VampPrior(3, 6, components=2)

    class NoEncoder:
        encoder = None

    with pytest.raises(ConfigError, match="inference=vae"):
        prior.attach(NoEncoder())

    class PlanarEncoder:
        encoder = Encoder(6, 3, hidden=[4], family=Planar(3))

    with pytest.raises(ConfigError, match="posterior=iaf"):
        prior.attach(PlanarEncoder())


def test_iaf_fitted_per_point_beats_the_diagonal_gaussian_when_the_posterior_is_correlated():
    """Linear-Gaussian with nearly parallel columns of W: the exact posterior is correlated, and the
    best diagonal Gaussian misses log p(x) by exactly the mean-field gap, -1/2 log det of the
    posterior's correlation (here 0.21 nats). A per-point IAF fit gets most of it back."""
    model = make_model(dim=5, latent=2, seed=0)
    g = torch.Generator().manual_seed(3)
    w = torch.randn(5, 1, generator=g, dtype=torch.float64) @ torch.ones(1, 2, dtype=torch.float64) + 0.15 * torch.randn(5, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        model.decoder.net[0].weight.copy_(w)
    precision = torch.eye(2, dtype=torch.float64) + w.T @ w / 0.7**2
    mean_field_gap = 0.5 * (precision.diag().log().sum() - torch.logdet(precision)).item()
    assert mean_field_gap > 0.15  # W is far from orthogonal
    x = sample_data(model, 10)
    exact = model.exact_marginal().log_prob(x).mean().item()
    adam = functools.partial(torch.optim.Adam, lr=2e-2)
    elbo = {}
    for family in (DiagonalGaussian(2), IAF(2, layers=2)):
        torch.manual_seed(0)
        fit = fit_heldout(model, family, x, family.init_params(10, dtype=torch.float64), adam, samples=8, max_steps=1500, window=100, patience=5)
        q = family.distribution(fit.params)
        torch.manual_seed(1)
        elbo[family.name] = evaluate_batch(model, lambda *_: q, x, None, 4000, 4000)["elbo"].mean().item() - exact
    assert elbo["gaussian"] == pytest.approx(-mean_field_gap, abs=0.02)  # the family's limit, reached
    assert elbo["iaf"] > elbo["gaussian"] + 0.1 and elbo["iaf"] <= 0.01


@pytest.mark.parametrize("posterior", ["planar", "iaf"])
def test_flow_families_train_evaluate_and_decompose_the_gap_from_the_command_line(compose_cfg, tmp_path, posterior):
    """The gap's q* is fitted in the encoder's family; the record names the family."""
    from vibench.records import read_record
    from vibench.run import run

    run(compose_cfg(f"posterior={posterior}", "trainer.max_epochs=2", "iw_samples=100", "gap.enabled=true", "gap.n_points=10", "gap.iw_samples=200",
                    "gap.max_steps=100", "gap.window=20", "gap.samples=5", "logger=none"))
    rec = read_record(next((tmp_path / "runs").glob("*.json")))
    m = rec["metrics"]
    assert rec["status"] == "completed" and rec["inference"]["family"] == posterior and "images_error" not in rec
    assert m["test/elbo"] <= m["test/iw_ll"] < 0 and m["gap/elbo_local"] >= m["gap/elbo_encoder"] - 0.05  # q* starts at the encoder
    assert m["gap/approximation"] + m["gap/amortization"] == pytest.approx(m["gap/inference"], abs=1e-9)


def test_vampprior_trains_and_evaluates_and_its_pseudo_inputs_learn(compose_cfg, tmp_path):
    from vibench.analyses import load_checkpoint
    from vibench.records import read_record
    from vibench.run import run

    run(compose_cfg("prior=vamp", "prior.components=20", "trainer.max_epochs=2", "iw_samples=100", "logger=none", "images=false"))
    rec = read_record(next((tmp_path / "runs").glob("*.json")))
    assert rec["status"] == "completed" and rec["inference"]["prior"] == "vampprior"
    assert rec["metrics"]["test/elbo"] <= rec["metrics"]["test/iw_ll"] < 0
    state = load_checkpoint(tmp_path / "out" / "checkpoints" / "last.ckpt")["state_dict"]
    pseudo = state["model.prior_module.pseudo_inputs"]
    assert pseudo.shape == (20, 64) and (pseudo - 0.05).abs().max() > 0.05  # moved from N(0.05, 0.01)
    assert not any(k.startswith("model.prior_module._encoder") for k in state)  # the encoder is saved once, as the strategy's


@pytest.mark.parametrize("overrides, fragment", [
    (["prior=vamp", "posterior=planar"], "posterior=planar cannot"),
    (["prior=vamp", "inference=svi"], "use inference=vae or inference=svi_encoder"),
    (["posterior=planar", "ais.enabled=true"], "ais.start=encoder needs q's density at any z"),
])
def test_combinations_that_cannot_work_are_refused_before_training(compose_cfg, tmp_path, overrides, fragment):
    from vibench.errors import ConfigError
    from vibench.run import run

    with pytest.raises(ConfigError, match=fragment):
        run(compose_cfg(*overrides, "logger=none"))
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*.json"))


@pytest.mark.parametrize("family", FLOWS, ids=lambda f: f.name)
def test_an_untrained_flow_encoder_is_its_gaussian_encoder(family):
    """The encoder's flow outputs start at the identity for every x: q(z|x) is the base Gaussian."""
    torch.manual_seed(0)
    encoder = Encoder(6, 3, hidden=[8], family=family).double()
    x = torch.rand(5, 6, dtype=torch.float64)
    params = encoder.params(x)
    assert torch.equal(params[:, 6:], params[:1, 6:].expand(5, -1))  # the same flow for every x
    z = torch.randn(4, 5, 3, dtype=torch.float64)
    assert torch.allclose(flow_by_hand(family, params, z), z, atol=1e-12)
    q = encoder(x)
    s = q.sample((3,))
    assert torch.allclose(q.log_prob(s), family.base(params).log_prob(s), atol=1e-12)


def test_planar_log_det_stays_finite_for_large_parameters_in_float32():
    """Regression: with |w| ~ 40 and w^T u very negative, the float32 dot product w^T u_hat rounded
    below -1 (-1.0001 in a diverged MNIST run), the Jacobian turned singular and log|det| exploded.
    w^T u_hat is m(w^T u) > -1 exactly: the log-determinant now matches float64 and stays finite."""
    from vibench.flows import PlanarTransform

    g = torch.Generator().manual_seed(0)
    w = 40 * torch.randn(200, 20, generator=g, dtype=torch.float64)
    u = -w / w.norm(dim=-1, keepdim=True) * torch.linspace(0.05, 0.4, 200, dtype=torch.float64)[:, None]  # w^T u from about -7 to -86
    b = torch.zeros(200, dtype=torch.float64)
    z = torch.zeros(200, 20, dtype=torch.float64)  # at w^T z + b = 0, h' = 1: the worst case
    exact = PlanarTransform(u, w, b).log_abs_det_jacobian(z, None)
    single = PlanarTransform(u.float(), w.float(), b.float()).log_abs_det_jacobian(z.float(), None)
    assert torch.isfinite(single).all() and (exact < -5).all()  # nearly singular, yet finite
    assert torch.allclose(single.double(), exact, rtol=1e-4, atol=0)
    lhs = torch.linalg.slogdet(torch.autograd.functional.jacobian(lambda zi: PlanarTransform(u[:1], w[:1], b[:1])._call(zi[None])[0], z[0]))[1]
    assert lhs == pytest.approx(exact[0].item(), abs=1e-8)
