"""A folder of class subfolders: ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*``, or
``ROOT/<class>/*`` split by :func:`lwdsl.data.split.stratified_split`.

Class names are the class folders' names, sorted (Python's string order); class ``i`` is the
``i``-th. A class folder's images are its files ending in .png, .jpg, .jpeg, .bmp or .webp (any
case), in sub-folders too, hidden files (``.name``) left out; a split's examples are ordered by
class, then by path relative to the class folder (sorted as strings). Every file's header and
end are checked before training (:func:`lwdsl.data.images.check_image`); the pixels are decoded
when a batch needs them. The data's digest (lock file, baseline cache) is that of every file's
path, size and modification time, and of the options: nothing is read twice for it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..limits import MAX_DATA_FILES
from .arrays import check_norm
from .dataset import Dataset
from .images import IMAGE_SUFFIXES, Header, check_image, decode_image, decoded_size
from .ref import DataRef
from .split import stratified_split
from .stream import ImageArray, decode_pool

__all__ = ["load_folder", "folder_shape"]

_HINT = "lay it out as ROOT/<class>/*.png (split into train and test) or ROOT/train/<class>/... and ROOT/test/<class>/..."


def _subdirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _loose_images(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES))


def _parts(ref: DataRef) -> tuple[dict[str, Path], bool]:
    """({"train": folder, "test": folder} or {"all": folder}, whether the source splits itself)."""
    root = ref.path
    subs = _subdirs(root)
    if "train" in subs and "test" in subs:
        ref.only((), "a folder with train/ and test/")
        return {"train": root / "train", "test": root / "test"}, False
    if "train" in subs or "test" in subs:
        has, lacks = ("train", "test") if "train" in subs else ("test", "train")
        raise ref.fail(f"has a {has}/ folder but no {lacks}/ folder", hint=f"add {lacks}/ with the same class folders, or {_HINT}")
    ref.only(("split",), "a folder of class folders")
    return {"all": root}, True


def _classes(ref: DataRef, folder: Path) -> list[str]:
    names = _subdirs(folder)
    loose = _loose_images(folder)
    if not names:
        what = f"holds {len(loose)} image(s) but no class folders" if loose else "has no class folders"
        raise ref.fail(f"{folder} {what}", hint=_HINT)
    if loose:
        raise ref.fail(f"{folder} holds images outside its class folders (first: {loose[0]})",
                       hint="move every image into the folder of its class")
    return names


def _files(ref: DataRef, folder: Path) -> list[tuple[str, int, int]]:
    """(path relative to ``folder``, size, mtime_ns) of every image under it, sorted by path."""
    out, others = [], 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            if not name.lower().endswith(IMAGE_SUFFIXES):
                others += 1
                continue
            full = os.path.join(dirpath, name)
            st = os.stat(full)
            out.append((os.path.relpath(full, folder).replace(os.sep, "/"), st.st_size, st.st_mtime_ns))
            if len(out) > MAX_DATA_FILES:
                raise ref.fail(f"{folder} holds more than {MAX_DATA_FILES:,} images")
    if not out:
        also = f" ({others} other file(s))" if others else ""
        raise ref.fail(f"class folder {folder} holds no image{also}",
                       hint=f"put its images ({', '.join(IMAGE_SUFFIXES)}) in it, or delete the empty folder")
    return sorted(out)


def _listing(ref: DataRef) -> tuple[list[str], dict[str, tuple[list[Path], np.ndarray]], list[str], bool]:
    """(class names, part -> (files, labels), digest lines, whether split here)."""
    parts, split_here = _parts(ref)
    first = next(iter(parts.values()))
    classes = _classes(ref, first)
    if "test" in parts:
        extra = [c for c in _classes(ref, parts["test"]) if c not in classes]
        if extra:
            raise ref.fail(f"test/ has class folders that train/ has not: {', '.join(extra[:5])}",
                           hint="the class names are train/'s folders: add them there or remove them from test/")
    if len(classes) < 2:
        raise ref.fail(f"has one class folder ({classes[0]}): a classifier needs at least two", hint=_HINT)
    listing: dict[str, tuple[list[Path], np.ndarray]] = {}
    lines: list[str] = []
    for part, folder in parts.items():
        paths: list[Path] = []
        labels: list[int] = []
        for c, name in enumerate(classes):
            if part == "test" and not (folder / name).is_dir():
                continue
            for rel, size, mtime in _files(ref, folder / name):
                paths.append(folder / name / rel)
                labels.append(c)
                lines.append(f"{part}/{name}/{rel}\t{size}\t{mtime}\n")
        listing[part] = (paths, np.asarray(labels, dtype=np.int64))
    return classes, listing, lines, split_here


def _first_image(ref: DataRef, folder: Path, classes: list[str]) -> Path:
    for name in classes:
        files = _files(ref, folder / name)
        return folder / name / files[0][0]
    raise AssertionError("no classes")  # pragma: no cover - _classes refuses that


def _channels(ref: DataRef, header: Header) -> int:
    c = ref.preprocess.channels or (1 if header.grey else 3)
    check_norm(ref.preprocess, c, f"data {ref.path}")
    return c


def folder_shape(ref: DataRef) -> tuple[tuple[int, int, int], int]:
    """((C, H, W), classes) from the class folders and the first image's header alone."""
    parts, _ = _parts(ref)
    folder = next(iter(parts.values()))
    classes = _classes(ref, folder)
    if len(classes) < 2:
        raise ref.fail(f"has one class folder ({classes[0]}): a classifier needs at least two", hint=_HINT)
    path = _first_image(ref, folder, classes)
    header = check_image(path)
    h, w = decoded_size(header, ref.preprocess, str(path))
    return (_channels(ref, header), h, w), len(classes)


