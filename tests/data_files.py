"""Data files written in a test's tmp_path from the real MNIST arrays (never committed): class
folders of PNG or JPEG, ``.npz``, CIFAR binary records, Hugging Face ``datasets`` folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


def mnist_u8(n_train: int = 60, n_test: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first uint8 images (N x 28 x 28) and labels of real MNIST's train and test files."""
    from lwdsl.data.builtin import _read_idx

    root = Path(os.environ.get("LWDSL_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data") / "mnist"
    if not root.is_dir():
        pytest.skip(f"real MNIST not found under {root} (set LWDSL_DATA)")
    files = {f.name.removesuffix(".gz"): f for f in root.iterdir()}

    def read(name: str, ndim: int, n: int) -> np.ndarray:
        return np.array(_read_idx(files[name], ndim)[:n])

    return (read("train-images-idx3-ubyte", 3, n_train), read("train-labels-idx1-ubyte", 1, n_train),
            read("t10k-images-idx3-ubyte", 3, n_test), read("t10k-labels-idx1-ubyte", 1, n_test))


def colour(x: np.ndarray) -> np.ndarray:
    """N x 28 x 28 grey -> N x 32 x 32 x 3 colour (padded; red the digit, green its mirror, blue its inverse)."""
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    return np.stack([x, x[:, :, ::-1], 255 - x], axis=-1).astype(np.uint8)


def write_images(folder: Path, x: np.ndarray, y: np.ndarray, suffix: str = ".png", names=None, **save) -> list[Path]:
    """``folder/<class>/<i:04d><suffix>`` for each image; returns the paths in the order written."""
    from PIL import Image

    paths = []
    for i, (a, label) in enumerate(zip(x, y)):
        d = folder / (names[label] if names else str(int(label)))
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{i:04d}{suffix}"
        Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a).save(path, **save)
        paths.append(path)
    return paths


def folder_order(y: np.ndarray) -> np.ndarray:
    """The order a class folder written by :func:`write_images` is read in: by class name
    (sorted as strings), then file name."""
    names = np.array([str(int(v)) for v in y])
    return np.lexsort((np.arange(len(y)), names))


def write_cifar10(folder: Path, batches: list[tuple[np.ndarray, np.ndarray]], test: tuple[np.ndarray, np.ndarray],
                  names: list[str] | None = None) -> None:
    """CIFAR-10 binary files: N x 32 x 32 x 3 uint8 images and labels per file."""
    folder.mkdir(parents=True, exist_ok=True)

    def records(x: np.ndarray, y: np.ndarray) -> bytes:
        planes = np.moveaxis(x, -1, 1).reshape(len(x), -1)
        return np.concatenate([y.astype(np.uint8)[:, None], planes], axis=1).tobytes()

    for i, (x, y) in enumerate(batches, 1):
        (folder / f"data_batch_{i}.bin").write_bytes(records(x, y))
    (folder / "test_batch.bin").write_bytes(records(*test))
    if names:
        (folder / "batches.meta.txt").write_text("\n".join(names) + "\n\n")


def write_cifar100(folder: Path, train: tuple, test: tuple) -> None:
    """CIFAR-100 binary files from (images, coarse, fine) triples."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (x, coarse, fine) in (("train.bin", train), ("test.bin", test)):
        planes = np.moveaxis(x, -1, 1).reshape(len(x), -1)
        rec = np.concatenate([coarse.astype(np.uint8)[:, None], fine.astype(np.uint8)[:, None], planes], axis=1)
        (folder / name).write_bytes(rec.tobytes())


def normalised(x: np.ndarray, mean: float = 0.5, std: float = 0.5) -> np.ndarray:
    """What lwdsl makes of uint8 N x H x W (x C) images with no resize or crop: float32 NCHW."""
    x = x[..., None] if x.ndim == 3 else x
    return (np.moveaxis(x, -1, 1).astype(np.float32) / np.float32(255) - np.float32(mean)) / np.float32(std)
