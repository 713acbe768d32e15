"""The K-sample evaluator: chunking, memory budget, compiled likelihood, active units."""

from __future__ import annotations

import torch

from tests.linear_gaussian import FixedGuide, make_model, sample_data
from vibench.evaluation import CompiledLikelihood, active_units, evaluate_batch, samples_per_chunk, summarize


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


def test_compiled_likelihood_matches_eager():
    from vibench.model import GenerativeModel
    from vibench.networks import Decoder, GaussianEncoder

    torch.manual_seed(0)
    model = GenerativeModel(4, Decoder(4, 30, [16])).eval()
    enc = GaussianEncoder(30, 4, [16])
    x = (torch.rand(7, 30) < 0.3).float()
    compiled = CompiledLikelihood(model)
    z = torch.randn(5, 7, 4)
    assert torch.allclose(compiled(z, x), model.likelihood(z).log_prob(x), atol=1e-4)
    torch.manual_seed(1)
    eager = evaluate_batch(model, enc, x, None, 50, 7)
    torch.manual_seed(1)
    fast = evaluate_batch(model, enc, x, None, 50, 7, log_likelihood=compiled)
    assert torch.allclose(eager["iw_ll"], fast["iw_ll"], atol=1e-4)


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
