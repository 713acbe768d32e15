"""The K-sample evaluator: chunking, memory budget, compiled likelihood, active units."""

from __future__ import annotations

import torch

from tests.linear_gaussian import FixedGuide, make_model, sample_data
from vibench.evaluation import CompiledChunk, active_units, evaluate_batch, samples_per_chunk, summarize


def test_samples_per_chunk_from_budget():
    # 100 points x (2*20 + 2*500 + 3*784) floats x 4 bytes = 1.3568 MB per sample; 16 MiB -> 12 samples
    assert samples_per_chunk(100, 20, [500], 784, 16) == 12
    assert samples_per_chunk(10_000, 20, [500], 784, 0.001) == 1  # never zero


def test_chunking_does_not_change_the_answer_with_exact_posterior():
    model = make_model()
    x = sample_data(model, 20)
    guide = FixedGuide(model.exact_posterior)
    a = evaluate_batch(model, guide, x, None, 100, chunk=1)
    b = evaluate_batch(model, guide, x, None, 100, chunk=100)
    assert torch.allclose(a["iw_ll"], b["iw_ll"], atol=1e-9)


def test_fast_decoder_log_prob_equals_torch_distributions():
    """tanh by exp and the grouped Bernoulli log-probability give torch's density, float64 to 1e-10."""
    from vibench.model import GenerativeModel
    from vibench.networks import Decoder

    torch.manual_seed(0)
    for dim in (784, 30, 7, 101):  # groups of 98, 30, 7 and 1 (a prime dimension)
        model = GenerativeModel(4, Decoder(4, dim, [16, 8])).double()
        z = torch.randn(5, 9, 4, dtype=torch.float64) * 10  # saturated tanh units and large logits too
        x = (torch.rand(9, dim, dtype=torch.float64) < 0.3).double()
        assert torch.allclose(model.decoder.fast_log_prob(z, x), model.likelihood(z).log_prob(x), rtol=0, atol=1e-10)


def test_fast_kernels_at_extremes_in_float32():
    from torch.distributions import Bernoulli, Independent

    from vibench.networks import bernoulli_log_prob, tanh_by_exp

    a = torch.tensor([-1e4, -90.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 90.0, 1e4])
    assert torch.allclose(tanh_by_exp(a), torch.tanh(a), rtol=0, atol=3e-7)
    logits = torch.tensor([[-1e4, -100.0, -17.0, -1.0, 0.0, 1.0, 17.0, 100.0, 1e4, 3.0]] * 2)
    x = torch.tensor([[0.0, 1.0] * 5, [1.0, 0.0] * 5])
    expected = Independent(Bernoulli(logits=logits.double()), 1).log_prob(x.double())
    got = bernoulli_log_prob(logits, x)
    assert torch.isfinite(got).all() and torch.allclose(got.double(), expected, rtol=1e-6)


def test_compiled_chunk_matches_eager():
    """The compiled evaluation gives the eager one's numbers for the same samples (same seed)."""
    from vibench.evaluation import chunk_terms
    from vibench.model import GenerativeModel
    from vibench.networks import Decoder, Encoder

    torch.manual_seed(0)
    model = GenerativeModel(4, Decoder(4, 30, [16])).eval()
    enc = Encoder(30, 4, [16])
    x = (torch.rand(7, 30) < 0.3).float()
    compiled = CompiledChunk(model)
    q = enc(x)
    eps = torch.randn(5, 7, 4)
    z = q.base_dist.loc + q.base_dist.scale * eps
    expected = chunk_terms(model.likelihood(z).log_prob(x), model.prior().log_prob(z), q.log_prob(z))
    for got, want in zip(compiled(eps, q.base_dist.loc, q.base_dist.scale, x), expected):
        assert torch.allclose(got, want, atol=1e-4)
    torch.manual_seed(1)
    eager = evaluate_batch(model, enc, x, None, 50, 7)
    torch.manual_seed(1)
    fast = evaluate_batch(model, enc, x, None, 50, 7, compiled=compiled)
    for key in ("iw_ll", "recon", "kl", "elbo"):
        assert torch.allclose(eager[key], fast[key], atol=1e-4), key
    assert not compiled.failed


def test_compiled_chunk_exact_with_the_exact_posterior():
    """Linear-Gaussian model, q = p(z | x): every weight is p(x), so the compiled IW bound is log p(x) exactly."""
    from torch.distributions import Independent, Normal

    model = make_model(orthogonal=True)  # W^T W = 2.25 I: the exact posterior is a diagonal Gaussian
    x = sample_data(model, 20)
    posterior = model.exact_posterior(x)
    scale = posterior.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
    assert torch.allclose(posterior.covariance_matrix, torch.diag_embed(scale**2), atol=1e-12)
    diag = Independent(Normal(posterior.mean, scale), 1)
    out = evaluate_batch(model, FixedGuide(lambda _: diag), x, None, 30, 7, compiled=CompiledChunk(model))
    assert torch.allclose(out["iw_ll"], model.exact_marginal().log_prob(x), atol=1e-8)


def test_active_units_known_answer():
    z = torch.zeros(100, 3)
    z[:, 0] = torch.linspace(-1, 1, 100)  # variance ~0.34: active
    z[:, 1] = 0.05 * torch.linspace(-1, 1, 100)  # variance ~0.00085: inactive
    assert active_units(z) == 1


def test_summarize_means_and_standard_errors():
    per = {"iw_ll": torch.tensor([-1.0, -3.0]), "elbo": torch.tensor([-2.0, -4.0]), "kl": torch.tensor([1.0, 1.0]), "recon": torch.tensor([-1.0, -3.0])}
    s = summarize(per)
    assert s["test/iw_ll"] == -2.0 and s["test/elbo"] == -3.0 and s["test/n"] == 2
    assert abs(s["test/iw_ll_stderr"] - 2 ** 0.5 / 2 ** 0.5) < 1e-12  # std 1.414 / sqrt 2 = 1
