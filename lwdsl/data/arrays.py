"""Images held as arrays (``.npz``, CIFAR records, array columns): the layout of their axes,
their labels, and the lazy float32 view of them the core reads.

The raw images stay as they are stored (uint8, or float in [0, 1]); a batch becomes float32
NCHW only when it is indexed (:meth:`lwdsl.data.preprocess.Preprocess.batch_from_arrays`).
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import UsageError
from .preprocess import Preprocess
from .stream import ImageArray

__all__ = ["detect_layout", "hwc_of", "as_nhwc", "array_images", "check_pixels", "check_labels", "out_shape", "check_norm", "file_digest", "LAYOUTS"]

#: What each layout's axes are, for the report.
LAYOUTS = {"nhw": "N x H x W (grey)", "nhwc": "N x H x W x C", "nchw": "N x C x H x W"}


def detect_layout(shape: Sequence[int], what: str, forced: Optional[str] = None) -> str:
    """``nhw``, ``nhwc`` or ``nchw`` for images of ``shape`` (C must be 1 or 3); a UsageError
    when no layout fits or when both 4-axis layouts do (unless ``forced`` says which).

    >>> detect_layout((10, 28, 28), "x"), detect_layout((10, 32, 32, 3), "x"), detect_layout((10, 3, 32, 32), "x")
    ('nhw', 'nhwc', 'nchw')
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        if forced not in (None, "nhw"):
            raise UsageError(f"{what} has shape {shape} (3 axes): layout={forced} needs 4", hint="leave layout= out: 3 axes are N x H x W")
        return "nhw"
    if len(shape) != 4:
        raise UsageError(f"{what} has shape {shape}: images must be N x H x W, N x H x W x C or N x C x H x W (C = 1 or 3)")
    chw, hwc = shape[1] in (1, 3), shape[3] in (1, 3)
    if forced is not None:
        if forced == "nhw" or not (chw if forced == "nchw" else hwc):
            c = shape[1] if forced == "nchw" else shape[3]
            raise UsageError(f"{what} has shape {shape}: layout={forced} gives {c} channels (C must be 1 or 3)")
        return forced
    if chw and hwc:
        raise UsageError(f"{what} has shape {shape}: ambiguous, both N x C x H x W and N x H x W x C fit",
                         hint="say which: layout=nchw or layout=nhwc (e.g. --data 'FILE.npz?layout=nhwc')")
    if not (chw or hwc):
        raise UsageError(f"{what} has shape {shape}: no axis of 1 or 3 channels (N x H x W x C or N x C x H x W, C = 1 or 3)")
    return "nchw" if chw else "nhwc"


def hwc_of(shape: Sequence[int], layout: str) -> tuple[int, int, int]:
    """(H, W, C) of one image of an N-image array of ``shape`` in ``layout``."""
    if layout == "nhw":
        return int(shape[1]), int(shape[2]), 1
    if layout == "nchw":
        return int(shape[2]), int(shape[3]), int(shape[1])
    return int(shape[1]), int(shape[2]), int(shape[3])


def as_nhwc(x: Any, layout: str) -> Any:
    """A view of ``x`` as N x H x W x C (no copy)."""
    if layout == "nhw":
        return x[..., None]
    if layout == "nchw":
        return np.moveaxis(x, 1, -1)
    return x


def check_pixels(x: np.ndarray, what: str) -> np.ndarray:
    """uint8 images as they are; other integer images in 0..255 as uint8; float images must lie
    in [0, 1] (lwdsl normalises them itself). A UsageError otherwise."""
    if x.dtype == np.uint8:
        return x
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise UsageError(f"{what} holds {x.dtype} values: images must be uint8 or float in [0, 1]")
    if x.size == 0:
        return x
    lo, hi = x.min(), x.max()
    if np.issubdtype(x.dtype, np.integer):
        if lo < 0 or hi > 255:
            raise UsageError(f"{what} holds integers from {lo} to {hi}: integer images must be 0 to 255")
        return x.astype(np.uint8)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
        raise UsageError(f"{what} holds floats from {lo:g} to {hi:g}: float images must be in [0, 1]",
                         hint="lwdsl normalises images itself (mean=, std=): store them as uint8, or as floats in [0, 1]")
    return x


def check_labels(y: Any, n: int, what: str, classes: Optional[int] = None) -> np.ndarray:
    """int64 labels of ``n`` images: one integer per image (N or N x 1), 0 or more, and below
    ``classes`` when it is known; a UsageError naming the first bad one."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise UsageError(f"{what} has shape {y.shape}: expected one label per image ({n:,})")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise UsageError(f"{what} holds {y.dtype} values: labels must be integers (class indices)")
    y = y.astype(np.int64)
    bad = np.flatnonzero((y < 0) | (y >= classes)) if classes is not None else np.flatnonzero(y < 0)
    if bad.size:
        allowed = f"0 to {classes - 1}" if classes is not None else "0 or more"
        raise UsageError(f"{what}[{bad[0]}] is {y[bad[0]]}: labels are {allowed}" + (f" ({classes} classes)" if classes else ""),
                         hint="fix the label, or give the class names that match it")
    return y


def array_images(raw: Any, shape: tuple[int, int, int], prep: Preprocess, what: str) -> ImageArray:
    """A lazy float32 NCHW view of N x H x W x C images ``raw`` (any array-like that fancy-indexes)."""
    channels = shape[0]

    def fetch(idx: np.ndarray) -> np.ndarray:
        order = np.argsort(idx, kind="stable")  # ascending reads (a memory map reads each page once)
        batch = np.asarray(raw[idx[order]])
        out = np.empty((len(idx), *shape), dtype=np.float32)
        out[order] = prep.batch_from_arrays(batch, channels)
        return out

    return ImageArray(len(raw), shape, fetch, what=what)


def out_shape(ref_prep: Preprocess, hwc: Sequence[int], what: str) -> tuple[int, int, int]:
    """(C, H, W) images of H x W x C come out as."""
    c = ref_prep.channels or int(hwc[2])
    try:
        h, w = ref_prep.out_hw(int(hwc[0]), int(hwc[1]))
    except ValueError as exc:
        raise UsageError(f"{what}: images {exc}", hint="give a smaller crop=, or resize= first") from None
    check_norm(ref_prep, c, what)
    return c, h, w


def check_norm(prep: Preprocess, c: int, what: str) -> None:
    """A UsageError when ``mean=`` or ``std=`` has neither one value nor one per channel."""
    for name, vals in (("mean", prep.mean), ("std", prep.std)):
        if len(vals) not in (1, c):
            raise UsageError(f"{what}: {name}= has {len(vals)} values for {c}-channel images", hint=f"give one {name} value or {c}")


def file_digest(digest: Any, path: Any) -> Any:
    """``digest`` updated with the bytes of the file at ``path``, read in chunks (never mapped:
    the pages do not stay in the process's memory)."""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest
