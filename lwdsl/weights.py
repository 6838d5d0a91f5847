"""The compact, framework-neutral weight file (``.lwz``) and atomic writes.

A ``.lwz`` file is a numpy ``.npz`` archive (no pickle, so loading it can never run code) of
canonical weights (PyTorch layout and names, see :meth:`lwdsl.backend.Backend.state`). A tensor
with zeros is stored sparsely when that is smaller: a bitmap of the non-zeros (1 bit per
weight, ``numpy.packbits``) plus the non-zero values in float32. Dense storage costs 4 bytes a
weight; sparse costs 1/8 + 4 * density, so it pays from about 3% sparsity on, and a LeNet
pruned to 8% density takes about 0.45 bytes a weight (9x smaller) before any gzip.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import RunError

__all__ = ["save_weights", "load_weights", "atomic_path", "gzip_size", "default_mode"]


def default_mode(directory: bool = False) -> int:
    """The permissions a plain ``open``/``mkdir`` would give under the current umask (temporary
    files are created private; outputs should not stay so)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask

_SEP = "::"


def _encode(name: str, arr: np.ndarray) -> dict[str, np.ndarray]:
    arr = np.ascontiguousarray(arr)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32, copy=False)
        nonzero = arr != 0
        nnz = int(np.count_nonzero(nonzero))
        if arr.size // 8 + 4 * nnz + 16 < 4 * arr.size:
            return {
                f"{name}{_SEP}bitmap": np.packbits(nonzero.reshape(-1)),
                f"{name}{_SEP}values": arr.reshape(-1)[nonzero.reshape(-1)],
                f"{name}{_SEP}shape": np.asarray(arr.shape, dtype=np.int64),
            }
    return {name: arr}


def save_weights(path: Path, state: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> int:
    """Write ``state`` compactly to ``path`` atomically; returns the file's size in bytes."""
    entries: dict[str, np.ndarray] = {}
    for name, arr in state.items():
        if _SEP in name or name == "__meta__":
            raise ValueError(f"tensor name {name!r} is reserved")
        entries.update(_encode(name, np.asarray(arr)))
    entries["__meta__"] = np.frombuffer(json.dumps(meta or {}, sort_keys=True).encode(), dtype=np.uint8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **entries)
    return Path(path).stat().st_size


def load_weights(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a ``.lwz`` file: (canonical state, meta). Never unpickles anything.

    Raises:
        RunError: the file is missing or not a ``.lwz`` archive.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RunError(f"cannot read weights from {path}: {exc}") from None
    meta = json.loads(raw.pop("__meta__").tobytes().decode()) if "__meta__" in raw else {}
    state: dict[str, np.ndarray] = {}
    for key, arr in raw.items():
        if _SEP not in key:
            state[key] = arr
            continue
        name, part = key.split(_SEP, 1)
        if part != "shape":
            continue
        shape = tuple(int(x) for x in arr)
        n = int(np.prod(shape))
        keep = np.unpackbits(raw[f"{name}{_SEP}bitmap"], count=n).astype(bool)
        dense = np.zeros(n, dtype=np.float32)
        dense[keep] = raw[f"{name}{_SEP}values"]
        state[name] = dense.reshape(shape)
    return state, meta


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically, on
    any error (or Ctrl-C) it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, default_mode())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def gzip_size(path: Path) -> int:
    """Bytes of ``path`` after gzip -9 (measured, not estimated)."""
    buf = io.BytesIO()
    with open(path, "rb") as f, gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        while chunk := f.read(1 << 20):
            gz.write(chunk)
    return buf.tell()
