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
import zlib
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

import numpy as np

from ..errors import UsageError
from ..limits import MAX_WEIGHTS_BYTES, size_words
from ..semantics.fold import FOLDED
from ..semantics.state import CODES, DamagedTensor, check_state, pack_state, unpack_act, unpack_casts, unpack_keep, unpack_state

__all__ = ["save_weights", "load_weights", "atomic_path", "gzip_size", "default_mode", "check_names", "check_shapes",
           "pack_canonical", "unpack_canonical", "Unpacked"]


def default_mode(directory: bool = False) -> int:
    """The permissions a plain ``open``/``mkdir`` would give under the current umask (temporary
    files are created private; outputs should not stay so)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask

_SEP = "::"


def check_names(expected: Any, given: Any, where: str) -> None:
    """A state must hold every tensor the model needs and no other (both backends' words).

    Raises:
        UsageError: (exit 2) ``where`` (the file and the model), the first missing or
            unexpected tensor and how many there are.
    """
    missing = [k for k in expected if k not in given]
    if missing:
        raise UsageError(f"{where}: tensor '{missing[0]}' is missing ({len(missing)} missing in all)")
    unexpected = [k for k in given if k not in expected]
    if unexpected:
        raise UsageError(f"{where}: unexpected tensor '{unexpected[0]}' ({len(unexpected)} unexpected in all)")


def check_shapes(expected: dict[str, tuple[int, ...]], given: dict[str, tuple[int, ...]], where: str) -> None:
    """Every tensor of a state has its model tensor's shape (canonical layout)."""
    for key, shape in expected.items():
        if key in given and tuple(given[key]) != tuple(shape):
            raise UsageError(f"{where}: tensor '{key}' has shape {list(given[key])} in the checkpoint but {list(shape)} in the model")


def pack_canonical(state: dict[str, np.ndarray], folded: Mapping[str, str], quant: Mapping[str, Any],
                   act: Mapping[str, Any], casts: Mapping[str, str],
                   keep: Optional[Mapping[str, np.ndarray]] = None) -> dict[str, np.ndarray]:
    """A backend's float canonical state as both backends give it: an empty ``<norm>.folded``
    marker per norm folded into its layer, quantized layers as codes (in the N:M layout where
    ``keep``, the quantized layers' canonical keep masks, is N:M), static layers' input ranges
    and cast layers' 16 bits (:func:`lwdsl.semantics.state.pack_state`)."""
    state.update({f"{norm}{FOLDED}": np.zeros(0, np.float32) for norm in folded.values()})
    keep = {k: m for k, m in (keep or {}).items() if k in quant}
    return pack_state(state, dict(quant), dict(act), dict(casts), keep) if quant or act or casts else state


@dataclass
class Unpacked:
    """A canonical state as a backend loads it: float weights (``codes * scale`` for quantized
    layers), the quantized layers' codes, the input ranges of those that are static, the layers
    cast to fp16/bf16 (not quantized since), the norms that were folded away and the keep masks
    of the layers stored in the N:M layout (canonical layout)."""

    state: dict[str, Any]
    quant: dict[str, Any]
    act: dict[str, Any]
    casts: dict[str, str]
    folded: list[str]
    keeps: dict[str, np.ndarray]


def unpack_canonical(state: Mapping[str, Any], source: str) -> Unpacked:
    """:class:`Unpacked` of a (packed) canonical state; a float state's arrays come back as they are.

    Raises:
        UsageError: (exit 2) ``source`` and the first damaged tensor.
    """
    folded = [k[: -len(FOLDED)] for k in state if k.endswith(FOLDED)]
    state = {k: v for k, v in state.items() if not k.endswith(FOLDED)}
    if not any(k.endswith(CODES) or k.endswith((".weight.fp16", ".weight.bf16")) or ".act." in k for k in state):
        return Unpacked(state, {}, {}, {}, folded, {})
    try:
        acts, casts, keeps = unpack_act(state), unpack_casts(state), unpack_keep(state)
        floats, quant = unpack_state(state)  # 0-d bits and scales stored as shape (1,) too
    except DamagedTensor as exc:
        raise UsageError(f"{source}: {exc.message}: it is damaged") from None
    return Unpacked(floats, quant, {k: a for k, a in acts.items() if k in quant}, {k: d for k, d in casts.items() if k not in quant},
                    folded, keeps)


def _encode(name: str, arr: np.ndarray) -> dict[str, np.ndarray]:
    arr = np.asarray(arr, order="C")  # keeps 0-d arrays 0-d (ascontiguousarray makes them (1,))
    if arr.dtype.kind == "f" or arr.dtype == np.int8:  # float weights, or int8 codes
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32, copy=False)
        nonzero = arr != 0
        nnz = int(np.count_nonzero(nonzero))
        item = arr.dtype.itemsize
        if arr.ndim and arr.size // 8 + item * nnz + 16 < item * arr.size:
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

    Every size is checked against what the file really holds before memory is taken: each
    array's header against the bytes stored for it (all of them at most MAX_WEIGHTS_BYTES),
    and each sparse tensor's shape against its bitmap and values; then every tensor against
    what the state declares for it (:func:`lwdsl.semantics.quant.check_state`: dtypes, shapes,
    finite values, codes in range for their bits, scales > 0, codebooks, bitmaps). A damaged
    or crafted file (empty, truncated, an absurd shape, a NaN scale) is refused with a
    message naming it and the tensor, before anything is loaded.

    Raises:
        UsageError: the file is missing, empty, not a ``.lwz`` archive, or inconsistent.
    """
    try:
        raw = _read_arrays(Path(path))
    except _Damaged as exc:
        raise UsageError(f"cannot read weights from {path}: {exc}") from None
    except zipfile.BadZipFile as exc:
        raise UsageError(f"cannot read weights from {path}: it is not a .lwz file, or it is damaged ({exc})") from None
    except OSError as exc:
        raise UsageError(f"cannot read weights from {path}: {(exc.strerror or str(exc)).lower()}") from None
    except (EOFError, ValueError, zlib.error) as exc:
        raise UsageError(f"cannot read weights from {path}: it is damaged ({exc or type(exc).__name__})") from None
    except MemoryError:
        raise UsageError(f"cannot read weights from {path}: not enough memory") from None
    except Exception as exc:  # zipfile and numpy raise many types for a damaged archive
        raise UsageError(f"cannot read weights from {path}: it is damaged ({type(exc).__name__}: {exc})") from None
    try:
        meta = json.loads(raw.pop("__meta__").tobytes().decode()) if "__meta__" in raw else {}
    except (ValueError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict):
        raise UsageError(f"cannot read weights from {path}: its __meta__ is not a JSON object")
    state: dict[str, np.ndarray] = {}
    for key, arr in raw.items():
        if arr.dtype.kind in "fc" and arr.dtype != np.float32:  # save_weights writes float32 only
            raise UsageError(f"cannot read weights from {path}: tensor {key!r} holds {arr.dtype} values (a .lwz stores float32): the file is damaged")
        if _SEP not in key:
            state[key] = arr
            continue
        name, part = key.split(_SEP, 1)
        if part not in ("shape", "bitmap", "values") or f"{name}{_SEP}shape" not in raw or name in raw:
            raise UsageError(f"cannot read weights from {path}: entry {key!r} is not part of a sparse tensor: the file is damaged")
        if part != "shape":
            continue
        try:
            state[name] = _dense(name, arr, raw.get(f"{name}{_SEP}bitmap"), raw.get(f"{name}{_SEP}values"))
        except _Damaged as exc:
            raise UsageError(f"cannot read weights from {path}: tensor {name!r} {exc}") from None
    try:
        check_state(state)
    except DamagedTensor as exc:
        raise UsageError(
            f"cannot read weights from {path}: {exc.message}: the file is damaged",
            hint="write the file again (it is checked before it is used; nothing was loaded)",
        ) from None
    return state, meta


class _Damaged(Exception):
    """What is wrong with a ``.lwz`` file (turned into a UsageError naming the file)."""


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the archive, each checked against the bytes stored for it first."""
    if path.is_file() and path.stat().st_size == 0:
        raise _Damaged("the file is empty")
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        total = sum(info.file_size for info in members)
        if total > MAX_WEIGHTS_BYTES:
            raise _Damaged(f"it holds {size_words(total)} of tensors (at most {size_words(MAX_WEIGHTS_BYTES)})")
        for info in members:
            if not info.filename.endswith(".npy"):
                raise _Damaged(f"unexpected entry {info.filename!r} (a .lwz file holds only .npy arrays)")
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(f)
                if dtype.hasobject:
                    raise _Damaged(f"array {info.filename!r} holds Python objects")
                count = int(np.prod(shape, dtype=object))
                stored = info.file_size - f.tell()
                if count * dtype.itemsize != stored:
                    raise _Damaged(
                        f"array {info.filename!r} declares shape {tuple(shape)} ({size_words(count * dtype.itemsize)}) "
                        f"but stores {size_words(stored)}"
                    )
                flat = np.empty(count, dtype=dtype)
                got = f.readinto(memoryview(flat.view(np.uint8))) if stored else 0
                if got != stored:
                    raise _Damaged(f"array {info.filename!r} is truncated: {got:,} of {stored:,} bytes")
            arrays[info.filename[: -len(".npy")]] = flat.reshape(shape, order="F" if fortran else "C")
    return arrays


