"""The state format: quantized and cast layers in the canonical state (and so in the .lwz file),
and the checks a state read from a file passes before it loads.

**Layout** (:func:`pack_state`): a quantized layer's weight is stored as its integer codes and
scales instead of float32: ``<layer>.weight.codes``, ``<layer>.weight.scale`` (float32,
``(out,)`` per channel or ``()`` per tensor) and ``<layer>.weight.bits`` (int8, a 0-d array); a
layer quantized in groups of ``G`` inputs (``quantize int4 group=G``, a linear weight
``[out, in]``) has ``scale`` ``(out, ceil(in / G))`` and ``<layer>.weight.group`` (int32, 0-d:
G). A full-grid layer (``grid=full``) adds ``.qmin`` (int8, 0-d: ``-2^(bits-1)``; none: narrow).
At 8 (or 3, 5, 6, 7) bits the codes are int8 of the weight's canonical shape; at 4, 2 and 1
bits they are packed (:func:`lwdsl.semantics.packing.pack_codes`: uint8, 1-d) and
``<layer>.weight.shape`` (int64) gives the canonical shape. A clustered layer (``cluster``)
stores ``<layer>.weight.codes`` (:func:`lwdsl.semantics.packing.pack_indices`, uint8),
``.shape``, ``.bits`` and ``<layer>.weight.codebook`` (float32, ``2^bits`` values) and no scale.
Packed codes with many zeros are stored sparsely (below). A statically quantized layer also
stores its input quantization: ``<layer>.act.scale`` (float32, 0-d) and
``<layer>.act.zero_point`` (int32, 0-d; uint8 range). A cast layer stores its weight's 16-bit
patterns, ``<layer>.weight.fp16`` or ``.bf16`` (uint16). In the framework's own model the
weight holds ``codes * scale`` (float32, exactly representable), so any engine that
re-quantizes it by the integer rule finds the same codes (the fixed point).

**Sparse packing** (:func:`pack_state`): packed codes (1, 2 and 4 bits, and cluster) of a layer
with many zero codes (a pruned layer) are stored as a bitmap of the non-zero codes
(``<layer>.weight.nonzero``: ``numpy.packbits`` of ``codes != 0`` in C order, the first weight
in the highest bit of byte 0) and only the non-zero codes, packed as above, when that takes at
most 3/4 of the bytes of all codes packed and saves at least 256 bytes (:func:`sparse_pays`:
``S = ceil(n / 8) + ceil(k * bits / 8)`` for ``k`` non-zero codes of ``n``, against
``D = ceil(n * bits / 8)``: ``4 S <= 3 D`` and ``D - S >= 256``). Lossless either way; Han et
al. store the positions of the non-zeros (as gaps) for the same reason. The margins keep a
layout that gzip would not make smaller: all codes packed already gzip well at half zeros,
and each extra array costs its header in the file.

**N:M packing** (:func:`pack_state` with ``keep``): packed codes (2 and 4 bits, and cluster)
of a layer whose pruning keep mask is N:M (2:4 from ``prune ... nm=2:4``; any ``0 < N < M <=
16`` with ``C(M, N) <= 256``, groups of ``M`` consecutive inputs of each output row as
:func:`lwdsl.semantics.masks.nm_keep_mask` makes them) are stored as the codes the mask keeps
(``<layer>.weight.codes``, packed as above, zeros included: a kept weight may have code 0) and
``<layer>.weight.positions`` (each group's pattern as its rank among the ``C(M, N)``, packed
in ``ceil(log2 C(M, N))`` bits by :func:`lwdsl.semantics.packing.pack_fields`: 3 bits a group
of 4 at 2:4) with ``<layer>.weight.nm`` (int32 ``[N, M]``, the flag of the layout), when that
pays as the bitmap does and takes no more bytes than the bitmap layout (:mod:`.nm_layout` has
the layout and why a rank). The mask is decided from the keep mask, not from the codes, and
comes back from the file (:func:`unpack_keep`). A 2:4 int4 layer takes 2 + 0.75 bits a
weight against 4 (with float32 group-32 scales, 1 bit a weight more: 3.75 against 5, 25%
fewer). Files without ``.nm`` load as before; readers older than this layout refuse a file
with it (an unexpected tensor), never misread it.

**Loading** (:func:`unpack_state`, :func:`check_state`): every packed entry is checked against
what the state declares for it before it is used, so a damaged state never loads as another
model; the first bad tensor raises :class:`DamagedTensor`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import UsageError
from .activations import ActQuant
from .casts import HALF_FORMS, half_bits, half_values
from .cluster import CLUSTER_BITS
from .codes import WeightQuant
from .code_layouts import CODES, NM, NONZERO, POSITIONS, LayoutError, nm_bytes, read_layout, sparse_pays
from .code_layouts import pack_layout as _packed
from .packing import PACKED_BITS, code_range, pack_codes, pack_indices, unpack_codes, unpack_indices

__all__ = [
    "CODES", "SCALE", "BITS", "SHAPE", "CODEBOOK", "GROUP", "QMIN", "NONZERO", "ACT_SCALE", "ACT_ZERO_POINT",
    "pack_state", "sparse_pays", "unpack_state", "check_state", "DamagedTensor", "unpack_casts", "unpack_act",
    "NM", "POSITIONS", "nm_bytes", "unpack_keep",
]

SCALE, BITS, SHAPE, CODEBOOK, GROUP, QMIN = ".scale", ".bits", ".shape", ".codebook", ".group", ".qmin"
ACT_SCALE, ACT_ZERO_POINT = ".act.scale", ".act.zero_point"


def pack_state(
    state: dict[str, np.ndarray],
    quants: dict[str, WeightQuant],
    acts: Optional[dict[str, ActQuant]] = None,
    casts: Optional[dict[str, str]] = None,
    keep: Optional[dict[str, np.ndarray]] = None,
) -> dict[str, np.ndarray]:
    """The canonical state with each quantized layer's ``.weight`` replaced by its codes (packed
    at 1, 2 and 4 bits), scales and bits (``quants``: layer name -> WeightQuant), the input
    scale and zero point of each layer in ``acts``, and each cast layer's weight (``casts``:
    layer -> fp16/bf16) as its 16-bit patterns ``<layer>.weight.fp16`` / ``.bf16`` (uint16).
    ``keep`` (layer -> its pruning keep mask, canonical layout): a packed layer whose mask is
    N:M is stored in the N:M layout where that is smallest (module docstring, "N:M packing").

    >>> from lwdsl.semantics.codes import quantize_as
    >>> st = pack_state({"fc.weight": np.zeros((2, 3), np.float32)}, {"fc": quantize_as(np.ones((2, 3)), "int4")})
    >>> sorted(st), st["fc.weight.codes"].tolist()
    (['fc.weight.bits', 'fc.weight.codes', 'fc.weight.scale', 'fc.weight.shape'], [119, 119, 119])
    """
    out = dict(state)
    keep = keep or {}
    for layer, q in quants.items():
        base = f"{layer}.weight"
        out.pop(base, None)
        if q.codebook is not None:  # cluster: packed indices, the codebook instead of scales
            out.update(_packed(base, q.codes, q.bits, pack_indices, keep.get(layer)))
            out[base + SHAPE] = np.asarray(np.shape(q.codes), dtype=np.int64)
            out[base + CODEBOOK] = np.asarray(q.codebook, dtype=np.float32)
            out[base + BITS] = np.asarray(q.bits, dtype=np.int8)
            continue
        if q.bits in PACKED_BITS:
            out.update(_packed(base, q.codes, q.bits, lambda c, b: pack_codes(c, b, q.grid == "full"), keep.get(layer)))
            out[base + SHAPE] = np.asarray(np.shape(q.codes), dtype=np.int64)
        else:
            out[base + CODES] = np.asarray(q.codes, dtype=np.int8)
        out[base + SCALE] = np.asarray(q.scale, dtype=np.float32)
        out[base + BITS] = np.asarray(q.bits, dtype=np.int8)
        if q.group is not None:
            out[base + GROUP] = np.asarray(q.group, dtype=np.int32)
        out.update({base + QMIN: np.asarray(q.bounds()[0], dtype=np.int8)} if q.grid == "full" else {})
    for layer, dtype in (casts or {}).items():
        base = f"{layer}.weight"
        if base in out:
            out[f"{base}.{dtype}"] = half_bits(out.pop(base), dtype)
    for layer, a in (acts or {}).items():
        out[layer + ACT_SCALE] = np.asarray(a.scale, dtype=np.float32)
        out[layer + ACT_ZERO_POINT] = np.asarray(a.zero_point, dtype=np.int32)
    return out


class DamagedTensor(UsageError):
    """A tensor of a packed state that does not hold what the state declares for it (its
    dtype, shape, range or finiteness: :func:`check_state`), as in a damaged file. A bad-input
    error (exit code 2); :func:`lwdsl.backend.weights.load_weights` adds the file's name."""

    def __init__(self, tensor: str, what: str) -> None:
        super().__init__(f"tensor '{tensor}' {what}")
        self.tensor = tensor


def _size1(state: dict[str, np.ndarray], key: str, kind: str, what: str) -> np.ndarray:
    """The one value of ``state[key]`` (0-d, or shape (1,) as some writers store it), of dtype
    kind ``kind`` ("iu" integers, "f" float32)."""
    v = np.asarray(state[key])
    ok = v.dtype == np.float32 if kind == "f" else v.dtype.kind in kind
    if not ok or v.shape not in ((), (1,)):
        raise DamagedTensor(key, f"is {v.dtype} of shape {list(v.shape)}, not one {what}")
    return v.reshape(-1)[0]


def _shape_of(state: dict[str, np.ndarray], base: str) -> tuple[int, ...]:
    """The canonical shape ``<base>.shape`` declares (1-d integers, each in 0..2^40)."""
    if base + SHAPE not in state:
        raise DamagedTensor(base + CODES, f"holds packed codes but the state has no '{base + SHAPE}'")
    s = np.asarray(state[base + SHAPE])
    if s.dtype.kind not in "iu" or s.ndim != 1 or s.size > 8 or (s.size and (s.min() < 0 or s.max() > 2**40)):
        raise DamagedTensor(base + SHAPE, f"is not a shape (1-d integers 0..2^40; found {s.dtype} {s.tolist()!r:.80})")
    return tuple(int(d) for d in s)


