"""A Hugging Face ``datasets`` folder written by ``save_to_disk`` (a ``DatasetDict`` or one
``Dataset``), read with ``datasets.load_from_disk`` (imported only here, when such a folder is
given; the arrow files are memory-mapped by ``datasets``).

Splits: ``train``, and ``test`` (else ``validation``/``valid``); with no test split, or a single
``Dataset``, the seeded stratified split of :mod:`lwdsl.data.split` (``split=``). Columns: the
image column is ``image=`` or the first column of the ``Image`` feature (else the first of
``Array2D``/``Array3D``); the label column is ``label=`` or the first ``ClassLabel`` column (else
one named ``label`` or ``labels``). Class names come from the ``ClassLabel`` feature. Encoded
images get the same checks and decoding as a folder's files (:mod:`lwdsl.data.images`); array
images those of a ``.npz``. The digest is that of each split's fingerprint and its arrow files'
names, sizes and modification times.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from .arrays import LAYOUTS, as_nhwc, check_labels, check_norm, check_pixels, detect_layout, hwc_of, out_shape
from .dataset import Dataset
from .images import Header, check_image, decode_image, decoded_size
from .ref import DataRef
from .split import stratified_split
from .stream import ImageArray, decode_pool

__all__ = ["is_hf", "load_hf", "hf_shape"]

_TEST = ("test", "validation", "valid")


def is_hf(folder: Path) -> bool:
    """Whether ``folder`` was written by ``datasets``' ``save_to_disk``."""
    return (folder / "dataset_dict.json").is_file() or ((folder / "state.json").is_file() and (folder / "dataset_info.json").is_file())


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise UsageError("reading a Hugging Face datasets folder needs the datasets package",
                         hint="pip install datasets (or pip install 'lwdsl[hf]')") from None
    return datasets


def _open(ref: DataRef) -> tuple[Any, Any, bool]:
    """(train split, test split or None, whether a DatasetDict)."""
    datasets = _datasets()
    try:
        obj = datasets.load_from_disk(str(ref.path))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, arrow errors...
        raise ref.fail(f"cannot be read by datasets.load_from_disk ({type(exc).__name__}: {str(exc)[:160]})",
                       hint="write it with Dataset.save_to_disk or DatasetDict.save_to_disk") from None
    if isinstance(obj, datasets.DatasetDict):
        if "train" not in obj:
            raise ref.fail(f"has no train split (it has: {', '.join(obj) or 'none'})", hint="name the training split 'train'")
        test = next((obj[k] for k in _TEST if k in obj), None)
        return obj["train"], test, True
    return obj, None, False


def _columns(ref: DataRef, ds: Any) -> tuple[str, str, str]:
    """(image column, its kind: 'encoded' or 'array', label column)."""
    datasets = _datasets()
    feats = ds.features
    image = ref.options.get("image")
    if image is not None and image not in feats:
        raise ref.fail(f"has no column {image} (columns: {', '.join(feats)})")
    if image is None:
        image = next((c for c, f in feats.items() if isinstance(f, datasets.Image)), None)
    if image is None:
        image = next((c for c, f in feats.items() if isinstance(f, (datasets.Array2D, datasets.Array3D))), None)
    if image is None:
        raise ref.fail(f"has no image column (columns: {', '.join(feats)})", hint="name it: image=COLUMN")
    kind = "encoded" if isinstance(feats[image], datasets.Image) else "array"
    label = ref.options.get("label")
    if label is not None and label not in feats:
        raise ref.fail(f"has no column {label} (columns: {', '.join(feats)})")
    if label is None:
        label = next((c for c, f in feats.items() if isinstance(f, datasets.ClassLabel)), None)
    if label is None:
        label = next((c for c in ("label", "labels") if c in feats), None)
    if label is None:
        raise ref.fail(f"has no label column (columns: {', '.join(feats)})", hint="name it: label=COLUMN")
    return image, kind, label


