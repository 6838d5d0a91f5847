"""The one bit packer: ``B``-bit codes in bytes, for quantized codes and cluster indices alike.

**Layout** (:func:`pack_fields`): the codes as ``B``-bit fields of one little-endian bit stream,
in C order, element ``i`` in bits ``B*i .. B*i + B - 1`` of the stream (bit ``k`` of the stream
is bit ``k % 8`` of byte ``k // 8``), ``ceil(n * B / 8)`` bytes, unused high bits of the last
byte 0. For ``B`` in 1, 2, 4 that is element ``i`` in bits ``B*(i % (8/B))`` and up of byte
``i // (8/B)``: two int4 per byte, four int2 or ternary, eight binary, the first element in the
lowest bits.

What a field holds:

- quantized codes (:func:`pack_codes`, 1, 2 or 4 bits): the code's two's complement in ``B``
  bits (``-1`` is ``0b11`` in 2 bits, ``0xF`` in 4); binary +1 as bit 1 and -1 as bit 0;
- cluster indices (:func:`pack_indices`, 1..8 bits): the unsigned index.
"""

from __future__ import annotations

import numpy as np

from ..errors import RunError
from .forms import code_bounds

__all__ = [
    "PACKED_BITS",
    "code_range",
    "pack_fields",
    "unpack_fields",
    "pack_codes",
    "unpack_codes",
    "pack_indices",
    "unpack_indices",
]

#: The code widths stored packed (whole fields per byte); 3, 5..8-bit codes are stored as int8.
PACKED_BITS = (1, 2, 4)


def code_range(bits: int, full: bool = False) -> tuple[int, int]:
    """The codes of a ``bits``-bit form: ``[-1, 1]`` (binary: ±1) at 1 bit, else the narrow
    range ``[-(2^(bits-1)-1), 2^(bits-1)-1]``, or with ``full`` (a layer on the full grid,
    :func:`lwdsl.semantics.codes.code_bounds`) ``[-2^(bits-1), 2^(bits-1)-1]``.

    >>> code_range(1), code_range(4), code_range(8), code_range(4, full=True)
    ((-1, 1), (-7, 7), (-127, 127), (-8, 7))
    """
    return code_bounds(bits, "full" if full else "narrow")


