"""The CIFAR-10 and CIFAR-100 *binary* versions (https://www.cs.toronto.edu/~kriz/cifar.html).

CIFAR-10 (``cifar-10-batches-bin``): ``data_batch_1.bin`` ... ``data_batch_5.bin`` (training, in
that order) and ``test_batch.bin``, records of 1 label byte and 3,072 pixel bytes (the 1,024 red,
then green, then blue values of a 32 x 32 image, row by row); class names from
``batches.meta.txt``. CIFAR-100 (``cifar-100-binary``): ``train.bin`` and ``test.bin``, records of
a coarse label byte, a fine label byte and the 3,072 pixel bytes; ``labels=fine`` (default, 100
classes, ``fine_label_names.txt``) or ``labels=coarse`` (20, ``coarse_label_names.txt``).

The files are memory-mapped: a batch reads its records only. A file whose size is not a whole
number of records is refused as truncated, as is a label past the classes. The digest is the
files' sha256.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import array_images, out_shape
from .dataset import Dataset
from .ref import DataRef

__all__ = ["is_cifar", "load_cifar", "cifar_shape"]

_PIXELS = 3 * 32 * 32


def is_cifar(folder: Path) -> bool:
    """Whether ``folder`` holds CIFAR-10 or CIFAR-100 binary files."""
    return (folder / "test_batch.bin").is_file() or any(folder.glob("data_batch_*.bin")) or (
        (folder / "train.bin").is_file() and (folder / "test.bin").is_file())


def _layout(ref: DataRef) -> tuple[str, list[Path], Path, int, int, str]:
    """(version, train files, test file, label bytes, label offset, names file)."""
    root = ref.path
    if (root / "train.bin").is_file() and (root / "test.bin").is_file():
        ref.only(("labels",), "CIFAR-100")
        fine = ref.options.get("labels", "fine").lower() == "fine"
        return "cifar100", [root / "train.bin"], root / "test.bin", 2, 1 if fine else 0, (
            "fine_label_names.txt" if fine else "coarse_label_names.txt")
    ref.only((), "CIFAR-10")
    train = sorted(root.glob("data_batch_*.bin"), key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])
    if not train:
        raise ref.fail("holds test_batch.bin but no data_batch_*.bin (CIFAR-10's training files)")
    if not (root / "test_batch.bin").is_file():
        raise ref.fail("holds data_batch_*.bin but no test_batch.bin (CIFAR-10's test file)")
    return "cifar10", train, root / "test_batch.bin", 1, 0, "batches.meta.txt"


def _records(ref: DataRef, path: Path, label_bytes: int) -> np.ndarray:
    size = path.stat().st_size
    rec = label_bytes + _PIXELS
    if size == 0 or size % rec:
        raise ref.fail(f"{path.name} is truncated or not a CIFAR file: {size:,} bytes is not a whole number of {rec:,}-byte records")
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(size // rec, rec))


def _names(ref: DataRef, path: Path, k: int) -> tuple[str, ...]:
    if not path.is_file():
        return tuple(str(i) for i in range(k))
    names = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if len(names) != k:
        raise ref.fail(f"{path.name} names {len(names)} classes, CIFAR has {k} here")
    return tuple(names)


def cifar_shape(ref: DataRef) -> tuple[tuple[int, int, int], int]:
    version, *_ , offset, _ = _layout(ref)
    k = 10 if version == "cifar10" else (100 if offset == 1 else 20)
    return out_shape(ref.preprocess, (32, 32, 3), f"data {ref.path}"), k


def _labels(path: Path, rec: int, offset: int, digest: Any) -> np.ndarray:
    """The label byte at ``offset`` of every record of ``path``, read in chunks of whole
    records (the file's bytes go into ``digest`` on the way; nothing stays mapped)."""
    out = []
    with open(path, "rb") as f:
        while chunk := f.read(rec * 1024):
            digest.update(chunk)
            out.append(np.frombuffer(chunk, dtype=np.uint8).reshape(-1, rec)[:, offset].astype(np.int64))
    return np.concatenate(out)


class _Records:
    """The images of several record files as one N x 32 x 32 x 3 uint8 array-like (fancy
    indexing along N only)."""

    def __init__(self, maps: list[np.ndarray], label_bytes: int) -> None:
        self.maps, self.skip = maps, label_bytes
        self.starts = np.cumsum([0] + [len(m) for m in maps])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, idx: Any) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), _PIXELS), dtype=np.uint8)
        which = np.searchsorted(self.starts, idx, side="right") - 1
        for f in np.unique(which):
            at = np.flatnonzero(which == f)
            out[at] = self.maps[f][idx[at] - self.starts[f], self.skip:]
        return np.moveaxis(out.reshape(len(idx), 3, 32, 32), 1, -1)


def load_cifar(ref: DataRef) -> Dataset:
    version, train_files, test_file, label_bytes, offset, names_file = _layout(ref)
    k = 10 if version == "cifar10" else (100 if offset == 1 else 20)
    shape = out_shape(ref.preprocess, (32, 32, 3), f"data {ref.path}")
    digest = hashlib.sha256(f"{version}-v1\n{ref.text.partition('?')[2]}\n".encode())
    parts = {}
    for split, files in (("train", train_files), ("test", [test_file])):
        maps = [_records(ref, f, label_bytes) for f in files]
        per_file = []
        for f in files:
            y = _labels(f, label_bytes + _PIXELS, offset, digest)
            bad = np.flatnonzero(y >= k)
            if bad.size:
                raise ref.fail(f"{f.name} record {int(bad[0])} has label {int(y[bad[0]])}: CIFAR labels here are 0 to {k - 1}",
                               hint="the file is damaged or not this CIFAR version: replace it with a good copy")
            per_file.append(y)
        labels = np.concatenate(per_file)
        parts[split] = (array_images(_Records(maps, label_bytes), shape, ref.preprocess, f"{ref.path} ({split})"), labels)
    info = {
        "source": version,
        "path": str(ref.path),
        "layout": "binary records, 3 x 32 x 32 (red, green, blue planes)" + ("" if version == "cifar10" else f", {('fine' if offset else 'coarse')} labels"),
        "files": {"train": [f.name for f in train_files], "test": [test_file.name]},
        "digest_of": "the files' bytes",
        "streamed": True,
        "preprocess": {**ref.preprocess.describe(), "channels": shape[0]},
    }
    return Dataset(ref.text, parts["train"][0], parts["train"][1], parts["test"][0], parts["test"][1], k, digest.hexdigest(),
                   classes=_names(ref, ref.path / names_file, k), info=info)
