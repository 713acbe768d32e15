"""The settings that copy IWAE's code (yburda/iwae) where the paper is silent: its Adam, the
decoder's output bias, unshuffled minibatches and rounded stage rates (conf/experiment/iwae_mnist_code.yaml)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hydra.utils import instantiate

from tests.test_protocol import lrs_by_epoch
from vibench.data.datamodule import DataModule
from vibench.networks import Decoder
from vibench.optimizers import Adam
from vibench.run import prepare


def take_steps(opt: torch.optim.Optimizer, theta: torch.nn.Parameter, loss_fn, n: int) -> None:
    for _ in range(n):
        opt.zero_grad()
        loss_fn(theta).backward()
        opt.step()


def steps(optimizer_factory, loss_fn, n: int, start: torch.Tensor) -> torch.Tensor:
    theta = torch.nn.Parameter(start.clone())
    take_steps(optimizer_factory([theta]), theta, loss_fn, n)
    return theta.detach()


@pytest.mark.parametrize("fused", [False, True])
def test_first_step_with_the_second_moment_started_at_one(fused):
    # t = 1: m = (1 - b1) g, v = b2 v0 + (1 - b2) g^2; theta -= lr (m / (1 - b1)) / (sqrt(v / (1 - b2)) + eps).
    # g = 0.5, v0 = 1, b2 = 0.999: sqrt(0.99925 / 0.001) = 31.611, a step of 0.01582 lr (torch's
    # Adam, v0 = 0, steps by lr g / (|g| + eps)).
    lr, b1, b2, eps, g = 1e-3, 0.99, 0.999, 1e-4, 0.5
    expected = lr * g / (math.sqrt((b2 * 1.0 + (1 - b2) * g * g) / (1 - b2)) + eps)
    assert expected == pytest.approx(0.01582e-3, rel=1e-3)
    moved = steps(lambda p: Adam(p, lr=lr, betas=(b1, b2), eps=eps, initial_second_moment=1.0, fused=fused), lambda t: g * t.sum(), 1, torch.zeros(1))
    assert -moved.item() == pytest.approx(expected, rel=1e-6)
    plain = steps(lambda p: Adam(p, lr=lr, betas=(b1, b2), eps=eps, fused=fused), lambda t: g * t.sum(), 1, torch.zeros(1))
    assert -plain.item() == pytest.approx(lr * g / (g + eps), rel=1e-6)  # torch's, v0 = 0: about lr


def test_loss_scale_takes_the_steps_of_adam_on_the_summed_loss():
    # IWAE's code differentiates the minibatch's sum (B = 20 times vibench's mean): Adam with
    # loss_scale = 20 on the mean must move exactly as Adam with the code's eps and v0 on the sum.
    torch.manual_seed(0)
    x = torch.randn(20, 3)

    def mean_loss(t):
        return ((x - t) ** 2).sum(-1).mean()

    start = torch.tensor([2.0, -1.0, 0.5])
    on_mean = steps(lambda p: Adam(p, lr=1e-2, betas=(0.99, 0.999), eps=1e-4, initial_second_moment=1.0, loss_scale=20), mean_loss, 300, start)
    on_sum = steps(lambda p: Adam(p, lr=1e-2, betas=(0.99, 0.999), eps=1e-4, initial_second_moment=1.0), lambda t: 20 * mean_loss(t), 300, start)
    unscaled = steps(lambda p: Adam(p, lr=1e-2, betas=(0.99, 0.999), eps=1e-4, initial_second_moment=1.0), mean_loss, 300, start)
    assert torch.allclose(on_mean, on_sum, rtol=0, atol=1e-5)
    assert (on_mean - unscaled).abs().max() > 1e-2  # the scale matters with v0 = 1: the test can fail


def test_a_restored_state_is_not_seeded_again():
    def loss(t):
        return (t - 3.0).pow(2).sum()

    theta = torch.nn.Parameter(torch.zeros(2))
    opt = Adam([theta], lr=0.1, initial_second_moment=1.0)
    take_steps(opt, theta, loss, 5)
    saved, at = copy.deepcopy(opt.state_dict()), theta.detach().clone()  # as a checkpoint holds it
    take_steps(opt, theta, loss, 5)
    again = torch.nn.Parameter(at)
    resumed = Adam([again], lr=0.1, initial_second_moment=1.0)
    resumed.load_state_dict(saved)
    take_steps(resumed, again, loss, 5)
    assert torch.equal(again.detach(), theta.detach())


def test_bad_adam_settings_are_refused():
    p = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="loss_scale"):
        Adam(p, loss_scale=0)
    with pytest.raises(ValueError, match="initial_second_moment"):
        Adam(p, initial_second_moment=-1.0)


def test_the_code_preset_composes_the_codes_settings(compose_cfg):
    cfg = compose_cfg("+experiment=iwae_mnist_code")
    opt = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    group = opt.param_groups[0]
    assert isinstance(opt, Adam) and tuple(group["betas"]) == (0.99, 0.999)
    assert group["eps"] == pytest.approx(1e-4 / 20) and opt.initial_second_moment == pytest.approx(1 / 400)
    assert cfg.model.output_bias == "train_mean" and cfg.dataset.fixed_order is True
    plain = compose_cfg("+experiment=iwae_mnist")  # the preset itself keeps torch's Adam and the rest off
    assert plain.optimizer._target_ == "torch.optim.Adam" and plain.model.output_bias is None and plain.dataset.fixed_order is None
    assert plain.scheduler.lr_lambda.rounded is None


def test_rounded_burda_rates_are_the_codes(compose_cfg):
    # experiments.py: lr = 1e-4 * round(10^(1 - (i-1)/7), 1) in stage i, which starts at epoch (3^(i-1) - 1) / 2.
    starts = [0, 1, 4, 13, 40, 121, 364, 1093]
    lr = lrs_by_epoch(compose_cfg, starts + [3279], "scheduler=burda", "optimizer.lr=1e-3", "scheduler.lr_lambda.rounded=true")
    assert [round(lr[e] * 1e4, 10) for e in starts] == [10.0, 7.2, 5.2, 3.7, 2.7, 1.9, 1.4, 1.0]
    assert lr[3279] == pytest.approx(1e-4)


def test_output_bias_starts_at_the_logit_of_the_clipped_mean():
    dec = Decoder(2, 3, [4])
    dec.start_at_mean(torch.tensor([0.0, 0.5, 1.0]))
    # logit(0.001) = log(0.001 / 0.999) = -6.9068
    assert dec.net[-1].bias.tolist() == pytest.approx([-6.906755, 0.0, 6.906755], abs=1e-4)  # float32: 0.999 is 0.99899995
    gauss = Decoder(2, 3, [], likelihood="gaussian")
    gauss.start_at_mean(torch.tensor([-2.0, 0.25, 7.0]))
    assert gauss.net[-1].bias.tolist() == pytest.approx([-2.0, 0.25, 7.0])


def test_a_run_starts_its_output_bias_at_its_training_data(compose_cfg):
    plan = prepare(compose_cfg("model.output_bias=train_mean", "logger=none", "images=false"))
    mean = plan.splits.train.mean(0).clamp(0.001, 0.999)
    assert torch.allclose(plan.module.model.decoder.net[-1].bias, torch.log(mean / (1 - mean)), atol=1e-5)
    default = prepare(compose_cfg("logger=none", "images=false")).module.model.decoder.net[-1].bias
    assert not torch.allclose(default, torch.log(mean / (1 - mean)), atol=1e-2)


def order_of_epochs(fixed_order, epochs: int = 2) -> list[list[int]]:
    from vibench.data.sources import Splits

    data = torch.rand(12, 2).round()
    dm = DataModule(lambda: Splits(data, data, data, variant="t"), name="t", dim=2, likelihood="bernoulli", batch_size=4, fixed_order=fixed_order)
    out = []
    for epoch in range(epochs):
        dm.shuffle_seed = epoch  # a different seed per pass, as a new epoch gives
        out.append(torch.cat([idx for group in dm.train_dataloader() for _, idx in group]).tolist())
    return out


def test_fixed_order_trains_the_same_minibatches_in_file_order():
    assert order_of_epochs(True) == [list(range(12))] * 2
    first, second = order_of_epochs(None)
    assert sorted(first) == list(range(12)) and first != second and first != list(range(12))
