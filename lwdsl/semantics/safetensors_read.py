"""Reading a ``.safetensors`` file into numpy arrays, without a framework: the format is an
8-byte little-endian header length, a JSON header (tensor name -> ``dtype``, ``shape``,
``data_offsets`` into the byte buffer that follows; ``__metadata__``), then the buffer.

The ``safetensors`` package's numpy reader refuses ``BF16`` (numpy has no bfloat16), which
compressed-tensors checkpoints use for their scales; here a bfloat16 tensor is widened to
float32 exactly (its 16 bits are the high half of the float32), every other dtype is read as
is. Writing goes through ``safetensors.numpy.save_file`` (the same bytes torch's writer gives
for the same arrays).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import UsageError

__all__ = ["read_safetensors", "DTYPES"]

#: safetensors dtype -> numpy dtype (little-endian); BF16 is widened to float32 (module docstring).
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?", "BF16": "<u2"}


def read_safetensors(path: Path, names: Optional[set[str]] = None) -> dict[str, np.ndarray]:
    """The tensors of one file (those in ``names``, or all), as numpy arrays (copies).

    Raises:
        UsageError: a file that is not safetensors (a short or damaged header, an unknown
            dtype, offsets outside the buffer).
    """
    raw = Path(path).read_bytes()
    if len(raw) < 8:
        raise UsageError(f"{path} is not a safetensors file (only {len(raw)} bytes)")
    (size,) = struct.unpack("<Q", raw[:8])
    try:
        header = json.loads(raw[8:8 + size])
    except ValueError as exc:
        raise UsageError(f"{path} is not a safetensors file (its header is not JSON: {exc})") from None
    base = 8 + size
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__" or (names is not None and name not in names):
            continue
        dtype = DTYPES.get(info.get("dtype"))
        begin, end = (int(v) for v in info["data_offsets"])
        shape = tuple(int(d) for d in info["shape"])
        if dtype is None or not 0 <= begin <= end <= len(raw) - base:
            raise UsageError(f"{path}: tensor {name} has dtype {info.get('dtype')!r} or offsets outside the file",
                             hint=f"lwdsl reads the dtypes {', '.join(DTYPES)}")
        a = np.frombuffer(raw, dtype=dtype, count=(end - begin) // np.dtype(dtype).itemsize, offset=base + begin)
        if info["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = np.array(a.reshape(shape), copy=True)
    return out