def _unpacked(state: dict[str, np.ndarray], base: str, bits: int, unpack) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(the codes of ``base`` in its canonical shape, the keep mask of an N:M layer or None), every
    part checked (:func:`lwdsl.semantics.code_layouts.read_layout`).

    Raises:
        DamagedTensor: no ``<base>.shape``, or parts that do not fit it or each other.
    """
    try:
        return read_layout(state, base, _shape_of(state, base), bits, unpack)
    except LayoutError as exc:
        raise DamagedTensor(exc.key, exc.what) from None


def _scale_of(state: dict[str, np.ndarray], base: str, codes: np.ndarray, bits: int) -> tuple[np.ndarray, Optional[int], Optional[int]]:
    """(the scale, its axis, the group) of a layer of integer codes: float32, ``()`` per tensor
    (shape ``(1,)`` read as such), ``(out,)`` per channel or, with ``<base>.group`` (one
    integer G >= 1, 2-d codes of 2..8 bits), ``(out, ceil(in / G))``; finite and > 0 (binary:
    >= 0, a channel of scale 0 having codes +1 only)."""
    key, group = base + SCALE, None
    if key not in state:
        raise DamagedTensor(base + CODES, f"holds {bits}-bit codes but the state has no '{key}'")
    scale = np.asarray(state[key])
    out = codes.shape[0] if codes.ndim else None
    if base + GROUP in state:
        group = int(_size1(state, base + GROUP, "iu", "integer"))
        if group < 1 or codes.ndim != 2 or bits == 1:
            raise DamagedTensor(base + GROUP, f"is {group} for {bits}-bit codes of shape {list(codes.shape)}; a group is "
                                ">= 1 inputs of a 2-d [out, in] weight of 2..8-bit codes")
    elif scale.shape == (1,) and out != 1:
        scale = scale.reshape(())  # a per-tensor (0-d) scale that a writer stored as shape (1,)
    fits = [(out, -(-codes.shape[1] // group))] if group else [(), (out,)]
    if scale.dtype != np.float32 or scale.shape not in fits:
        want = f"{fits[0]} (groups of {group})" if group else "()" + (f" or ({out},)" if out is not None else "")
        raise DamagedTensor(key, f"is {scale.dtype} of shape {list(scale.shape)}; a float32 scale of shape {want} fits '{base + CODES}' {list(codes.shape)}")
    flat = scale.reshape(-1)
    bad = ~np.isfinite(flat) | (flat < 0) | ((flat == 0) if bits != 1 else False)
    if bad.any():
        i = int(np.argmax(bad))
        where = f" ({'group' if group else 'channel'} {i} of {flat.size})" if scale.ndim else ""
        need = ">= 0" if bits == 1 else "> 0"
        raise DamagedTensor(key, f"holds {float(flat[i])!r}{where}; scales are finite and {need}")
    if bits == 1 and (flat == 0).any():
        rows = codes.reshape(flat.size, -1) if scale.ndim else codes.reshape(1, -1)
        if (rows[flat == 0] != 1).any():
            raise DamagedTensor(base + CODES, "holds -1 in a binary channel of scale 0 (its codes are +1)")
    return scale, (0 if scale.ndim else None), group


def _layer(state: dict[str, np.ndarray], base: str) -> WeightQuant:
    """The WeightQuant of ``<base>.codes`` and its parts, every one checked (:func:`check_state`)."""
    if base in state:
        raise DamagedTensor(base + CODES, f"comes with a float '{base}' too (a layer is stored one way)")
    if base + BITS not in state:
        raise DamagedTensor(base + CODES, f"holds codes but the state has no '{base + BITS}'")
    bits = int(_size1(state, base + BITS, "iu", "integer"))
    if base + CODEBOOK in state:  # cluster: packed unsigned indices and the codebook
        if bits not in CLUSTER_BITS:
            raise DamagedTensor(base + BITS, f"is {bits}; a clustered layer has 2..8 bits")
        if (part := next((p for p in (SCALE, GROUP, QMIN) if base + p in state), None)) is not None:
            raise DamagedTensor(base + part, f"belongs to a clustered layer, which has a codebook and no {part[1:]}")
        book = np.asarray(state[base + CODEBOOK])
        if book.dtype != np.float32 or book.shape != (2**bits,):
            raise DamagedTensor(base + CODEBOOK, f"is {book.dtype} of shape {list(book.shape)}, not the float32 ({2**bits},) of {bits} bits: the file is damaged")
        if not np.isfinite(book).all():
            raise DamagedTensor(base + CODEBOOK, f"holds {float(book[~np.isfinite(book)][0])!r}; a codebook is finite")
        if book[:1].view(np.uint32)[0] != 0:
            raise DamagedTensor(base + CODEBOOK, f"starts with {float(book[0])!r}; code 0 stands for +0.0")
        codes = _unpacked(state, base, bits, unpack_indices)[0]
        return WeightQuant(codes, np.float32(1).reshape(()), bits, None, book.copy())
    if not 1 <= bits <= 8:
        raise DamagedTensor(base + BITS, f"is {bits}; quantized codes have 1..8 bits")
    if (full := base + QMIN in state) and (bits == 1 or int(_size1(state, base + QMIN, "iu", "integer")) != -(2 ** (bits - 1))):
        raise DamagedTensor(base + QMIN, f"is {state[base + QMIN]} for {bits}-bit codes; a full-grid layer has -2^(bits-1), 2..8 bits")
    if bits in PACKED_BITS:
        codes = _unpacked(state, base, bits, lambda p, b, shape: unpack_codes(p, b, shape, full))[0]
    else:
        codes = np.asarray(state[base + CODES])
        if codes.dtype != np.int8:
            raise DamagedTensor(base + CODES, f"holds {codes.dtype} values, not the int8 codes of {bits} bits")
        for part in (NONZERO, NM, POSITIONS):
            if base + part in state:
                raise DamagedTensor(base + part, f"belongs to {bits}-bit codes, which are never stored sparsely")
        if base + SHAPE in state and _shape_of(state, base) != codes.shape:
            raise DamagedTensor(base + SHAPE, f"says {list(_shape_of(state, base))} but '{base + CODES}' is {list(codes.shape)}")
        lo, hi = code_range(bits, full)
        if codes.size and (codes.min() < lo or codes.max() > hi):
            raise DamagedTensor(base + CODES, f"holds {int(codes.min() if codes.min() < lo else codes.max())}, outside the {bits}-bit range [{lo}, {hi}]")
    scale, axis, group = _scale_of(state, base, codes, bits)
    return WeightQuant(codes, scale, bits, axis, group=group, grid="full" if full else "narrow")


def _act(state: dict[str, np.ndarray], layer: str) -> ActQuant:
    """A static layer's input quantization, checked: a finite float32 scale > 0 and an integer
    zero point in the uint8 range."""
    for key in (layer + ACT_SCALE, layer + ACT_ZERO_POINT):
        if key not in state:
            other = layer + (ACT_ZERO_POINT if key.endswith(ACT_SCALE) else ACT_SCALE)
            raise DamagedTensor(other, f"comes without '{key}'")
    scale = _size1(state, layer + ACT_SCALE, "f", "float32 scale")
    if not (np.isfinite(scale) and scale > 0):
        raise DamagedTensor(layer + ACT_SCALE, f"holds {float(scale)!r}; scales are finite and > 0")
    zp = int(_size1(state, layer + ACT_ZERO_POINT, "iu", "integer"))
    if not 0 <= zp <= 255:
        raise DamagedTensor(layer + ACT_ZERO_POINT, f"holds {zp}, outside the uint8 range [0, 255]")
    return ActQuant(float(np.float32(scale)), zp)


def _half(state: dict[str, np.ndarray], key: str, dtype: str) -> np.ndarray:
    """The float32 weight of a cast layer's 16-bit patterns, checked (uint16, no NaN or inf)."""
    bits = np.asarray(state[key])
    base = key[: -len(dtype) - 1]
    if base in state or base + CODES in state:
        raise DamagedTensor(key, f"comes with '{base}' or '{base + CODES}' too (a layer is stored one way)")
    if bits.dtype != np.uint16:
        raise DamagedTensor(key, f"holds {bits.dtype} values, not the uint16 patterns of {dtype}")
    if ((bits & np.uint16(0x7FFF)) >= (0x7C00 if dtype == "fp16" else 0x7F80)).any():
        raise DamagedTensor(key, f"holds a NaN or infinite {dtype} value")
    return half_values(bits, dtype)


