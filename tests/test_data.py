"""Data: file checks, parsing, caching, splits and index-slice batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vibench.data import DataModule, IndexBatches
from vibench.data.datamodule import random_subset
from vibench.data.files import RemoteFile, cached_binary, fetch, file_digest, read_amat_binary, read_idx, write_idx
from vibench.data.sources import BINARIZED_MNIST_FILES, Splits, binarize_once, binarized_mnist, digits, linear_gaussian, mnist_dynamic
from vibench.errors import DataError


def write_amat(path, rows: np.ndarray) -> None:
    path.write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))


def test_read_amat_parses_rows(tmp_path):
    rows = np.random.default_rng(0).integers(0, 2, size=(3, 784))
    write_amat(tmp_path / "a.amat", rows)
    assert (read_amat_binary(tmp_path / "a.amat") == rows).all()


def test_read_amat_rejects_other_content(tmp_path):
    (tmp_path / "a.amat").write_text("0.5 0.25\n")
    with pytest.raises(DataError, match="not a binarized .amat"):
        read_amat_binary(tmp_path / "a.amat")


def test_cache_is_used_and_rebuilt_when_corrupt(tmp_path):
    calls = []
    array = np.random.default_rng(0).integers(0, 2, size=(5, 13)).astype(bool)

    def parse():
        calls.append(1)
        return array

    cache = tmp_path / "c.npz"
    assert (cached_binary(cache, parse) == array).all() and len(calls) == 1
    assert (cached_binary(cache, parse) == array).all() and len(calls) == 1  # served from cache
    cache.write_bytes(cache.read_bytes()[:40])  # truncate it
    assert (cached_binary(cache, parse) == array).all() and len(calls) == 2  # rebuilt


def test_missing_files_error_names_folder_files_checksums_and_url(tmp_path):
    with pytest.raises(DataError) as e:
        fetch(tmp_path, BINARIZED_MNIST_FILES, "binarized_mnist", allow_download=False)
    msg = str(e.value)
    assert str(tmp_path) in msg and "binarized_mnist_test.amat" in msg
    assert "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c" in msg
    assert "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_test.amat" in msg
    assert "VIBENCH_DATA_DIR" in msg


def test_corrupt_file_is_refused(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"not the file")
    spec = RemoteFile("f.bin", "http://example.invalid/f.bin", "0" * 64)
    with pytest.raises(DataError, match="corrupt"):
        fetch(tmp_path, [spec], "test", allow_download=False)
    good = RemoteFile("f.bin", spec.url, file_digest(tmp_path / "f.bin"))
    assert fetch(tmp_path, [good], "test", allow_download=False)["f.bin"].is_file()


def test_idx_round_trip_and_truncation(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x-idx3-ubyte.gz", images)
    assert (read_idx(tmp_path / "x-idx3-ubyte.gz") == images).all()
    write_idx(tmp_path / "plain-idx3-ubyte", images)
    raw = (tmp_path / "plain-idx3-ubyte").read_bytes()
    (tmp_path / "plain-idx3-ubyte").write_bytes(raw[:-10])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "plain-idx3-ubyte")


def test_real_mnist_test_images_read_without_torchvision(data_dir):
    images = read_idx(data_dir / "mnist" / "raw" / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8 and images.max() == 255


def test_mnist_dynamic_from_generated_idx_files(tmp_path):
    raw = tmp_path / "mnist" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(raw / "train-images-idx3-ubyte.gz", rng.integers(0, 256, size=(30, 28, 28)))
    write_idx(raw / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, size=(10, 28, 28)))
    splits = mnist_dynamic(str(tmp_path), n_val=5, download=False, verify_checksums=False)
    assert splits.dynamic and splits.variant == "dynamic_binarized_mnist"
    assert splits.train.shape == (25, 784) and 0 < splits.train.max() <= 1
    assert set(splits.test.unique().tolist()) == {0.0, 1.0}
    # the test set is binarized once, the same way every time (IWAE protocol)
    again = mnist_dynamic(str(tmp_path), n_val=5, download=False, verify_checksums=False)
    assert torch.equal(splits.test, again.test)


def test_mnist_dynamic_missing_training_images_says_which(data_dir, tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        mnist_dynamic(str(tmp_path), download=False)


def test_binarize_once_matches_probability():
    grey = np.full((200, 50), 0.3)
    x = binarize_once(grey, 0)
    assert set(np.unique(x)) <= {0.0, 1.0} and abs(x.mean() - 0.3) < 0.01
    assert (binarize_once(grey, 0) == x).all()


def test_binarized_mnist_from_shared_data(data_dir, tmp_path):
    splits = binarized_mnist(str(data_dir), str(tmp_path / "cache"), download=False)
    assert splits.train.shape == (50000, 784) and splits.val.shape == (10000, 784) and splits.test.shape == (10000, 784)
    assert splits.variant == "static_binarized_mnist" and not splits.dynamic
    assert set(splits.test[:100].unique().tolist()) == {0.0, 1.0}
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3
    # second load comes from the cache and is identical
    assert torch.equal(binarized_mnist(str(data_dir), str(tmp_path / "cache"), download=False).test, splits.test)


def test_random_subset_is_random_not_first_rows():
    x = torch.arange(1000.0).unsqueeze(1)  # sorted, like the class-sorted MNIST test file
    sub = random_subset(x, 100, seed=0)
    assert len(sub) == 100 and sub.max() > 500 and len(sub.unique()) == 100
    assert torch.equal(sub, random_subset(x, 100, seed=0))
    assert random_subset(x, None, 0) is x


def test_index_batches_cover_each_row_once_with_matching_idx():
    data = torch.arange(23.0).unsqueeze(1)
    batches = IndexBatches(data, 5, shuffle_seed=lambda: 3)
    seen = torch.cat([idx for _, idx in batches])
    assert len(batches) == 5 and sorted(seen.tolist()) == list(range(23))
    for x, idx in batches:
        assert torch.equal(x[:, 0], idx.float())
    # the order is a function of the seed alone (so a resumed run sees the same batches)
    assert torch.equal(torch.cat([i for _, i in batches]), torch.cat([i for _, i in IndexBatches(data, 5, shuffle_seed=lambda: 3)]))


def test_index_batches_resume_skips_consumed_batches():
    data = torch.arange(23.0).unsqueeze(1)
    full = [idx for _, idx in IndexBatches(data, 5, shuffle_seed=lambda: 3)]
    b = IndexBatches(data, 5, shuffle_seed=lambda: 3)
    b.load_state_dict({"consumed": 2})
    resumed = [idx for _, idx in b]
    assert len(resumed) == 3 and all(torch.equal(a, c) for a, c in zip(full[2:], resumed))
    # a state saved at the end of an epoch starts the next pass from the beginning
    b.load_state_dict({"consumed": 5})
    assert len(list(b)) == 5


def test_digits_split_sizes_and_ranges():
    s = digits()
    assert (len(s.train), len(s.val), len(s.test)) == (1297, 250, 250)
    assert s.dynamic and 0 <= s.train.min() and s.train.max() == 1


def test_linear_gaussian_true_log_prob_matches_generator():
    s = linear_gaussian(dim=4, latent=2, noise=0.3, n_train=20000, n_val=10, n_test=10)
    # the empirical covariance of the data approaches W W^T + noise^2 I; check via mean log-density
    # of training data vs. its expectation, the negative entropy of the Gaussian
    cov = torch.cov(s.train.double().T)
    entropy = 0.5 * torch.logdet(2 * torch.pi * torch.e * cov)
    assert s.true_log_prob(s.train).double().mean().item() == pytest.approx(-entropy.item(), abs=0.05)


def _module(splits: Splits, **kw) -> DataModule:
    return DataModule(lambda: splits, name="t", dim=3, likelihood="bernoulli", **kw)


def test_datamodule_refuses_wrong_shape_and_values():
    ok = torch.ones(5, 3)
    with pytest.raises(DataError, match="shape"):
        _module(Splits(torch.ones(5, 4), ok, ok, "v")).load()
    with pytest.raises(DataError, match="only 0 and 1"):
        _module(Splits(ok, ok * 0.5, ok, "v")).load()
    with pytest.raises(DataError, match=r"grey levels in \[0, 1\]"):
        _module(Splits(ok * 2, ok, ok, "v", dynamic=True)).load()
    with pytest.raises(DataError, match="NaN"):
        _module(Splits(ok, ok, ok * float("nan"), "v")).load()


def test_datamodule_subsets():
    x = (torch.rand(100, 3) > 0.5).float()
    dm = _module(Splits(x, x, x, "v"), test_subset=10)
    assert dm.sizes() == {"n_train": 100, "n_val": 100, "n_test": 10}


def test_missing_files_are_downloaded_verified_and_written_atomically(tmp_path):
    """A local HTTP server (127.0.0.1 only) stands in for the canonical address."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    (served / "f.bin").write_bytes(b"x" * 100_000)
    (served / "bad.bin").write_bytes(b"not what the checksum says")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        good = RemoteFile("f.bin", f"{url}/f.bin", file_digest(served / "f.bin"))
        paths = fetch(tmp_path / "data", [good], "test")
        assert paths["f.bin"].read_bytes() == b"x" * 100_000
        assert not list((tmp_path / "data").glob(".*.tmp"))  # the temporary file was renamed into place
        bad = RemoteFile("bad.bin", f"{url}/bad.bin", "0" * 64)
        with pytest.raises(DataError, match="corrupt"):
            fetch(tmp_path / "data", [bad], "test")
        gone = RemoteFile("gone.bin", f"{url}/gone.bin", "0" * 64)  # 404: reported as missing, with the address
        with pytest.raises(DataError, match="gone.bin"):
            fetch(tmp_path / "data", [gone], "test")
    finally:
        server.shutdown()


