"""Data sets as numpy arrays, framework-free: MNIST, Fashion-MNIST (idx files) and synthetic.

Names: ``mnist``, ``fashion_mnist``, ``pydoc`` (token sequences of Python's help topics for
language models: :mod:`lwdsl.data.text`), ``pydoc-code`` (windows of the standard library's
source labelled by package, a derived text-classification set: :mod:`lwdsl.data.pycode`) and ``synthetic:C,H,W:K`` (images of shape C,H,W in K
classes, for speed and size checks: each class a pattern of its own under noise, so a baseline
learns them and its accuracy means something; see :func:`_synthetic`). The idx files are
looked for, in order, in ``$LWDSL_DATA/<name>/``, in the user cache
(``~/.cache/lwdsl/data/<name>/``), and are otherwise downloaded there; with no network the
error says which files to put where.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from .dataset import Dataset
from ..errors import LwdslError, RunError, UsageError, did_you_mean
from ..limits import MAX_IDX_BYTES, MAX_SYNTHETIC_BYTES, MAX_SYNTHETIC_CLASSES, size_words

__all__ = ["load_data", "data_shape", "data_task", "data_dirs", "is_path", "is_named", "same_data", "DATASETS", "CLASS_NAMES"]

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


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """The array of an idx file of unsigned bytes with ``ndim`` dimensions (gzip or not).

    The header is read and checked first; then exactly the bytes it announces (at most
    MAX_IDX_BYTES), and one more to find trailing data. A damaged file, truncated anywhere,
    gives a UsageError (exit code 2) naming it and what is wrong, never a bare EOFError.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:3] != b"\0\0\x08":
                raise _damaged(path, "is not an idx file of unsigned bytes (bad magic number)")
            if head[3] != ndim:
                raise _damaged(path, f"has {head[3]} dimensions, expected {ndim}")
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise _damaged(path, "is truncated in its header")
            shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
            size = int(np.prod(shape, dtype=object))
            if size > MAX_IDX_BYTES:
                raise _damaged(path, f"declares {shape}, {size_words(size)} of data (at most {size_words(MAX_IDX_BYTES)})")
            raw = f.read(size + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise _damaged(path, f"is truncated or damaged ({exc})") from None
    if len(raw) < size:
        raise _damaged(path, f"is truncated: its header says {shape} ({size:,} bytes), found {len(raw):,}")
    if len(raw) > size:
        raise _damaged(path, f"has data after the {shape} values its header declares")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def _damaged(path: Path, what: str) -> UsageError:
    """A damaged data file: bad input (exit code 2), found before any work, the file named."""
    return UsageError(f"data file {path} {what}", hint="delete it to download it again, or replace it with a good copy")


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
        arr = _read_idx(paths[key], 3 if key.endswith("_x") else 1)
        digest.update(arr.tobytes())
        arrays[key] = arr
    for part in ("train", "test"):
        x, y = arrays[f"{part}_x"], arrays[f"{part}_y"]
        if len(x) != len(y):
            raise UsageError(
                f"data set '{name}': {paths[part + '_x']} has {len(x):,} images but {paths[part + '_y']} has {len(y):,} labels",
                hint="the two files of a split must come from the same release; replace them with matching copies",
            )
        if len(x) == 0:
            raise UsageError(f"data set '{name}': {paths[part + '_x']} holds no images")
        if y.size and int(y.max()) >= 10:
            raise UsageError(f"data set '{name}': {paths[part + '_y']} has label {int(y.max())}; labels are 0 to 9")
    def images(a: np.ndarray) -> np.ndarray:
        return ((a.astype(np.float32) / 255.0 - mean) / std)[:, None, :, :]
    return Dataset(
        name=name,
        classes=CLASS_NAMES[name],
        info={"source": "idx files", "path": str(paths["train_x"].parent), "streamed": False,
              "preprocess": {"mean": [mean], "std": [std], "channels": 1}},
        train_x=images(arrays["train_x"]),
        train_y=arrays["train_y"].astype(np.int64),
        test_x=images(arrays["test_x"]),
        test_y=arrays["test_y"].astype(np.int64),
        num_classes=10,
        sha256=digest.hexdigest(),
    )


#: Images a synthetic data set has for training and for testing.
_SYNTHETIC_SPLIT = (2048, 512)


def _synthetic_spec(spec: str) -> tuple[tuple[int, int, int], int]:
    """((C, H, W), K) of ``synthetic:C,H,W:K``, or a UsageError: malformed, or so large that the
    images and their labelling would take more than MAX_SYNTHETIC_BYTES."""
    name = f"synthetic:{spec}"
    try:
        shape_s, k_s = spec.split(":")
        if len(shape_s) > 40 or len(k_s) > 20:
            raise ValueError
        shape = tuple(int(x) for x in shape_s.split(","))
        k = int(k_s)
        if len(shape) != 3 or min(shape) < 1 or k < 2:
            raise ValueError
    except ValueError:
        raise UsageError(
            f"bad synthetic data name '{name[:80]}'",
            hint="write synthetic:C,H,W:K with C, H, W >= 1 and K >= 2, e.g. synthetic:3,32,32:10",
        ) from None
    if k > MAX_SYNTHETIC_CLASSES:
        raise UsageError(f"data set '{name}': {k:,} classes is too many (at most {MAX_SYNTHETIC_CLASSES:,})")
    pixels = shape[0] * shape[1] * shape[2]
    need = 4 * pixels * (sum(_SYNTHETIC_SPLIT) + k)
    if need > MAX_SYNTHETIC_BYTES:
        raise UsageError(
            f"data set '{name}' would take {size_words(need)} of memory (at most {size_words(MAX_SYNTHETIC_BYTES)})",
            hint="use smaller images, e.g. synthetic:3,32,32:10",
        )
    return shape, k  # type: ignore[return-value]


#: How strongly a synthetic image shows its class's pattern (the rest is unit Gaussian noise;
#: each pixel keeps unit variance): a small model learns it in one epoch, chance does not.
_SYNTHETIC_SIGNAL = 0.5
#: Version of the synthetic recipe, in the data's sha256 (lock files, baseline cache keys).
_SYNTHETIC_VERSION = "v2"


def _synthetic(spec: str, seed: int = 0, n_train: int = _SYNTHETIC_SPLIT[0], n_test: int = _SYNTHETIC_SPLIT[1]) -> Dataset:
    """Images that a model can learn: class ``c`` is a smooth pattern of its own (a random 4x4
    grid per channel, enlarged to H x W and scaled to unit variance) seen through Gaussian
    noise, ``x = s * pattern[y] + sqrt(1 - s^2) * noise`` with s = _SYNTHETIC_SIGNAL; the labels
    are balanced. Everything comes from ``seed``: both backends get identical arrays."""
    shape, k = _synthetic_spec(spec)
    c, h, w = shape
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.permutation(np.arange(n) % k).astype(np.int64)
    coarse = rng.standard_normal((k, c, min(4, h), min(4, w)), dtype=np.float32)
    rows, cols = np.arange(h) * coarse.shape[2] // h, np.arange(w) * coarse.shape[3] // w
    pattern = coarse[:, :, rows][:, :, :, cols]
    pattern -= pattern.mean(axis=(1, 2, 3), keepdims=True)
    pattern *= np.float32(_SYNTHETIC_SIGNAL) / (pattern.std(axis=(1, 2, 3), keepdims=True) + np.float32(1e-6))
    x = rng.standard_normal((n, *shape), dtype=np.float32)
    x *= np.float32(np.sqrt(1 - _SYNTHETIC_SIGNAL**2))
    for start in range(0, n, 256):  # in slices: no second copy of the images in memory
        x[start : start + 256] += pattern[y[start : start + 256]]
    digest = hashlib.sha256(f"synthetic-{_SYNTHETIC_VERSION}:{spec}:{seed}".encode()).hexdigest()
    return Dataset(f"synthetic:{spec}", x[:n_train], y[:n_train], x[n_train:], y[n_train:], k, digest)


def load_data(name: str, *, download: bool = True) -> Dataset:
    """Load a data set by name.

    Args:
        name: ``mnist``, ``fashion_mnist``, ``synthetic:C,H,W:K``, or a path with options
            (``PATH[?name=value&...]``: a folder of class folders, a ``.npz``, a CIFAR binary
            folder, a Hugging Face ``datasets`` folder; :mod:`lwdsl.data.sources`).
        download: try the mirrors when the files are not found locally.

    Returns:
        A :class:`~lwdsl.backend.Dataset` of normalised float32 NCHW images, with the sha256 of
        the raw data for the lock file; from a path, the images are an
        :class:`~lwdsl.data.stream.ImageArray`, decoded as batches index them.

    Raises:
        UsageError: an unknown name (with did-you-mean), a ``synthetic:`` name too large or
            malformed, a damaged data file (named), images and labels that do not match; for
            a path, every problem of the data (a file, a class folder, a label), located.
        RunError: files missing and not downloadable (the message says where to put them).

    >>> load_data("synthetic:1,8,8:3").train_x.shape
    (2048, 1, 8, 8)
    """
    key = name.replace("-", "_").lower()
    if key.startswith("synthetic:"):
        return _synthetic(name.split(":", 1)[1])
    if key == "pydoc":
        from .text import load_pydoc

        return load_pydoc()
    if key == "pydoc_code":
        from .pycode import load_pydoc_code

        return load_pydoc_code()
    if is_path(name):
        from .sources import load_source

        return load_source(name)
    return _idx_dataset(_known(name), download)


def is_named(name: str) -> bool:
    """Whether ``name`` is one of lwdsl's own data sets (``mnist``, ``fashion_mnist``, ``pydoc``, ``pydoc-code``, ``synthetic:...``)."""
    key = name.replace("-", "_").lower()
    return key in DATASETS or key in ("pydoc", "pydoc_code") or key.startswith("synthetic:")


def is_path(name: str) -> bool:
    """Whether ``name`` is a path to the user's data (``PATH[?options]``), not a named set:
    anything but ``mnist``, ``fashion_mnist`` and ``synthetic:...`` that looks like a path
    (has a ``/``, a ``.``, a ``?``) or exists. A folder called ``mnist`` is ``./mnist``."""
    if is_named(name):
        return False
    path = name.partition("?")[0]
    return any(c in name for c in "/.?\\") or os.path.exists(path)


def same_data(a: str, b: str) -> bool:
    """Whether two data names read the same data (``fashion-mnist`` is ``fashion_mnist``; a
    path is compared as written)."""
    if is_path(a) or is_path(b):
        return a == b
    return a.replace("-", "_").lower() == b.replace("-", "_").lower()


def _known(name: str) -> str:
    """The key of a named data set, or a UsageError with a did-you-mean."""
    key = name.replace("-", "_").lower()
    if key not in DATASETS:
        shown = name if len(name) <= 80 else name[:77] + "..."
        near = did_you_mean(name[:80], [*DATASETS, "pydoc", "pydoc-code", "synthetic:C,H,W:K"])
        raise UsageError(
            f"unknown data set '{shown}' (known: {', '.join(DATASETS)}, pydoc, pydoc-code, synthetic:C,H,W:K, or a path: a folder of class "
            "folders, a .npz file, a CIFAR binary folder, a Hugging Face datasets folder)",
            hint=f"did you mean '{near}'?" if near else None,
        )
    return key


#: Class names of the named data sets.
CLASS_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
}


