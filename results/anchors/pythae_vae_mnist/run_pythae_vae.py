"""pythae's own code on pythae's own protocol, for comparison with `+experiment=pythae_vae_mnist`.

Trains pythae's VAE with pythae's BaseTrainer on the settings of pythae's
examples/scripts/reproducibility/vae.py (784-400-40 ReLU, Bernoulli/bce, Adam lr 1e-4, batch 100,
500 epochs, MultiStepLR [200, 350, 500, 750, 1000] x 10^(-1/5), best validation loss kept, seed 123
set after the networks are built, as there), then tests the kept model with pythae's `get_nll`
(200 importance samples, 5 repeats) on the 10,000 test images. Written for vibench from pythae's
documented API; needs `pip install -c constraints.txt pythae` (not a vibench dependency).

    OMP_NUM_THREADS=1 python results/anchors/pythae_vae_mnist/run_pythae_vae.py \
        --data ../shared/data/binarized_mnist --out outputs/anchors/pythae_itself [--epochs 500]

Writes OUT/losses.csv (epoch, train and validation loss, one row per epoch, as it goes) and
OUT/result.json (the five NLLs, their mean and std, the best epoch, times, versions).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pythae.data.preprocessors import DataProcessor
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.trainers import BaseTrainer, BaseTrainerConfig
from pythae.trainers.training_callbacks import TrainingCallback


class Encoder(BaseEncoder):
    def __init__(self, hidden: int, latent: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(784, hidden), nn.ReLU())
        self.mean, self.log_var = nn.Linear(hidden, latent), nn.Linear(hidden, latent)

    def forward(self, x):
        h = self.body(x.reshape(-1, 784))
        return ModelOutput(embedding=self.mean(h), log_covariance=self.log_var(h))


class Decoder(BaseDecoder):
    def __init__(self, hidden: int, latent: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, 784), nn.Sigmoid())

    def forward(self, z):
        return ModelOutput(reconstruction=self.body(z))


class LossLog(TrainingCallback):
    """Appends each epoch's train and validation loss (negative ELBO, one sample) to a CSV."""

    def __init__(self, path: Path):
        self.path, self.epoch, self.start = path, 0, time.time()
        path.write_text("epoch,train_loss,eval_loss,seconds\n")

    def on_log(self, training_config, logs, **kwargs):
        self.epoch += 1
        with self.path.open("a") as f:
            f.write(f"{self.epoch},{logs.get('train_epoch_loss')},{logs.get('eval_epoch_loss')},{time.time() - self.start:.1f}\n")


def amat(folder: Path, split: str) -> np.ndarray:
    packed = folder / f"binarized_mnist_{split}.npy"
    if packed.exists():
        return np.unpackbits(np.load(packed), axis=1)[:, :784].astype(np.float32)
    return np.loadtxt(folder / f"binarized_mnist_{split}.amat", dtype=np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with binarized_mnist_{train,valid,test}.amat")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    train, valid, test = (torch.from_numpy(amat(args.data, s)) for s in ("train", "valid", "test"))
    model = VAE(VAEConfig(input_dim=(784,), latent_dim=40, reconstruction_loss="bce"), encoder=Encoder(400, 40), decoder=Decoder(400, 40))
    config = BaseTrainerConfig(
        output_dir=str(args.out), per_device_train_batch_size=100, per_device_eval_batch_size=100, num_epochs=args.epochs,
        learning_rate=1e-4, steps_saving=None, steps_predict=None, no_cuda=True, scheduler_cls="MultiStepLR",
        scheduler_params={"milestones": [200, 350, 500, 750, 1000], "gamma": 10 ** (-1 / 5)},
    )
    torch.manual_seed(123)
    log = LossLog(args.out / "losses.csv")
    trainer = BaseTrainer(model=model, train_dataset=DataProcessor.to_dataset(train), eval_dataset=DataProcessor.to_dataset(valid), training_config=config, callbacks=[log])
    t0 = time.time()
    trainer.train()
    train_s = time.time() - t0

    best = trainer._best_model.eval()
    torch.save(best.state_dict(), args.out / "best_model.pt")
    t0 = time.time()
    with torch.no_grad():
        nll = [float(best.get_nll(test, n_samples=200)) for _ in range(args.repeats)]
    losses = np.atleast_1d(np.genfromtxt(args.out / "losses.csv", delimiter=",", names=True))
    result = {
        "log_likelihood_repeats": nll, "mean": float(np.mean(nll)), "std": float(np.std(nll)),
        "best_epoch": int(losses["epoch"][np.argmin(losses["eval_loss"])]), "best_eval_loss": float(np.min(losses["eval_loss"])),
        "epochs": args.epochs, "train_s": round(train_s, 1), "test_s": round(time.time() - t0, 1),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "pythae": __import__("importlib.metadata").metadata.version("pythae"),
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