_PARTS = (SCALE, BITS, SHAPE, CODEBOOK, NONZERO, GROUP, NM, POSITIONS, QMIN)


def unpack_state(state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, WeightQuant]]:
    """Inverse of :func:`pack_state`: (float canonical state with ``codes * scale`` weights,
    layer name -> WeightQuant). Activation entries are left out (:func:`unpack_act`).

    Every packed entry is checked against what the state declares for it before it is used
    (:func:`check_state` lists the rules), so a damaged state never loads as another model.

    Raises:
        DamagedTensor: (a UsageError) naming the first tensor that is not what it should be.
    """
    bases = {key[: -len(CODES)] for key in state if key.endswith(".weight" + CODES)}
    acts = {key[: -len(suffix)] for key in state for suffix in (ACT_SCALE, ACT_ZERO_POINT) if key.endswith(suffix)}
    for key in state:
        part = next((s for s in _PARTS if key.endswith(".weight" + s)), None)
        if part is not None and key[: -len(part)] not in bases:
            raise DamagedTensor(key, f"belongs to no quantized layer (the state has no '{key[: -len(part)] + CODES}')")
    for layer in sorted(acts):
        _act(state, layer)
    skip = {b + suffix for b in bases for suffix in _PARTS}
    skip |= {layer + suffix for layer in acts for suffix in (ACT_SCALE, ACT_ZERO_POINT)}
    out: dict[str, np.ndarray] = {}
    quants: dict[str, WeightQuant] = {}
    for key, value in state.items():
        if key in skip:
            continue
        half = next((d for d in HALF_FORMS if key.endswith(f".weight.{d}")), None)
        if half is not None:
            out[key[: -len(half) - 1]] = _half(state, key, half)
        elif key[: -len(CODES)] in bases and key.endswith(CODES):
            base = key[: -len(CODES)]
            q = _layer(state, base)
            with np.errstate(over="ignore", invalid="ignore"):
                w = q.dequantize()
            if not np.isfinite(w).all():
                raise DamagedTensor(base + SCALE, f"times the codes overflows float32 (scale {float(np.max(q.scale))!r})")
            quants[base[: -len(".weight")]] = q
            out[base] = w
        else:
            out[key] = value
    return out, quants


