"""Training-protocol pieces of the paper anchors: learning-rate schedules through the real config,
initializers' statistics, repeated evaluation, and model selection on the validation ELBO."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from hydra.utils import instantiate

from vibench.evaluation import summarize
from vibench.networks import initialize
from vibench.schedules import burda_lr_factor


def lrs_by_epoch(compose_cfg, epochs: list[int], *overrides: str) -> dict[int, float]:
    """The lr in force during each epoch of ``epochs``, from the composed optimizer and scheduler,
    stepped once per epoch as the LightningModule does."""
    cfg = compose_cfg(*overrides)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = instantiate(cfg.optimizer)([param])
    scheduler = instantiate(cfg.scheduler)(optimizer) if cfg.scheduler is not None else None
    out = {}
    for epoch in range(max(epochs) + 1):
        if epoch in epochs:
            out[epoch] = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
    return out


def test_burda_schedule_first_and_last_epoch_of_each_stage(compose_cfg):
    # Stage i lasts 3^(i-1) epochs: stages start at 0, 1, 4, 13, 40, 121, 364, 1093; 3,280 in all.
    lr = lrs_by_epoch(compose_cfg, [0, 1, 3, 4, 12, 13, 39, 40, 120, 121, 363, 364, 1092, 1093, 3279, 4000], "scheduler=burda", "optimizer.lr=1e-3")
    expected = {0: 1, 1: 2, 3: 2, 4: 3, 12: 3, 13: 4, 39: 4, 40: 5, 120: 5, 121: 6, 363: 6, 364: 7, 1092: 7, 1093: 8, 3279: 8, 4000: 8}
    for epoch, stage in expected.items():
        assert lr[epoch] == pytest.approx(1e-3 * 10 ** (-(stage - 1) / 7), rel=1e-12), epoch
    assert lr[3279] == pytest.approx(1e-4)  # the last stage: 1e-3 * 10^(-7/7)
    assert burda_lr_factor(0) == 1.0


def test_multistep_schedule_at_its_milestones(compose_cfg):
    lr = lrs_by_epoch(compose_cfg, [0, 199, 200, 349, 350, 500, 750, 999, 1000, 1999], "scheduler=multistep", "optimizer.lr=1e-3")
    g = 10 ** (-1 / 5)
    expected = {0: 1, 199: 1, 200: g, 349: g, 350: g**2, 500: g**3, 750: g**4, 999: g**4, 1000: g**5, 1999: g**5}
    for epoch, factor in expected.items():
        assert lr[epoch] == pytest.approx(1e-3 * factor, rel=1e-9), epoch
    assert lr[1000] == pytest.approx(1e-4)  # five steps of 10^(-1/5): one decade


def test_no_schedule_keeps_the_lr(compose_cfg):
    assert set(lrs_by_epoch(compose_cfg, [0, 10, 500], "scheduler=none", "optimizer.lr=3e-4").values()) == {3e-4}


def test_adam_eps_and_betas_reach_the_optimizer(compose_cfg):
    cfg = compose_cfg("optimizer.eps=1e-4", "optimizer.betas=[0.5,0.9]")
    group = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))]).param_groups[0]
    assert group["eps"] == 1e-4 and tuple(group["betas"]) == (0.5, 0.9)


def big_layers() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(400, 300), torch.nn.Tanh(), torch.nn.Linear(300, 200))


def test_glorot_uniform_statistics():
    net = initialize(big_layers(), "glorot_uniform")
    for layer, (fan_in, fan_out) in zip((net[0], net[2]), ((400, 300), (300, 200))):
        a = math.sqrt(6 / (fan_in + fan_out))  # U(-a, a): variance a^2 / 3 = 2 / (fan_in + fan_out)
        w = layer.weight.detach().double()
        assert w.abs().max() <= a and w.abs().max() > 0.99 * a
        assert w.var().item() == pytest.approx(2 / (fan_in + fan_out), rel=0.02)
        assert torch.count_nonzero(layer.bias) == 0


def test_normal_init_statistics():
    net = initialize(big_layers(), "normal")
    w = torch.cat([p.detach().flatten() for p in net.parameters()]).double()  # weights and biases
    assert w.mean().item() == pytest.approx(0.0, abs=1e-4)  # 200,700 draws: sd of the mean 2e-5
    assert w.std().item() == pytest.approx(0.01, rel=0.01)


def test_default_init_is_torchs_own():
    net, reference = initialize(big_layers(), "default"), big_layers()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), reference.parameters()))
    bound = 1 / math.sqrt(400)  # torch: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), variance bound^2 / 3
    assert net[0].weight.detach().double().var().item() == pytest.approx(bound**2 / 3, rel=0.02)


def test_he_normal_statistics_and_biases_left_alone():
    net, reference = initialize(big_layers(), "he_normal"), big_layers()
    for layer, ref, fan_in in ((net[0], reference[0], 400), (net[2], reference[2], 300)):
        w = layer.weight.detach().double()
        assert w.mean().item() == pytest.approx(0.0, abs=4 * math.sqrt(2 / fan_in / w.numel()))
        assert w.var().item() == pytest.approx(2 / fan_in, rel=0.02)  # N(0, 2 / fan_in)
        assert torch.equal(layer.bias, ref.bias)  # the VampPrior code's he_init sets weights only


def test_gated_layers_gate_and_count_their_parameters():
    from vibench.networks import GatedLinear, mlp

    net = mlp([784, 300, 300, 80], "gated")  # the VampPrior encoder: two gated layers, then linear
    assert [type(m) for m in net] == [GatedLinear, GatedLinear, torch.nn.Linear]
    assert sum(p.numel() for p in net.parameters()) == 2 * (784 * 300 + 300) + 2 * (300 * 300 + 300) + 300 * 80 + 80
    layer, x = GatedLinear(5, 3), torch.randn(4, 5)
    with torch.no_grad():
        layer.g.weight.zero_()
        layer.g.bias.fill_(40.0)  # gate open: sigmoid = 1 in float32
        assert torch.equal(layer(x), layer.h(x))
        layer.g.bias.fill_(0.0)  # half open
        assert torch.allclose(layer(x), 0.5 * layer.h(x))
        layer.g.bias.fill_(-120.0)  # closed
        assert torch.count_nonzero(layer(x)) == 0


def test_log_variance_limits_bound_q():
    from vibench.families import DiagonalGaussian

    params = torch.tensor([[0.0, 1.0, -50.0, 50.0]])  # mu = (0, 1), log sigma^2 = (-50, 50)
    bounded = DiagonalGaussian(2, logvar_min=-6.0, logvar_max=2.0).distribution(params)
    assert torch.allclose(bounded.base_dist.scale, torch.tensor([[math.exp(-3.0), math.exp(1.0)]]))
    default = DiagonalGaussian(2).distribution(params)
    assert torch.allclose(default.base_dist.scale, torch.tensor([[math.exp(-15.0), math.exp(10.0)]]))
    with pytest.raises(ValueError, match="logvar_min=2.0 must be below"):
        DiagonalGaussian(2, logvar_min=2.0, logvar_max=-6.0)


def test_init_reaches_encoder_and_decoder(compose_cfg):
    cfg = compose_cfg("model.init=normal")
    model = instantiate(cfg.model)
    guide = instantiate(cfg.inference.strategy.encoder)
    for net in (model.decoder.net, guide.net):
        w = torch.cat([p.detach().flatten() for p in net.parameters()])
        assert w.std().item() == pytest.approx(0.01, rel=0.05)


def test_repeats_give_r_estimates_and_their_spread():
    # Three repeats whose dataset means are -10, -11 and -12: mean -11, sample sd 1.
    repeats = torch.tensor([[-10.0, -11.0, -12.0], [-10.0, -11.0, -12.0]])
    out = summarize({"iw_ll": repeats[:, 0], "iw_ll_repeats": repeats, "elbo": torch.tensor([-13.0, -13.0])})
    assert out["test/iw_ll_repeats"] == [-10.0, -11.0, -12.0]
    assert out["test/iw_ll"] == pytest.approx(-11.0) and out["test/iw_ll_repeat_sd"] == pytest.approx(1.0)


def test_run_with_repeats_and_early_stopping_tests_the_best_checkpoint(compose_cfg, tmp_path):
    """Early stopping on val/elbo stops the run; the record names the best epoch, and the model
    tested is that checkpoint's (its val ELBO and its test ELBO are reproduced from the file)."""
    from vibench.analyses import load_checkpoint
    from vibench.evaluation import evaluate_batch
    from vibench.methods import VariationalInference
    from vibench.run import run

    cfg = compose_cfg("trainer.max_epochs=60", "optimizer.lr=3e-2", "early_stopping.patience=2", "checkpoint.select=best", "eval.repeats=3", "iw_samples=50", "logger=csv", "images=false", "dataset.batch_size=50")
    run(cfg)
    rec = json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    chosen = rec["evaluated_checkpoint"]
    assert rec["stopped_early"] and chosen["select"] == "best" and chosen["last_epoch"] < 60
    with open(next((tmp_path / "out" / "csv").rglob("metrics.csv"))) as f:
        val = [(int(r["epoch"]), float(r["val/elbo"])) for r in csv.DictReader(f) if r.get("val/elbo")]
    best_epoch, best_val = max(val, key=lambda ev: ev[1])
    assert chosen["epoch"] == best_epoch + 1 and chosen["val_elbo"] == pytest.approx(best_val, abs=1e-5)
    assert chosen["last_epoch"] == best_epoch + 1 + 2  # patience 2: two epochs without improvement after it
    assert len(rec["metrics"]["test/iw_ll_repeats"]) == 3 and rec["metrics"]["test/iw_ll_repeat_sd"] > 0
    # the tested weights are best.ckpt's: its test ELBO (analytic KL; recon over 2000 samples) matches
    module = instantiate(cfg.inference, model=instantiate(cfg.model), optimizer=instantiate(cfg.optimizer))
    assert isinstance(module, VariationalInference) and module.method == "aevb"
    module.load_state_dict(load_checkpoint(chosen["path"])["state_dict"])
    splits = instantiate(cfg.dataset, steps_per_call=1, step_multiple=None).load()
    torch.manual_seed(1)
    parts = evaluate_batch(module.model, module.encoder, splits.test, None, 2000, 200)
    assert parts["elbo"].mean().item() == pytest.approx(rec["metrics"]["test/elbo"], abs=0.1)


def test_early_stopping_with_a_step_limit_that_ends_mid_epoch(compose_cfg, tmp_path):
    """Bug: EarlyStopping checked val/elbo at the end of each training epoch; a run stopped mid-epoch
    by trainer.max_steps before its first validation had none there, and Lightning raised RuntimeError. It now
    checks after each validation."""
    from vibench.run import run

    run(compose_cfg("early_stopping.patience=5", "trainer.max_steps=5", "trainer.max_epochs=5", "iw_samples=20", "logger=none", "images=false"))
    (path,) = (tmp_path / "runs").glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "completed" and rec["global_step"] == 5 and "test/iw_ll" in rec["metrics"]


def test_flow_families_take_the_log_variance_limits_of_their_base():
    from vibench.flows import IAF, Planar

    for cls in (Planar, IAF):
        family = cls(2, logvar_min=-6.0, logvar_max=2.0)
        p = family.init_params(1)
        p[0, 2:4] = torch.tensor([-50.0, 50.0])  # the base's log sigma^2
        assert torch.allclose(family.base(p).base_dist.scale, torch.tensor([[math.exp(-3.0), math.exp(1.0)]]))
