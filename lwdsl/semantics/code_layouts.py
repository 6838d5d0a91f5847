"""How a quantized layer's packed codes are laid out in the state: all of them, the bitmap of the
non-zero ones and those codes ("sparse packing"), or the codes an N:M keep mask keeps and each
group's positions ("N:M packing", :mod:`.nm_layout`); the rule that chooses, and the checks that
read a layout back. :mod:`lwdsl.semantics.state` (whose docstring gives the rules) names the
tensors of a layer and turns a :class:`LayoutError` into its ``DamagedTensor``.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..errors import RunError
from .nm_layout import find_nm, nm_counts, nm_join, nm_split, pattern_bits
from .packing import pack_fields, unpack_fields

__all__ = ["CODES", "NONZERO", "NM", "POSITIONS", "LayoutError", "sparse_pays", "nm_bytes", "pack_layout", "read_layout", "read_nm"]

CODES = ".codes"
NONZERO = ".nonzero"  # sparse packing: the bitmap of the non-zero codes
NM, POSITIONS = ".nm", ".positions"  # N:M packing: [N, M] (the layout's flag) and each group's packed rank


class LayoutError(ValueError):
    """A part of a layer's packed codes that does not hold what the layout says (``key``: the
    tensor, ``what``: what is wrong)."""

    def __init__(self, key: str, what: str) -> None:
        super().__init__(f"tensor '{key}' {what}")
        self.key, self.what = key, what


def sparse_pays(n: int, kept: int, bits: int) -> bool:
    """Whether ``n`` packed ``bits``-bit codes, ``kept`` of them non-zero, are stored sparsely: the
    bitmap and the non-zero codes take at most 3/4 of the bytes of all codes packed and save at
    least 256 bytes (what the extra array costs in the file; :mod:`lwdsl.semantics.state`).

    >>> sparse_pays(235_200, 11_760, 3), sparse_pays(235_200, 117_600, 2), sparse_pays(1_000, 100, 2)
    (True, False, False)
    """
    dense, sparse = -(-n * bits // 8), -(-n // 8) + -(-kept * bits // 8)
    return _pays(dense, sparse)


def _pays(dense: int, sparse: int) -> bool:
    """A sparse layout of ``sparse`` bytes replaces all codes packed (``dense`` bytes): at most 3/4
    of them and at least 256 bytes fewer (:mod:`lwdsl.semantics.state`)."""
    return 4 * sparse <= 3 * dense and dense - sparse >= 256


def nm_bytes(shape: tuple[int, ...], bits: int, n: int, m: int) -> tuple[int, int]:
    """(kept codes' bytes, positions' bytes) of a layer of ``shape`` in the N:M layout
    (:mod:`lwdsl.semantics.state`, "N:M packing"): what it stores, computed from the layout alone.

    >>> nm_bytes((128, 512), 4, 2, 4)  # 2:4 int4: 4 bits a weight at half of them, 3 bits a group of 4
    (16384, 6144)
    """
    kept, ranks = nm_counts(shape[0], math.prod(shape[1:]), n, m)
    return -(-kept * bits // 8), -(-ranks * pattern_bits(n, m) // 8)


def pack_layout(base: str, codes: np.ndarray, bits: int, pack, keep: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """``<base>.codes`` packed by ``pack``: all of them or, where fewer bytes, the non-zero ones
    and ``<base>.nonzero`` (:mod:`lwdsl.semantics.state`, "Sparse packing") or, for an N:M keep mask
    ``keep``, the kept ones and ``<base>.positions`` (:mod:`lwdsl.semantics.state`, "N:M packing").

    >>> from lwdsl.semantics.packing import pack_codes
    >>> sparse = pack_layout("w", np.eye(64, dtype=np.int8), 4, pack_codes)
    >>> sorted((k, v.size) for k, v in sparse.items())
    [('w.codes', 32), ('w.nonzero', 512)]
    """
    codes = np.asarray(codes)
    flat = codes.reshape(-1)
    nonzero = flat != 0
    count = int(np.count_nonzero(nonzero))
    bitmap = -(-flat.size // 8) + -(-count * bits // 8) if sparse_pays(flat.size, count, bits) else None
    nm = _nm_layout(codes, bits, keep, bitmap)
    if nm is not None:
        n, m, kept, ranks = nm
        return {base + CODES: pack(kept, bits), base + NM: np.asarray([n, m], dtype=np.int32),
                base + POSITIONS: pack_fields(ranks, pattern_bits(n, m))}
    if bitmap is not None:
        return {base + CODES: pack(flat[nonzero], bits), base + NONZERO: np.packbits(nonzero)}
    return {base + CODES: pack(flat, bits)}


def _nm_layout(codes: np.ndarray, bits: int, keep: Optional[np.ndarray], bitmap: Optional[int]) -> Optional[tuple[int, int, np.ndarray, np.ndarray]]:
    """(N, M, the kept codes, each group's rank) when ``keep`` is an N:M mask of ``codes`` whose
    layout pays against all codes packed (:func:`_pays`) and takes no more bytes than the bitmap
    layout (``bitmap`` bytes; None where that does not pay); the smallest such N:M. None
    otherwise, or when a pruned position holds a non-zero code (binary codes have no 0)."""
    if keep is None or codes.ndim < 2:
        return None
    if np.shape(keep) != codes.shape:
        raise ValueError(f"a keep mask of shape {list(np.shape(keep))} for codes of shape {list(codes.shape)}")
    dense = -(-codes.size * bits // 8)
    sizes = sorted((sum(nm_bytes(codes.shape, bits, n, m)), m, n) for n, m in find_nm(keep))
    if not sizes or not _pays(dense, sizes[0][0]) or (bitmap is not None and sizes[0][0] > bitmap):
        return None
    _, m, n = sizes[0]
    split = nm_split(codes, keep, n, m)
    return None if split is None else (n, m, *split)


def read_layout(state: dict[str, np.ndarray], base: str, shape: tuple[int, ...], bits: int, unpack) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(the codes of ``base`` in ``shape``, the keep mask of an N:M layer or None) from all codes
    packed, from the bitmap of the non-zero codes and those codes, or from the N:M layout
    (:func:`pack_layout`), each part checked against the others: byte counts, the unused bits of
    last bytes (0), no zero among the non-zero codes.

    Raises:
        LayoutError: parts that do not fit ``shape`` or each other.
    """
    if base + NM in state or base + POSITIONS in state:
        return read_nm(state, base, shape, bits, unpack)
    n = math.prod(shape)
    packed = np.asarray(state[base + CODES])
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise LayoutError(base + CODES, f"is {packed.dtype} of shape {list(packed.shape)}, not packed codes (1-d uint8)")
    keep = None
    if base + NONZERO in state:
        bitmap = np.asarray(state[base + NONZERO])
        if bitmap.dtype != np.uint8 or bitmap.ndim != 1 or bitmap.size != -(-n // 8):
            raise LayoutError(
                base + NONZERO, f"has {bitmap.size} {bitmap.dtype} bytes, not the {-(-n // 8)} of shape {shape}: the bitmap does not fit"
            )
        if n % 8 and bitmap[-1] & np.uint8(0xFF >> (n % 8)):
            raise LayoutError(base + NONZERO, f"marks weights past the {n:,} of shape {shape}")
        keep = np.unpackbits(bitmap, count=n).astype(bool)
        count = int(np.count_nonzero(keep))
    else:
        count = n
    if packed.size != -(-count * bits // 8):
        raise LayoutError(base + CODES, f"packed codes of {packed.size} uint8 bytes do not fit shape {(count,) if keep is not None else shape} at {bits} bits")
    if (count * bits) % 8 and packed[-1] >> np.uint8((count * bits) % 8):
        raise LayoutError(base + CODES, "has bits set past its last code (unused bits are 0)")
    try:
        codes = unpack(packed, bits, (count,))
    except RunError as exc:
        raise LayoutError(base + CODES, exc.message) from None
    if keep is None:
        return codes.reshape(shape), None
    if (codes == 0).any():
        raise LayoutError(base + CODES, f"holds a zero where '{base + NONZERO}' marks a non-zero code")
    dense = np.zeros(n, dtype=codes.dtype)
    dense[keep] = codes
    return dense.reshape(shape), None


def read_nm(state: dict[str, np.ndarray], base: str, shape: tuple[int, ...], bits: int, unpack) -> tuple[np.ndarray, np.ndarray]:
    """(the codes, the keep mask) of a layer stored in the N:M layout (:func:`pack_layout`): ``.nm``
    two integers ``0 < N < M <= 16`` of at most 256 patterns, a shape of 2 or more dimensions,
    the kept codes and the positions each of the bytes the layout gives for it
    (:func:`nm_bytes`), unused bits of last bytes 0, every rank a pattern.

    Raises:
        LayoutError: a part missing, or parts that do not fit ``shape`` or each other.
    """
    for part in (NM, POSITIONS):
        if base + part not in state:
            other = NM if part == POSITIONS else POSITIONS
            raise LayoutError(base + other, f"comes without '{base + part}' (an N:M layer stores both)")
    if base + NONZERO in state:
        raise LayoutError(base + NONZERO, f"comes with '{base + NM}' too (a layer is stored one way)")
    nm = np.asarray(state[base + NM])
    n, m = (int(v) for v in nm.reshape(-1)) if nm.dtype.kind in "iu" and nm.shape == (2,) else (0, 0)
    if not 0 < n < m <= 16 or math.comb(m, n) > 256:
        raise LayoutError(base + NM, f"is {nm.dtype} {nm.tolist()!r:.40}, not N, M (0 < N < M <= 16, C(M, N) <= 256)")
    if len(shape) < 2:
        raise LayoutError(base + ".shape", f"is {list(shape)}; an N:M layer has output rows and inputs")
    kept, ranks = nm_counts(shape[0], math.prod(shape[1:]), n, m)
    pbits = pattern_bits(n, m)
    fields = {}
    for part, count, width in ((CODES, kept, bits), (POSITIONS, ranks, pbits)):
        packed = np.asarray(state[base + part])
        if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != -(-count * width // 8):
            raise LayoutError(base + part, f"is {packed.size} {packed.dtype} bytes of shape {list(packed.shape)}, not the "
                                f"{-(-count * width // 8)} uint8 of {count} {width}-bit fields ({n}:{m} of shape {list(shape)})")
        if (count * width) % 8 and packed[-1] >> np.uint8((count * width) % 8):
            raise LayoutError(base + part, "has bits set past its last field (unused bits are 0)")
        fields[part] = packed
    try:
        codes = unpack(fields[CODES], bits, (kept,))
        return nm_join(codes, unpack_fields(fields[POSITIONS], pbits, ranks), shape, n, m)
    except RunError as exc:
        raise LayoutError(base + CODES, exc.message) from None
    except ValueError as exc:
        raise LayoutError(base + POSITIONS, str(exc)) from None