def check_state(state: dict[str, np.ndarray]) -> None:
    """Check a canonical state read from a file against what it declares, before any use.

    Every float tensor is finite. Each quantized layer (:func:`pack_state`) has its ``.bits``
    (one integer, 1..8; 2..8 with a codebook) and: int8 codes of the form's range (3..8 bits; with ``.qmin`` from -2^(bits-1)),
    or packed uint8 codes whose byte count fits ``.shape`` (1-d integers) at ``bits`` (only
    the non-zero codes when a ``.nonzero`` bitmap of ``ceil(n / 8)`` bytes is there, none of
    them zero), unused bits of last bytes 0, each field a code of the form; a float32 scale,
    ``()``, ``(out,)`` or, with a ``.group`` (one integer >= 1, a 2-d weight),
    ``(out, ceil(in / group))``, finite and > 0 (binary: >= 0, with codes +1 where 0) whose product
    with the codes is finite; or a clustered layer's float32 codebook of ``2^bits`` finite
    values starting with +0.0 (and no scale). A static layer's input scale is one finite
    float32 > 0 and its zero point one integer in [0, 255]; a cast layer's weight is uint16
    patterns of no NaN or inf. No part without its layer's codes, no layer stored two ways.

    Raises:
        DamagedTensor: (a UsageError, exit code 2) naming the first bad tensor.
    """
    unpack_state(state)
    for key, value in state.items():
        v = np.asarray(value)
        if v.dtype.kind in "fc" and not np.isfinite(v).all():
            raise DamagedTensor(key, f"holds {float(v.reshape(-1)[~np.isfinite(v.reshape(-1))][0].real)!r}; weights are finite")