def _check_all(ref: DataRef, paths: list[Path]) -> list[Header]:
    """Every file's header and end (in the decode threads), in order; the first bad one named."""
    return list(decode_pool().map(check_image, paths))


def _size_check(ref: DataRef, paths: list[Path], headers: list[Header], first: tuple[Path, tuple[int, int]]) -> None:
    prep = ref.preprocess
    for path, header in zip(paths, headers):
        hw = decoded_size(header, prep, str(path))
        if hw != first[1]:
            raw = f" (it is {header.height}x{header.width})" if prep.resize is not None or prep.crop is not None else ""
            raise ref.fail(
                f"image {path} comes out {hw[0]}x{hw[1]}{raw}, the first image {first[0]} {first[1][0]}x{first[1][1]}: "
                "every image must come out the same size",
                hint="give resize=HxW, or resize=S with crop=S (e.g. --resize 256 --crop 224)"
                if prep.resize is None or prep.crop is None else "give a crop= no larger than the smallest image",
            )


def load_folder(ref: DataRef) -> Dataset:
    """The :class:`~lwdsl.data.dataset.Dataset` of a class folder (images as :class:`ImageArray`)."""
    classes, listing, lines, split_here = _listing(ref)
    all_paths = [p for paths, _ in listing.values() for p in paths]
    headers = _check_all(ref, all_paths)
    first_path = all_paths[0]
    first_hw = decoded_size(headers[0], ref.preprocess, str(first_path))
    _size_check(ref, all_paths, headers, (first_path, first_hw))
    channels = _channels(ref, headers[0])
    shape = (channels, *first_hw)
    if split_here:
        paths, labels = listing["all"]
        tr, te = stratified_split(labels, ref.split)
        parts = {"train": ([paths[i] for i in tr], labels[tr]), "test": ([paths[i] for i in te], labels[te])}
    else:
        parts = listing
    prep = ref.preprocess

    def images(paths: list[Path], which: str) -> ImageArray:
        def fetch(idx: np.ndarray) -> np.ndarray:
            out = np.empty((len(idx), *shape), dtype=np.float32)

            def one(k: int) -> None:
                out[k] = decode_image(paths[int(idx[k])], prep, channels)

            for _ in decode_pool().map(one, range(len(idx))):
                pass
            return out

        return ImageArray(len(paths), shape, fetch, what=f"{ref.path} ({which})")

    digest = hashlib.sha256(f"folder-v1\n{ref.text.partition('?')[2]}\nsplit={ref.split if split_here else '-'}\n".encode())
    for line in lines:
        digest.update(line.encode("utf-8", "surrogateescape"))
    info: dict[str, Any] = {
        "source": "folder",
        "path": str(ref.path),
        "layout": "train/ and test/ class folders" if not split_here
        else f"class folders, {100 * ref.split:g}% of each class held out for testing (seeded, stratified)",
        "digest_of": "file paths, sizes and modification times",
        "streamed": True,
    }
    if split_here:
        info["split"] = {"test_fraction": ref.split, "seed": 0}
    return Dataset(
        name=ref.text,
        train_x=images(parts["train"][0], "train"),
        train_y=parts["train"][1],
        test_x=images(parts["test"][0], "test"),
        test_y=parts["test"][1],
        num_classes=len(classes),
        sha256=digest.hexdigest(),
        classes=tuple(classes),
        info={**info, "preprocess": {**prep.describe(), "channels": channels}},
    )
