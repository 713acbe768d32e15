"""Datasets: each source loads its three splits as float tensors and names its variant.

Variants are not comparable with each other (static vs dynamic binarization changes MNIST
log-likelihoods by about 2 nats), so every split set carries a ``variant`` string that ends up in
the run record and keys the regression checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vibench.data.files import RemoteFile, cached_binary, fetch, read_amat_binary, read_idx
from vibench.errors import DataError


@dataclass
class Splits:
    """Train, validation and test data, each ``[N, dim]`` float32 in one tensor.

    ``dynamic``: the training set holds grey levels in [0, 1], re-binarized every minibatch as
    ``x ~ Bernoulli(grey)`` (validation and test were binarized once, with a fixed seed).
    ``true_log_prob``: for synthetic data, the data-generating log density ``x -> [N]``.
    """

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    variant: str
    dynamic: bool = False
    image_shape: tuple[int, int] | None = None
    true_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None


def binarize_once(grey: np.ndarray, seed: int) -> np.ndarray:
    """One fixed binarization ``1[u <= grey]``, ``u ~ U[0, 1)`` from ``seed`` (IWAE's test-set protocol)."""
    u = np.random.default_rng(seed).random(grey.shape)
    return (u <= grey).astype(np.float32)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


BINARIZED_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
BINARIZED_MNIST_FILES = [
    RemoteFile(f"binarized_mnist_{split}.amat", BINARIZED_MNIST_URL + f"binarized_mnist_{split}.amat", digest)
    for split, digest in [
        ("train", "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"),
        ("valid", "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"),
        ("test", "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"),
    ]
]


def binarized_mnist(root: str, cache_dir: str, download: bool = True) -> Splits:
    """Statically binarized MNIST (Larochelle & Murray 2011): 50k train / 10k valid / 10k test.

    Files ``<root>/binarized_mnist/binarized_mnist_{train,valid,test}.amat``, sha256-verified on
    every load (~0.2 s), parsed once and cached as packed bits under ``cache_dir``.
    The test file is sorted by digit class: subsets of it must be random (the DataModule does that).
    """
    folder = Path(root).expanduser().resolve() / "binarized_mnist"
    paths = fetch(folder, BINARIZED_MNIST_FILES, "binarized_mnist", allow_download=download)
    arrays = {}
    for f in BINARIZED_MNIST_FILES:
        split = f.name.split("_")[-1].split(".")[0]
        cache = Path(cache_dir).expanduser() / f"{f.name}.{f.digest[:16]}.npz"
        arrays[split] = cached_binary(cache, lambda p=paths[f.name]: read_amat_binary(p))
    return Splits(_tensor(arrays["train"]), _tensor(arrays["valid"]), _tensor(arrays["test"]), variant="static_binarized_mnist", image_shape=(28, 28))


MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = {  # md5 digests of the canonical files (as published with torchvision's MNIST)
    "train": RemoteFile("train-images-idx3-ubyte.gz", MNIST_URL + "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", "md5"),
    "test": RemoteFile("t10k-images-idx3-ubyte.gz", MNIST_URL + "t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", "md5"),
}


def mnist_dynamic(root: str, n_val: int = 10000, binarize_seed: int = 0, download: bool = True, verify_checksums: bool = True) -> Splits:
    """Dynamically binarized MNIST from the grayscale IDX files under ``<root>/mnist/raw``.

    Train: the first ``60000 - n_val`` training images as grey levels, re-binarized every
    minibatch; validation: the last ``n_val``, binarized once; test: the 10k test images,
    binarized once with ``binarize_seed`` (the IWAE protocol).
    ``verify_checksums=False`` accepts IDX files other than the canonical ones (your own data).
    """
    folder = Path(root).expanduser().resolve() / "mnist" / "raw"
    paths = fetch(folder, list(MNIST_FILES.values()), "mnist_dynamic", allow_download=download, verify=verify_checksums)
    grey = {split: read_idx(paths[f.name]).reshape(-1, 784).astype(np.float32) / 255.0 for split, f in MNIST_FILES.items()}
    n_train = len(grey["train"]) - n_val
    if n_train < 1 or n_val < 1:
        raise DataError(f"mnist_dynamic: n_val={n_val} leaves {n_train} training images of {len(grey['train'])}; choose 1 <= n_val < {len(grey['train'])}.")
    return Splits(
        train=_tensor(grey["train"][:n_train]),
        val=_tensor(binarize_once(grey["train"][n_train:], binarize_seed + 1)),
        test=_tensor(binarize_once(grey["test"], binarize_seed)),
        variant="dynamic_binarized_mnist",
        dynamic=True,
        image_shape=(28, 28),
    )


def digits(n_val: int = 250, n_test: int = 250, split_seed: int = 0, binarize_seed: int = 0) -> Splits:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), grey levels in [0, 1].

    A seeded random split; the training set is re-binarized every minibatch, validation and test
    binarized once. Small and fast: the default dataset, so ``python -m vibench`` runs anywhere.
    """
    from sklearn.datasets import load_digits

    grey = load_digits().data.astype(np.float32) / 16.0
    perm = np.random.default_rng(split_seed).permutation(len(grey))
    test, val, train = np.split(grey[perm], [n_test, n_test + n_val])
    return Splits(
        train=_tensor(train),
        val=_tensor(binarize_once(val, binarize_seed + 1)),
        test=_tensor(binarize_once(test, binarize_seed)),
        variant="digits_dynamic",
        dynamic=True,
        image_shape=(8, 8),
    )


def linear_gaussian(dim: int = 10, latent: int = 2, noise: float = 0.5, n_train: int = 5000, n_val: int = 500, n_test: int = 500, orthogonal: bool = False, seed: int = 0) -> Splits:
    """Synthetic data from ``z ~ N(0, I)``, ``x = W z + b + noise * eps`` (probabilistic PCA).

    ``W`` has i.i.d. N(0, 1) entries, or orthogonal columns when ``orthogonal`` (then the exact
    posterior is a diagonal Gaussian, reachable by a mean-field q). The exact data log density
    ``log N(x; b, W W^T + noise^2 I)`` is returned as ``true_log_prob``.
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, latent, generator=g, dtype=torch.float64)
    if orthogonal:
        w = torch.linalg.qr(w).Q * 2.0
    b = torch.randn(dim, generator=g, dtype=torch.float64)
    n = n_train + n_val + n_test
    x = torch.randn(n, latent, generator=g, dtype=torch.float64) @ w.T + b + noise * torch.randn(n, dim, generator=g, dtype=torch.float64)
    truth = torch.distributions.MultivariateNormal(b, covariance_matrix=w @ w.T + noise**2 * torch.eye(dim, dtype=torch.float64))
    train, val, test = x.float().split([n_train, n_val, n_test])
    return Splits(
        train=train, val=val, test=test,
        variant=f"linear_gaussian(dim={dim},latent={latent},noise={noise},orthogonal={orthogonal},seed={seed})",
        true_log_prob=lambda v: truth.log_prob(v.double()).to(v.dtype),
    )

