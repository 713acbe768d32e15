"""The contenders of ``python -m vibench.bench`` beside vibench's own loop: a plain PyTorch loop
of the identical model (the reference), Pyro's SVI and pythae's trainer (when installed). Each
runs ``block(steps)`` training steps at a time, interleaved with vibench's blocks."""

from __future__ import annotations

import contextlib
import io
import sys

import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

D, H, Z, BATCH = 784, 500, 20, 100  # Kingma & Welling's MNIST VAE, batch 100


class PlainLoop:
    """The reference: a minimal PyTorch loop of the identical model, independent of vibench's code."""

    def __init__(self, data: torch.Tensor, fused: bool = False, seed: int = 0):
        torch.manual_seed(seed)
        self.data, self.g = data, torch.Generator().manual_seed(seed)
        self.enc = nn.Sequential(nn.Linear(D, H), nn.Tanh(), nn.Linear(H, 2 * Z)).to(data.device)
        self.dec = nn.Sequential(nn.Linear(Z, H), nn.Tanh(), nn.Linear(H, D)).to(data.device)
        self.opt = torch.optim.Adam([*self.enc.parameters(), *self.dec.parameters()], lr=1e-3, fused=fused or None)
        self.prior = Independent(Normal(torch.zeros(Z, device=data.device), torch.ones(Z, device=data.device)), 1)

    def block(self, steps: int) -> None:
        for _ in range(steps):
            x = self.data[torch.randint(len(self.data), (BATCH,), generator=self.g).to(self.data.device)]
            mu, logvar = self.enc(x).chunk(2, -1)
            q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
            recon = Independent(Bernoulli(logits=self.dec(q.rsample())), 1).log_prob(x)
            loss = -(recon - kl_divergence(q, self.prior)).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()


class PyroLoop:
    """Pyro SVI with Trace_ELBO on the identical model (pyro-ppl, optional)."""

    def __init__(self, data: torch.Tensor):
        import pyro
        import pyro.distributions as pdist
        from pyro.infer import SVI, Trace_ELBO
        from pyro.optim import Adam

        pyro.clear_param_store()
        self.data, self.g = data, torch.Generator().manual_seed(1)
        enc = nn.Sequential(nn.Linear(D, H), nn.Tanh(), nn.Linear(H, 2 * Z))
        dec = nn.Sequential(nn.Linear(Z, H), nn.Tanh(), nn.Linear(H, D))

        def model(x):
            pyro.module("decoder", dec)
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", pdist.Normal(torch.zeros(len(x), Z), 1.0).to_event(1))
                pyro.sample("x", pdist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

        def guide(x):
            pyro.module("encoder", enc)
            mu, logvar = enc(x).chunk(2, -1)
            with pyro.plate("data", len(x)):
                pyro.sample("z", pdist.Normal(mu, torch.exp(0.5 * logvar)).to_event(1))

        # Pyro's loss sums over the batch where the others average; Adam's step does not depend on that scale.
        self.svi = SVI(model, guide, Adam({"lr": 1e-3}), loss=Trace_ELBO())

    def block(self, steps: int) -> None:
        for _ in range(steps):
            self.svi.step(self.data[torch.randint(len(self.data), (BATCH,), generator=self.g)])


class PythaeLoop:
    """pythae's VAE (its model, loss and reparameterization) trained by pythae's own ``BaseTrainer``
    (pythae, optional). A block is one trainer epoch over a dataset of ``block`` minibatches, so
    its DataLoader, per-step ``loss.item()`` and progress bar are counted, as a pythae user pays them."""

    def __init__(self, data: torch.Tensor, block: int, workdir: str):
        from pythae.data.datasets import BaseDataset
        from pythae.models import VAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.trainers import BaseTrainer, BaseTrainerConfig

        class Enc(BaseEncoder):
            def __init__(self):
                super().__init__()
                self.net, self.mu, self.lv = nn.Sequential(nn.Linear(D, H), nn.Tanh()), nn.Linear(H, Z), nn.Linear(H, Z)

            def forward(self, x):
                h = self.net(x.reshape(len(x), -1))
                return ModelOutput(embedding=self.mu(h), log_covariance=self.lv(h))

        class Dec(BaseDecoder):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(Z, H), nn.Tanh(), nn.Linear(H, D), nn.Sigmoid())

            def forward(self, z):
                return ModelOutput(reconstruction=self.net(z).reshape(len(z), 1, 28, 28))

        model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=Z, reconstruction_loss="bce"), encoder=Enc(), decoder=Dec())
        images = data[: block * BATCH].reshape(-1, 1, 28, 28)
        config = BaseTrainerConfig(output_dir=workdir, num_epochs=10**6, learning_rate=1e-3, per_device_train_batch_size=BATCH, optimizer_cls="Adam", no_cuda=True, steps_saving=None, steps_predict=None)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            self.trainer = BaseTrainer(model, BaseDataset(images, torch.zeros(len(images))), training_config=config)
            self.trainer.prepare_training()
        self.block_steps, self.epoch = block, 0

    def block(self, steps: int) -> None:
        assert steps == self.block_steps, "a pythae block is one epoch of its trainer"
        self.epoch += 1
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its progress bar still renders
            self.trainer.train_step(self.epoch)


def optional(name: str, make):
    try:
        return make()
    except ImportError:
        print(f"bench: {name} is not installed; skipped", file=sys.stderr)
        return None


