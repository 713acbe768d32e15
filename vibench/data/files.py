"""Data files on disk: checksums, atomic downloads, and a verified cache of parsed arrays."""

from __future__ import annotations

import gzip
import hashlib
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vibench.atomic import atomic_write
from vibench.errors import DataError

DOWNLOAD_TIMEOUT_S = 10


@dataclass(frozen=True)
class RemoteFile:
    """A data file with its canonical address and checksum (``algorithm`` is a hashlib name)."""

    name: str
    url: str
    digest: str
    algorithm: str = "sha256"


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` atomically, with a progress bar."""
    from rich.progress import Progress

    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None

        def write(f) -> None:
            with Progress(transient=True) as progress:
                task = progress.add_task(f"downloading {dest.name}", total=total)
                for block in iter(lambda: response.read(1 << 20), b""):
                    f.write(block)
                    progress.advance(task, len(block))

        atomic_write(dest, write)


def _describe(folder: Path, files: Sequence[RemoteFile]) -> str:
    return "\n".join(f"  {folder / f.name}  ({f.algorithm} {f.digest})\n    from {f.url}" for f in files)


def fetch(folder: Path, files: Sequence[RemoteFile], what: str, allow_download: bool = True, verify: bool = True) -> dict[str, Path]:
    """Paths of ``files`` in ``folder``, downloaded if missing and allowed, checksums verified.

    Raises :class:`DataError` naming the folder, the files, their checksums and URLs when a file is
    missing and cannot be downloaded, or when a checksum does not match.
    """
    folder = Path(folder).expanduser()
    missing = [f for f in files if not (folder / f.name).is_file()]
    if missing and allow_download:
        for f in missing:
            try:
                download(f.url, folder / f.name)
            except OSError:  # no network, unwritable folder, HTTP error: report below
                pass
        missing = [f for f in files if not (folder / f.name).is_file()]
    if missing:
        raise DataError(
            f"{what}: {len(missing)} file(s) not found in {folder}:\n{_describe(folder, missing)}\n"
            "Put them in that folder (this machine could not download them), or point the data "
            "root at the folder that holds them: VIBENCH_DATA_DIR=/path or data.root=/path."
        )
    paths = {f.name: folder / f.name for f in files}
    if verify:
        for f in files:
            actual = file_digest(paths[f.name], f.algorithm)
            if actual != f.digest:
                raise DataError(
                    f"{what}: {paths[f.name]} is corrupt or not the canonical file "
                    f"({f.algorithm} {actual}, expected {f.digest}).\n"
                    f"Delete it and download it again from {f.url}"
                )
    return paths


def cached_binary(cache_file: Path, parse: Callable[[], np.ndarray]) -> np.ndarray:
    """A 0/1 array parsed once by ``parse`` and kept as packed bits in ``cache_file``.

    The cache stores the array's shape and the sha256 of its packed bits; a cache that fails to
    load or whose digest does not match (truncated, corrupt, stale) is rebuilt from the source.
    """
    try:
        with np.load(cache_file) as z:
            packed, shape, digest = z["packed"], tuple(z["shape"]), str(z["digest"])
        if hashlib.sha256(packed.tobytes()).hexdigest() == digest:
            return np.unpackbits(packed, count=int(np.prod(shape))).reshape(shape).astype(bool)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    array = parse().astype(bool)
    packed = np.packbits(array.reshape(-1))
    digest = hashlib.sha256(packed.tobytes()).hexdigest()
    try:
        atomic_write(cache_file, lambda f: np.savez(f, packed=packed, shape=np.array(array.shape), digest=digest))
    except OSError:
        pass  # an unwritable cache folder costs a re-parse next time, nothing more
    return array


def read_amat_binary(path: Path, dim: int = 784) -> np.ndarray:
    """Parse a Larochelle & Murray ``.amat`` file: one image per line, ``dim`` values 0/1 separated by spaces."""
    raw = np.fromfile(path, dtype=np.uint8)
    row = 2 * dim  # "d d d ... d\n": each value is one byte followed by a space or the newline
    if raw.size % row or not np.isin(raw[0::2], (ord("0"), ord("1"))).all():
        raise DataError(f"{path} is not a binarized .amat file of {dim} values 0/1 per line; delete it and download it again.")
    return (raw[0::2] - ord("0")).reshape(-1, dim)


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not, without torchvision.

    Header: two zero bytes, a type code, the number of dimensions n, then n big-endian uint32 sizes.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} could not be read as IDX ({e}); delete it and download it again.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number); delete it and download it again.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    body = data[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)) * dtype.itemsize:
        raise DataError(f"{path} is truncated: header says {shape}, file holds {len(body)} bytes of data.")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a (gzipped, if the name ends in .gz) IDX file; the inverse of :func:`read_idx`."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