def unpack_casts(state: dict[str, np.ndarray]) -> dict[str, str]:
    """The cast layers stored by :func:`pack_state`: layer -> fp16/bf16."""
    return {key[: -len(f".weight.{d}")]: d for key in state for d in HALF_FORMS if key.endswith(f".weight.{d}")}


def unpack_keep(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The keep masks a state holds: layer -> bool mask (canonical layout) of each layer stored
    in the N:M layout (:func:`pack_state` with ``keep``), each checked (:func:`check_state`).

    >>> from lwdsl.semantics.codes import quantize_as
    >>> w = np.tile(np.float32([0.5, 0, 0, -0.25]), (64, 64))
    >>> st = pack_state({}, {"fc": quantize_as(w, "int4")}, keep={"fc": w != 0})
    >>> sorted(st), unpack_keep(st)["fc"][0, :8].astype(int).tolist()
    (['fc.weight.bits', 'fc.weight.codes', 'fc.weight.nm', 'fc.weight.positions', 'fc.weight.scale', 'fc.weight.shape'], [1, 0, 0, 1, 1, 0, 0, 1])
    """
    out = {}
    for key in sorted(state):
        if key.endswith(".weight" + NM):
            base = key[: -len(NM)]
            bits = int(_size1(state, base + BITS, "iu", "integer")) if base + BITS in state else 0
            unpack = unpack_indices if base + CODEBOOK in state else unpack_codes
            out[base[: -len(".weight")]] = _unpacked(state, base, bits, unpack)[1]
    return out


def unpack_act(state: dict[str, np.ndarray]) -> dict[str, ActQuant]:
    """The activation quantization stored by :func:`pack_state` (uint8 range): layer -> ActQuant,
    each checked (:func:`check_state`).

    >>> from lwdsl.semantics.activations import act_qparams
    >>> unpack_act(pack_state({}, {}, {"fc": act_qparams(-1.0, 3.0)}))
    {'fc': ActQuant(scale=0.01568627543747425, zero_point=64, qmin=0, qmax=255)}
    """
    acts = {key[: -len(ACT_SCALE)] for key in state if key.endswith(ACT_SCALE)}
    return {layer: _act(state, layer) for layer in sorted(acts)}