def _dense(name: str, shape_arr: np.ndarray, bitmap: Any, values: Any) -> np.ndarray:
    """The dense tensor of a sparse entry (float32, or int8 codes), after checking its parts agree."""
    if bitmap is None or values is None:
        raise _Damaged("lacks its bitmap or its values")
    if shape_arr.ndim != 1 or shape_arr.dtype.kind not in "iu" or (shape_arr < 0).any():
        raise _Damaged(f"has a bad shape {shape_arr.tolist()!r}")
    shape = tuple(int(x) for x in shape_arr)
    n = int(np.prod(shape, dtype=object))
    if bitmap.dtype != np.uint8 or bitmap.ndim != 1 or bitmap.size != (n + 7) // 8:
        raise _Damaged(f"declares shape {shape} ({n:,} weights) but its bitmap covers {8 * bitmap.size:,}")
    keep = np.unpackbits(bitmap, count=n).astype(bool)
    kept = int(np.count_nonzero(keep))
    if values.ndim != 1 or values.size != kept:
        raise _Damaged(f"has {kept:,} non-zeros in its bitmap but {values.size:,} values")
    if values.dtype not in (np.float32, np.int8):
        raise _Damaged(f"holds {values.dtype} values (float32 or int8 expected)")
    dense = np.zeros(n, dtype=values.dtype)
    dense[keep] = values
    return dense.reshape(shape)


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
