"""The compiled training loss (``train.compile``, on by default for runs of >= 50,000 steps) is the
eager one: the same loss, metrics and gradients for the same noise, and fresh noise at every step."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch
import torch._inductor.config as inductor_config

from vibench.compiling import CompiledOrEager
from vibench.losses import ELBO, IWAE, ScoreFunctionELBO
from vibench.methods import VariationalInference
from vibench.model import GenerativeModel
from vibench.networks import Decoder, Encoder
from vibench.strategies import Amortized

DIM, LATENT = 30, 4


def make_module(objective) -> VariationalInference:
    torch.manual_seed(0)
    model = GenerativeModel(LATENT, Decoder(LATENT, DIM, [16]))
    strategy = Amortized(Encoder(DIM, LATENT, [16]))
    return VariationalInference(model, strategy, functools.partial(torch.optim.Adam), objective=objective)


def loss_and_grads(module, loss_fn, x, seed):
    module.zero_grad()
    torch.manual_seed(seed)
    loss, stats = loss_fn(x, torch.arange(len(x)), torch.tensor(1.0))
    loss.backward()
    return loss.detach(), stats, [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("objective", [ELBO(1), IWAE(5)], ids=["elbo", "iwae_k5"])
def test_compiled_loss_equals_the_eager_one_for_the_same_noise(objective):
    # With fallback_random the compiled graph draws its noise from torch's generator, as eager code
    # does: the same seed gives the same samples, so loss, metrics and every gradient must agree.
    module = make_module(objective)
    assert module.strategy.compilable and objective.compilable  # what on_fit_start requires to compile
    x = (torch.rand(9, DIM, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    with inductor_config.patch(fallback_random=True):
        compiled = CompiledOrEager(module.eager_loss, "the test's loss")
        c_loss, c_stats, c_grads = loss_and_grads(module, compiled, x, seed=5)
    assert not compiled.failed  # it compiled, rather than falling back to eager
    e_loss, e_stats, e_grads = loss_and_grads(module, module.eager_loss, x, seed=5)
    assert c_loss.item() == pytest.approx(e_loss.item(), rel=1e-5)
    assert torch.allclose(c_stats, e_stats, rtol=1e-5, atol=1e-4)
    assert all(p.grad is not None for p in module.parameters())  # the decoder's and the encoder's
    for c, e in zip(c_grads, e_grads, strict=True):
        assert torch.allclose(c, e, rtol=1e-4, atol=1e-5)
    # and the noise matters: another seed gives another loss
    assert loss_and_grads(module, module.eager_loss, x, seed=6)[0].item() != pytest.approx(e_loss.item(), rel=2e-5)


def test_in_training_the_compiled_loss_draws_the_eager_noise():
    """As training runs it (default settings, gradients on), the compiled loss draws the same noise
    from torch's generator as the eager one: the same seed gives the same loss to rounding, on the
    IWAE preset's network too. So a seed's compiled and eager runs part only by the last digits of
    fused kernels, which thousands of steps amplify (the preset's validation ELBO after one epoch:
    -140.20 compiled, -139.71 eager, seed 2). If a torch upgrade changed this, README's
    ``train.compile`` row and results/anchors.md would need correcting."""
    assert inductor_config.fallback_random is False
    for dim, latent, hidden in ((DIM, LATENT, [16]), (784, 50, [200, 200])):
        torch.manual_seed(0)
        module = VariationalInference(GenerativeModel(latent, Decoder(latent, dim, hidden)), Amortized(Encoder(dim, latent, hidden)),
                                      functools.partial(torch.optim.Adam), objective=IWAE(1))
        x = (torch.rand(20, dim, generator=torch.Generator().manual_seed(1)) < 0.3).float()
        compiled = CompiledOrEager(module.eager_loss, "the test's loss")
        c_loss = loss_and_grads(module, compiled, x, seed=5)[0].item()
        assert not compiled.failed
        e_loss, other = (loss_and_grads(module, module.eager_loss, x, seed=s)[0].item() for s in (5, 6))
        assert c_loss == pytest.approx(e_loss, rel=1e-5) and other != pytest.approx(e_loss, rel=1e-4)


def test_compiled_loss_draws_fresh_noise_at_every_step():
    # The default settings, without gradients (where inductor may draw its own noise): a compiled graph must not freeze
    # its samples into constants. 100 calls on fixed parameters: 100 different losses, whose mean
    # agrees with the eager loss's mean within Monte Carlo error.
    assert inductor_config.fallback_random is False
    module = make_module(IWAE(2))
    x = (torch.rand(9, DIM, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    idx, beta = torch.arange(len(x)), torch.tensor(1.0)
    compiled = CompiledOrEager(module.eager_loss, "the test's loss")
    torch.manual_seed(7)
    with torch.no_grad():
        c = torch.stack([compiled(x, idx, beta)[0] for _ in range(100)])
        e = torch.stack([module.eager_loss(x, idx, beta)[0] for _ in range(100)])
    assert not compiled.failed
    assert len(set(c.tolist())) == 100
    se = (c.var() / 100 + e.var() / 100).sqrt()
    assert (c.mean() - e.mean()).abs() < 4 * se
    assert c.std() == pytest.approx(e.std().item(), rel=0.35)  # the same spread of the noise


class FakeDataModule:
    batch_size = 20

    @staticmethod
    def sizes():
        return {"n_train": 50_000}


@pytest.mark.parametrize(("objective", "epochs", "compiled"), [
    (IWAE(1), 3280, True),  # the IWAE preset: 8.2 million steps
    (ELBO(1), 3280, True),
    (IWAE(1), 19, False),  # 47,500 steps: below auto's 50,000, compiling would not pay
    (ScoreFunctionELBO(1), 3280, False),  # its baseline is state that changes each step: never compiled
], ids=["iwae_preset", "elbo", "iwae_short", "score_function"])
def test_auto_compiles_the_loss_of_long_runs_only(objective, epochs, compiled):
    module = make_module(objective)
    module._trainer = SimpleNamespace(datamodule=FakeDataModule(), max_steps=-1, max_epochs=epochs)
    module.on_fit_start()  # decides; torch.compile compiles lazily, at the first call
    assert isinstance(module._loss, CompiledOrEager) is compiled


def test_each_part_of_a_run_says_how_its_training_loss_ran():
    """A run's ``training_parts`` say, for each start or resume, whether the loss ran compiled:
    auto decides at every start, and the compiled loss rounds differently from the eager one,
    which training amplifies, so a seed's run differs compiled and eager (the IWAE preset's seed 0
    trained eager to epoch 1,936 and compiled after; a 10-epoch run of a seed is eager and is not
    the first 10 epochs of its 3,280-epoch run, which compiles). A compiled loss that fell back to
    eager says so."""
    from vibench.faults import ResumeState

    trainer = SimpleNamespace(global_step=0, current_epoch=0, datamodule=FakeDataModule(), max_steps=-1, max_epochs=3280)
    how = []
    for epochs, fail in ((3280, False), (19, False), (3280, True)):
        module = make_module(IWAE(1))
        module._trainer = SimpleNamespace(**{**trainer.__dict__, "max_epochs": epochs})
        module.on_fit_start()
        state = ResumeState("r", code={"commit": "c", "dirty": False, "changed": []})
        state.on_train_start(trainer, module)
        if fail:
            module._loss.failed = True  # as CompiledOrEager sets it when compiling fails mid-run
        how.append(state.parts()[-1]["training_loss"])
    assert how == ["compiled", "eager", "compiled, fell back to eager"]