def pack_fields(fields: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned ``bits``-bit fields (each in ``[0, 2^bits)``, bits 1..8, unchecked) packed into
    ``ceil(n * bits / 8)`` uint8 (module layout).

    >>> pack_fields(np.array([1, 7, 0, 5], np.uint8), 3).tolist()
    [57, 10]
    """
    f = np.asarray(fields).astype(np.uint8, copy=False).reshape(-1, 1)
    stream = np.unpackbits(f, axis=1, count=int(bits), bitorder="little")
    return np.packbits(stream.reshape(-1), bitorder="little")


def unpack_fields(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """The first ``n`` unsigned ``bits``-bit fields of ``packed`` (uint8, ``n * bits`` bits in
    it, unchecked), as uint8.

    >>> unpack_fields(np.array([57, 10], np.uint8), 3, 4).tolist()
    [1, 7, 0, 5]
    """
    stream = np.unpackbits(np.asarray(packed, dtype=np.uint8), count=n * int(bits), bitorder="little")
    return np.packbits(stream.reshape(n, int(bits)), axis=1, bitorder="little").reshape(n)


def pack_codes(codes: np.ndarray, bits: int, full: bool = False) -> np.ndarray:
    """Codes of 1, 2 or 4 bits packed into bytes (module layout: two's complement fields;
    binary +1 as 1, -1 as 0): ``ceil(size * bits / 8)`` uint8. ``full``: codes of the full
    grid (:func:`code_range`), ``-2^(bits-1)`` included (the same two's complement fields).

    Raises:
        ValueError: bits not 1, 2 or 4, or a code outside the form's range (binary: not ±1).

    >>> pack_codes(np.array([1, -1, 0, 7, -7], np.int8), 4).tolist()
    [241, 112, 9]
    >>> pack_codes(np.array([1, -1, 1, 1, -1, -1, -1, 1, 1], np.int8), 1).tolist()
    [141, 1]
    """
    if bits not in PACKED_BITS:
        raise ValueError(f"packing needs bits 1, 2 or 4, got {bits!r}")
    c = np.asarray(codes).astype(np.int8, copy=False).reshape(-1)
    lo, hi = code_range(bits, full)
    if c.size and (c.min() < lo or c.max() > hi or (bits == 1 and (c == 0).any())):
        raise ValueError(f"codes outside the {bits}-bit range [{lo}, {hi}]" + (" (binary: ±1 only)" if bits == 1 else ""))
    fields = (c > 0).astype(np.uint8) if bits == 1 else c.view(np.uint8) & np.uint8((1 << bits) - 1)
    return pack_fields(fields, bits)


def unpack_codes(packed: np.ndarray, bits: int, shape: tuple[int, ...], full: bool = False) -> np.ndarray:
    """Inverse of :func:`pack_codes`: int8 codes of ``shape`` (``full``: ``-2^(bits-1)`` is a
    code; else a field holding it is damage).

    Raises:
        RunError: the byte count does not fit ``shape``, or a field holds no valid code (a
            damaged file).

    >>> unpack_codes(np.array([241, 112, 9], np.uint8), 4, (5,)).tolist()
    [1, -1, 0, 7, -7]
    """
    if bits not in PACKED_BITS:
        raise RunError(f"packed codes need bits 1, 2 or 4, got {bits!r}")
    shape = tuple(int(d) for d in shape)
    n = int(np.prod(shape, dtype=np.int64))
    p = np.asarray(packed).reshape(-1)
    if p.dtype != np.uint8 or p.size != -(-n * bits // 8):
        raise RunError(f"packed codes of {p.size} {p.dtype} bytes do not fit shape {shape} at {bits} bits")
    fields = unpack_fields(p, bits, n)
    if bits == 1:
        return np.where(fields > 0, 1, -1).astype(np.int8).reshape(shape)
    fields = fields.astype(np.int16)
    codes = np.where(fields >= 2 ** (bits - 1), fields - 2**bits, fields)
    if n and not full and codes.min() < -(2 ** (bits - 1) - 1):
        raise RunError(f"packed {bits}-bit codes hold {int(codes.min())}, outside the narrow range: the file is damaged")
    return codes.astype(np.int8).reshape(shape)


def pack_indices(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned ``bits``-bit codes (cluster indices) packed into bytes (module layout):
    ``ceil(n * bits / 8)`` uint8.

    Raises:
        ValueError: bits outside 1..8, or a code outside ``[0, 2^bits)``.

    >>> pack_indices(np.array([1, 7, 0, 5], np.uint8), 3).tolist()
    [57, 10]
    """
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"packing needs bits in 1..8, got {bits!r}")
    c = np.asarray(codes).reshape(-1)
    if c.size and (c.min() < 0 or c.max() >= 2**bits):
        raise ValueError(f"codes outside [0, {2 ** bits - 1}] for {bits} bits")
    return pack_fields(c, bits)


def unpack_indices(packed: np.ndarray, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_indices`: uint8 codes of ``shape``.

    Raises:
        RunError: bits outside 1..8, or a byte count that does not fit ``shape`` (a damaged
            file).

    >>> unpack_indices(np.array([57, 10], np.uint8), 3, (4,)).tolist()
    [1, 7, 0, 5]
    """
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise RunError(f"packed cluster codes need bits in 1..8, got {bits!r}")
    shape = tuple(int(d) for d in shape)
    n = int(np.prod(shape, dtype=np.int64))
    p = np.asarray(packed).reshape(-1)
    if p.dtype != np.uint8 or p.size != -(-n * bits // 8):
        raise RunError(f"packed cluster codes of {p.size} {p.dtype} bytes do not fit shape {shape} at {bits} bits")
    return unpack_fields(p, bits, n).reshape(shape)
