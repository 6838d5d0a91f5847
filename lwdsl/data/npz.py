"""A ``.npz`` file of ``x_train``, ``y_train``, ``x_test``, ``y_test`` (and optionally
``classes``: the class names, strings).

Images are uint8, other integers in 0..255, or floats in [0, 1]; their axes N x H x W,
N x H x W x C or N x C x H x W with C of 1 or 3, detected from the shape
(:func:`lwdsl.data.arrays.detect_layout`; a shape both 4-axis layouts fit is refused unless
``layout=`` says which) and stated in the report. Labels are integers from 0; the number of
classes is ``len(classes)`` when the file names them, else the largest label + 1. The arrays
are held as stored (no float32 copy); the digest is the file's sha256.
"""

from __future__ import annotations

import hashlib
import zipfile
from typing import Any

import numpy as np

from .arrays import LAYOUTS, array_images, file_digest, as_nhwc, check_labels, check_pixels, detect_layout, hwc_of, out_shape
from .dataset import Dataset
from .ref import DataRef

__all__ = ["load_npz", "npz_shape"]

_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _open(ref: DataRef) -> Any:
    try:
        z = np.load(ref.path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ref.fail(f"cannot be read as a .npz file ({str(exc)[:160] or type(exc).__name__})",
                       hint="write it with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)") from None
    if not hasattr(z, "files"):
        raise ref.fail("is a single .npy array, not a .npz of x_train, y_train, x_test, y_test")
    missing = [k for k in _KEYS if k not in z.files]
    if missing:
        raise ref.fail(f"has no {', '.join(missing)} (it holds: {', '.join(z.files) or 'nothing'})",
                       hint="a .npz data set holds x_train, y_train, x_test, y_test (and optionally classes)")
    return z


def _get(ref: DataRef, z: Any, key: str) -> np.ndarray:
    try:
        return z[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ref.fail(f"array {key} cannot be read ({str(exc)[:160] or type(exc).__name__})",
                       hint="an array saved as Python objects needs pickle, which lwdsl never loads: save numbers and strings") from None


def _class_names(ref: DataRef, z: Any) -> tuple[str, ...]:
    for key in ("classes", "class_names"):
        if key in z.files:
            names = _get(ref, z, key)
            if names.ndim != 1 or not (names.dtype.kind in "US"):
                raise ref.fail(f"{key} has shape {names.shape} of {names.dtype}: expected a 1-d array of strings")
            return tuple(str(s) for s in names.tolist())
    return ()


def _layouts(ref: DataRef, z: Any) -> tuple[str, tuple[int, int, int]]:
    """(layout, H x W x C of one image), from the headers alone, checked to agree."""
    forced = ref.options.get("layout", "").lower() or None
    shapes = {}
    for key in ("x_train", "x_test"):
        shapes[key] = _header_shape(ref, z, key)
    layout = detect_layout(shapes["x_train"], f"data {ref.path}: x_train", forced)
    layout_test = detect_layout(shapes["x_test"], f"data {ref.path}: x_test", forced or layout)
    hwc = {k: hwc_of(s, layout if k == "x_train" else layout_test) for k, s in shapes.items()}
    if hwc["x_train"] != hwc["x_test"]:
        raise ref.fail(f"x_train images are {hwc['x_train']} (H, W, C) but x_test images are {hwc['x_test']}",
                       hint="both splits must hold images of one size and channels")
    return layout, hwc["x_train"]


def _header_shape(ref: DataRef, z: Any, key: str) -> tuple[int, ...]:
    """The shape of array ``key`` from its .npy header, without reading its data."""
    fmt = np.lib.format
    try:
        with z.zip.open(key + ".npy") as f:
            version = fmt.read_magic(f)
            reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if reader is not None:
                return tuple(int(s) for s in reader(f)[0])
    except (OSError, ValueError, zipfile.BadZipFile, KeyError, EOFError) as exc:
        raise ref.fail(f"array {key} cannot be read ({str(exc)[:160] or type(exc).__name__})") from None
    return tuple(int(s) for s in _get(ref, z, key).shape)  # another .npy version: read it


def npz_shape(ref: DataRef) -> tuple[tuple[int, int, int], int]:
    """((C, H, W), classes) of a .npz data set: the images' headers, and the labels."""
    ref.only(("layout",), "a .npz file")
    with _open(ref) as z:
        _, hwc = _layouts(ref, z)
        names = _class_names(ref, z)
        k = len(names) or _classes_from(ref, z)
    return out_shape(ref.preprocess, hwc, f"data {ref.path}"), k


def _classes_from(ref: DataRef, z: Any) -> int:
    top = -1
    for key in ("y_train", "y_test"):
        y = _get(ref, z, key)
        if y.size and np.issubdtype(y.dtype, np.number):
            top = max(top, int(np.max(y)))
    return max(top + 1, 0)


def load_npz(ref: DataRef) -> Dataset:
    """The :class:`~lwdsl.data.dataset.Dataset` of a .npz file (images as :class:`ImageArray`)."""
    ref.only(("layout",), "a .npz file")
    with _open(ref) as z:
        layout, hwc = _layouts(ref, z)
        names = _class_names(ref, z)
        x = {k: check_pixels(_get(ref, z, k), f"data {ref.path}: {k}") for k in ("x_train", "x_test")}
        n = {"y_train": len(x["x_train"]), "y_test": len(x["x_test"])}
        y = {k: check_labels(_get(ref, z, k), n[k], f"data {ref.path}: {k}", len(names) or None) for k in ("y_train", "y_test")}
    for split in ("train", "test"):
        if not len(x[f"x_{split}"]):
            raise ref.fail(f"x_{split} holds no images")
    k = len(names) or int(max(y["y_train"].max(), y["y_test"].max())) + 1
    if len(np.unique(y["y_train"])) < 2:
        raise ref.fail(f"y_train holds one class ({int(y['y_train'][0])}): a classifier needs at least two")
    shape = out_shape(ref.preprocess, hwc, f"data {ref.path}")
    prep = ref.preprocess
    images = {s: array_images(as_nhwc(x[f"x_{s}"], layout), shape, prep, f"{ref.path} (x_{s})") for s in ("train", "test")}
    info = {
        "source": "npz",
        "path": str(ref.path),
        "layout": f"{layout} ({LAYOUTS[layout]}, {'given' if 'layout' in ref.options else 'detected'})",
        "stored_as": str(x["x_train"].dtype),
        "digest_of": "the file's bytes",
        "streamed": True,
        "preprocess": {**prep.describe(), "channels": shape[0]},
    }
    return Dataset(ref.text, images["train"], y["y_train"], images["test"], y["y_test"], k, file_digest(hashlib.sha256(), ref.path).hexdigest(),
                   classes=names or tuple(str(i) for i in range(k)), info=info)