def data_task(name: str) -> str:
    """``lm`` for token sequences (``pydoc``, a ``.txt`` file or folder), else ``classify``,
    without loading the data."""
    if name.replace("-", "_").lower() == "pydoc":
        return "lm"
    if is_path(name):
        from .ref import parse_ref
        from .text import is_text

        try:
            return "lm" if is_text(parse_ref(name).path) else "classify"
        except LwdslError:  # a bad reference: loading it says what is wrong
            return "classify"
    return "classify"


def data_shape(name: str) -> tuple[tuple[int, ...], int]:
    """(C, H, W) and number of classes of a data set, without loading it ((L,) and the
    vocabulary for token sequences: ``pydoc``).

    >>> data_shape("mnist"), data_shape("synthetic:3,32,32:10")
    (((1, 28, 28), 10), ((3, 32, 32), 10))
    """
    key = name.replace("-", "_").lower()
    if key.startswith("synthetic:"):
        return _synthetic_spec(name.split(":", 1)[1])
    if key == "pydoc":
        from .text import SEQ_LEN, VOCAB

        return (SEQ_LEN,), VOCAB
    if key == "pydoc_code":
        from .pycode import PACKAGES
        from .text import SEQ_LEN

        return (SEQ_LEN,), len(PACKAGES)
    if is_path(name):
        from .sources import source_shape

        return source_shape(name)
    _known(name)
    return (1, 28, 28), 10