def test_index_batches_groups_are_the_same_minibatches_in_the_same_order():
    data = torch.arange(23.0).unsqueeze(1)
    single = [idx for _, idx in IndexBatches(data, 5, shuffle_seed=lambda: 3)]
    grouped = IndexBatches(data, 5, shuffle_seed=lambda: 3, group=3)
    items = list(grouped)
    assert len(grouped) == len(items) == 2 and [len(g) for g in items] == [3, 2]
    flat = [mb for group in items for mb in group]
    assert all(torch.equal(idx, s) and torch.equal(x[:, 0], idx.float()) for (x, idx), s in zip(flat, single))
    # consumed counts minibatches, so a resume skips the right rows whatever the grouping
    grouped.load_state_dict({"consumed": 3})
    resumed = [idx for group in grouped for _, idx in group]
    assert len(resumed) == 2 and all(torch.equal(a, b) for a, b in zip(resumed, single[3:]))


def test_relative_data_root_is_made_absolute(compose_cfg, monkeypatch, tmp_path, data_dir):
    """The README's ``VIBENCH_DATA_DIR=../shared/data`` is relative to where the command runs: the
    composed config holds the absolute folder, so links and jobs elsewhere still reach the data."""
    monkeypatch.chdir(data_dir.parent)
    monkeypatch.setenv("VIBENCH_DATA_DIR", f"../{data_dir.parent.name}/{data_dir.name}")
    cfg = compose_cfg()
    assert cfg.data.root == str(data_dir) and Path(cfg.data.root).is_absolute()
    # and a relative data.root given on the command line is resolved where it is read
    monkeypatch.chdir(data_dir)
    splits = binarized_mnist(".", str(tmp_path / "cache"), download=False)
    assert splits.test.shape == (10000, 784)