def _class_names(ds: Any, label: str) -> tuple[str, ...]:
    feat = ds.features[label]
    return tuple(feat.names) if isinstance(feat, _datasets().ClassLabel) else ()


def _labels(ds: Any, col: str) -> np.ndarray:
    return np.asarray(ds.with_format("numpy", columns=[col])[col])


class _Encoded:
    """The encoded images of a column (bytes or paths), decoded per batch like a folder's files."""

    def __init__(self, ds: Any, col: str, where: str) -> None:
        self.raw = ds.cast_column(col, _datasets().Image(decode=False)).select_columns([col])
        self.col, self.where = col, where

    def source(self, item: dict) -> Any:
        return item["bytes"] if item.get("bytes") is not None else Path(item["path"])

    def items(self, idx: np.ndarray) -> list:
        return self.raw[[int(i) for i in idx]][self.col]

    def headers(self) -> list[Header]:
        out: list[Header] = []
        for start in range(0, len(self.raw), 1024):
            batch = self.raw[start : start + 1024][self.col]
            labels = [f"{self.where}[{start + k}]" for k in range(len(batch))]
            out += decode_pool().map(lambda a: check_image(self.source(a[0]), a[1]), zip(batch, labels))
        return out


def _parts(ref: DataRef) -> tuple[Any, Any, bool, str, str, str, tuple[str, ...]]:
    train, test, is_dict = _open(ref)
    image, kind, label = _columns(ref, train)
    if test is not None:
        ref.only(("image", "label"), "a datasets folder with a test split")
        for c in (image, label):
            if c not in test.features:
                raise ref.fail(f"the test split has no column {c}")
    else:
        ref.only(("image", "label", "split"), "a datasets folder")
    return train, test, is_dict, image, kind, label, _class_names(train, label)


def _array_layout(ref: DataRef, ds: Any, col: str) -> tuple[str, tuple[int, int, int]]:
    first = np.asarray(ds.with_format("numpy", columns=[col])[0][col])
    layout = detect_layout((len(ds), *first.shape), f"data {ref.path}: column {col}", ref.options.get("layout"))
    return layout, hwc_of((len(ds), *first.shape), layout)


def hf_shape(ref: DataRef) -> tuple[tuple[int, int, int], int]:
    train, _, _, image, kind, label, names = _parts(ref)
    k = len(names) or int(_labels(train, label).max()) + 1
    if kind == "array":
        _, hwc = _array_layout(ref, train, image)
        return out_shape(ref.preprocess, hwc, f"data {ref.path}"), k
    enc = _Encoded(train, image, f"{ref.path} {image}")
    header = check_image(enc.source(enc.items(np.array([0]))[0]), f"{ref.path} train[0]")
    h, w = decoded_size(header, ref.preprocess, f"{ref.path} train[0]")
    channels = ref.preprocess.channels or (1 if header.grey else 3)
    check_norm(ref.preprocess, channels, f"data {ref.path}")
    return (channels, h, w), k


def _encoded_images(ref: DataRef, ds: Any, col: str, which: str) -> tuple[_Encoded, list[Header]]:
    enc = _Encoded(ds, col, f"{ref.path} {which}")
    return enc, enc.headers()


