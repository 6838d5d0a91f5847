"""Data sets as numpy arrays, framework-free: MNIST, Fashion-MNIST (idx files) and synthetic.

Names: ``mnist``, ``fashion_mnist`` and ``synthetic:C,H,W:K`` (random images of shape C,H,W in
K classes, for speed and size checks; labels are a fixed function of the images so a model can
learn them). The idx files are looked for, in order, in ``$LWDSL_DATA/<name>/``, in the user
cache (``~/.cache/lwdsl/data/<name>/``), and are otherwise downloaded there; with no network
the error says which files to put where.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from .backend import Dataset
from .errors import LwdslError, RunError, did_you_mean

__all__ = ["load_data", "data_shape", "data_dirs", "DATASETS"]

_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}

#: name -> (folder, download mirrors, normalisation mean, std)
DATASETS: dict[str, tuple[str, tuple[str, ...], float, float]] = {
    "mnist": (
        "mnist",
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        0.1307,
        0.3081,
    ),
    "fashion_mnist": (
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        0.2860,
        0.3530,
    ),
}


def data_dirs(folder: str) -> list[Path]:
    """Where the files of ``folder`` are looked for, in order."""
    dirs = []
    if os.environ.get("LWDSL_DATA"):
        dirs.append(Path(os.environ["LWDSL_DATA"]).expanduser() / folder)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lwdsl" / "data" / folder
    dirs.append(cache)
    return dirs


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise RunError(f"{path} is not an idx file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise RunError(f"{path} is truncated: header says {shape}, found {data.size} values")
    return data.reshape(shape)


def _find(folder: str, fname: str) -> Path | None:
    for d in data_dirs(folder):
        for cand in (d / fname, d / fname.removesuffix(".gz")):
            if cand.is_file():
                return cand
    return None


def _download(mirrors: tuple[str, ...], fname: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    errors = []
    for base in mirrors:
        try:
            with urllib.request.urlopen(base + fname, timeout=30) as resp:
                fd, tmp = tempfile.mkstemp(dir=dest, prefix=".part-")
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(resp, out)
            os.replace(tmp, dest / fname)
            return dest / fname
        except OSError as exc:
            errors.append(f"{base}{fname}: {exc}")
    raise RunError("could not download " + fname + ":\n    " + "\n    ".join(errors))


def _idx_dataset(name: str, download: bool) -> Dataset:
    folder, mirrors, mean, std = DATASETS[name]
    paths = {}
    for key, fname in _FILES.items():
        path = _find(folder, fname)
        if path is None and download:
            try:
                path = _download(mirrors, fname, data_dirs(folder)[-1])
            except RunError:
                path = None
        if path is None:
            where = " or ".join(str(d) for d in data_dirs(folder))
            raise RunError(
                f"data set '{name}' not found and could not be downloaded: put {', '.join(_FILES.values())} "
                f"(gzip or not) in {where}",
                hint="set LWDSL_DATA to a folder holding a '" + folder + "' subfolder (e.g. LWDSL_DATA=../shared/data)",
            )
        paths[key] = path
    digest = hashlib.sha256()
    arrays = {}
    for key in _FILES:
        arr = _read_idx(paths[key])
        digest.update(arr.tobytes())
        arrays[key] = arr
    def images(a: np.ndarray) -> np.ndarray:
        return ((a.astype(np.float32) / 255.0 - mean) / std)[:, None, :, :]
    return Dataset(
        name=name,
        train_x=images(arrays["train_x"]),
        train_y=arrays["train_y"].astype(np.int64),
        test_x=images(arrays["test_x"]),
        test_y=arrays["test_y"].astype(np.int64),
        num_classes=10,
        sha256=digest.hexdigest(),
    )


def _synthetic(spec: str, seed: int = 0, n_train: int = 2048, n_test: int = 512) -> Dataset:
    try:
        shape_s, k_s = spec.split(":")
        shape = tuple(int(x) for x in shape_s.split(","))
        k = int(k_s)
        if len(shape) != 3 or min(shape) < 1 or k < 2:
            raise ValueError
    except ValueError:
        raise LwdslError(
            f"bad synthetic data name 'synthetic:{spec}'", hint="write synthetic:C,H,W:K, e.g. synthetic:3,32,32:10"
        ) from None
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, *shape), dtype=np.float32)
    proj = rng.standard_normal((int(np.prod(shape)), k)).astype(np.float32)
    y = np.argmax(x.reshape(len(x), -1) @ proj, axis=1).astype(np.int64)
    digest = hashlib.sha256(f"synthetic:{spec}:{seed}".encode()).hexdigest()
    return Dataset(f"synthetic:{spec}", x[:n_train], y[:n_train], x[n_train:], y[n_train:], k, digest)


def load_data(name: str, *, download: bool = True) -> Dataset:
    """Load a data set by name.

    Args:
        name: ``mnist``, ``fashion_mnist`` or ``synthetic:C,H,W:K``.
        download: try the mirrors when the files are not found locally.

    Returns:
        A :class:`~lwdsl.backend.Dataset` of normalised float32 NCHW images, with the sha256 of
        the raw data for the lock file.

    Raises:
        LwdslError: an unknown name (with did-you-mean).
        RunError: files missing and not downloadable (the message says where to put them).

    >>> load_data("synthetic:1,8,8:3").train_x.shape
    (2048, 1, 8, 8)
    """
    key = name.replace("-", "_").lower()
    if key.startswith("synthetic:"):
        return _synthetic(name.split(":", 1)[1])
    if key not in DATASETS:
        near = did_you_mean(name, [*DATASETS, "synthetic:C,H,W:K"])
        raise LwdslError(
            f"unknown data set '{name}' (known: {', '.join(DATASETS)}, synthetic:C,H,W:K)",
            hint=f"did you mean '{near}'?" if near else None,
        )
    return _idx_dataset(key, download)


def data_shape(name: str) -> tuple[tuple[int, ...], int]:
    """(C, H, W) and number of classes of a data set, without loading it.

    >>> data_shape("mnist"), data_shape("synthetic:3,32,32:10")
    (((1, 28, 28), 10), ((3, 32, 32), 10))
    """
    key = name.replace("-", "_").lower()
    if key.startswith("synthetic:"):
        d = _synthetic(name.split(":", 1)[1], n_train=1, n_test=1)
        return d.input_shape, d.num_classes
    if key not in DATASETS:
        load_data(name)  # raises the unknown-name error
    return (1, 28, 28), 10