def _digest(ref: DataRef, splits: dict[str, Any]) -> str:
    digest = hashlib.sha256(f"hf-v1\n{ref.text.partition('?')[2]}\n".encode())
    for name, ds in splits.items():
        digest.update(f"{name}\t{getattr(ds, '_fingerprint', '')}\n".encode())
        for f in sorted(ds.cache_files, key=lambda c: c["filename"]):
            st = os.stat(f["filename"])
            digest.update(f"{os.path.basename(f['filename'])}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def load_hf(ref: DataRef) -> Dataset:
    train, test, is_dict, image, kind, label, names = _parts(ref)
    sources = {"train": train} if test is None else {"train": train, "test": test}
    ys = {s: check_labels(_labels(ds, label), len(ds), f"data {ref.path}: {s} column {label}", len(names) or None)
          for s, ds in sources.items()}
    k = len(names) or int(max(int(y.max()) for y in ys.values() if y.size)) + 1
    if len(np.unique(ys["train"])) < 2:
        raise ref.fail(f"the train split holds one class in column {label}: a classifier needs at least two")
    prep = ref.preprocess
    arrays: dict[str, ImageArray] = {}
    info_layout = ""
    if kind == "encoded":
        encs = {s: _encoded_images(ref, ds, image, s) for s, ds in sources.items()}
        first_label = f"{ref.path} train[0]"
        first_hw = decoded_size(encs["train"][1][0], prep, first_label)
        channels = prep.channels or (1 if encs["train"][1][0].grey else 3)
        check_norm(prep, channels, f"data {ref.path}")
        shape = (channels, *first_hw)
        for s, (enc, headers) in encs.items():
            for i, hd in enumerate(headers):
                if decoded_size(hd, prep, f"{ref.path} {s}[{i}]") != first_hw:
                    raise ref.fail(f"image {s}[{i}] of column {image} comes out {decoded_size(hd, prep, '')}, "
                                   f"train[0] {first_hw}: every image must come out the same size",
                                   hint="give resize=HxW, or resize=S with crop=S")
            arrays[s] = _encoded_array(enc, shape, prep, channels, f"{ref.path} ({s})")
        info_layout = f"encoded images in column {image}"
    else:
        layout, hwc = _array_layout(ref, train, image)
        shape = out_shape(prep, hwc, f"data {ref.path}")
        for s, ds in sources.items():
            arrays[s] = _array_column(ds, image, layout, shape, prep, f"{ref.path} ({s})")
        info_layout = f"arrays in column {image}: {layout} ({LAYOUTS[layout]}, {'given' if 'layout' in ref.options else 'detected'})"
    info: dict[str, Any] = {
        "source": "huggingface datasets",
        "path": str(ref.path),
        "layout": info_layout,
        "label_column": label,
        "digest_of": "each split's fingerprint and its arrow files' names, sizes and modification times",
        "streamed": True,
        "preprocess": {**prep.describe(), "channels": shape[0]},
    }
    if test is None:
        tr, te = stratified_split(ys["train"], ref.split)
        info["split"] = {"test_fraction": ref.split, "seed": 0}
        info["layout"] += f"; {100 * ref.split:g}% of each class held out for testing (seeded, stratified)"
        whole, y = arrays["train"], ys["train"]
        arrays = {"train": whole.subset(tr, f"{ref.path} (train)"), "test": whole.subset(te, f"{ref.path} (test)")}
        ys = {"train": y[tr], "test": y[te]}
    return Dataset(ref.text, arrays["train"], ys["train"], arrays["test"], ys["test"], k, _digest(ref, sources),
                   classes=names or tuple(str(i) for i in range(k)), info=info)


def _encoded_array(enc: _Encoded, shape: tuple[int, int, int], prep: Any, channels: int, what: str) -> ImageArray:
    def fetch(idx: np.ndarray) -> np.ndarray:
        items = enc.items(idx)
        out = np.empty((len(idx), *shape), dtype=np.float32)

        def one(k: int) -> None:
            out[k] = decode_image(enc.source(items[k]), prep, channels, f"{enc.where}[{int(idx[k])}]")

        for _ in decode_pool().map(one, range(len(idx))):
            pass
        return out

    return ImageArray(len(enc.raw), shape, fetch, what=what)


def _array_column(ds: Any, col: str, layout: str, shape: tuple[int, int, int], prep: Any, what: str) -> ImageArray:
    view = ds.with_format("numpy", columns=[col])

    def fetch(idx: np.ndarray) -> np.ndarray:
        batch = np.asarray(view[[int(i) for i in idx]][col])
        batch = check_pixels(batch, f"{what} column {col}")
        return prep.batch_from_arrays(as_nhwc(batch, layout), shape[0])

    return ImageArray(len(ds), shape, fetch, what=what)
