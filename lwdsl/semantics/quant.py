"""Quantization numbers: the one definition of scales, zero points and integer codes.

Backends only move tensors: they convert weights to the canonical (PyTorch) layout, ask this
module, and store what it returns. The rules (also in docs/semantics.md):

**Weights** (:func:`quantize_weight`): symmetric, zero point 0, narrow range ``[-qmax, qmax]``
with ``qmax = 2^(b-1) - 1`` (int8: 127, int4: 7, int2: 1). Canonical layout, output channel
on axis 0 (conv ``[out, in, kh, kw]``, linear ``[out, in]``). Everything is float32:

- ``m`` = max ``|w|`` per output channel (``per_channel``) or over the tensor (``per_tensor``);
- ``scale = m / qmax`` (float32 division); a channel with ``scale < 2^-126`` (the smallest
  normal float32: ``m == 0``, or ``m < qmax * 2^-126``, about 1.5e-36 for int8) is zero: its
  scale is 1 and its codes are 0 (so scales are never subnormal and the fixed point holds);
- ``codes = clip(rint(w / scale), -qmax, qmax)`` (float32 division, round half to even).

So zeros stay code 0, the largest ``|w|`` of a (non-zero) channel gets ``±qmax``,
``|w - codes*scale| <= scale * (1/2 + 2^-16)`` and ``dequantize()`` is one float32 multiply,
the same number in every framework. NaN, inf, and weights so close to the float32 maximum that
``qmax * scale`` overflows raise RunError. Fixed point: ``quantize_weight(wq.dequantize())``
gives the same codes and the bit-identical scale. ``m' = fl(qmax * scale)`` may differ from
``m`` by an ulp, yet ``fl(m' / qmax) == scale`` for every float32 ``m`` and ``qmax`` in {1, 3,
.., 127} (checked exhaustively over whole binades); the codes come back since ``|c| <= 127``.

**Activations** (:func:`act_qparams`, static mode): affine; the range is widened to contain 0,
``scale = (hi - lo) / (qmax - qmin)`` in float32 (1 when ``hi == lo``), ``zero_point =
clip(qmin - rint(lo / scale), qmin, qmax)``; uint8 ``[0, 255]`` by default, int8 ``[-128, 127]``
with ``signed``. :class:`RangeObserver` finds ``lo, hi`` from calibration batches.

**Low-bit forms** (:func:`quantize_as`, by the recipe's dtype): ``int8``, ``int4``, ``int2``
are :func:`quantize_weight` at 8, 4, 2 bits (codes ``[-127, 127]``, ``[-7, 7]``, ``[-1, 1]``).
``ternary`` (:func:`quantize_ternary`, TWN, Li et al. 2016) and ``binary``
(:func:`quantize_binary`, BWN, Rastegari et al. 2016) follow their papers per output channel
(or per tensor), with the means taken in float64 and rounded once to float32:

- ternary: ``delta = f32(0.7 * mean|w|)``; kept = ``|w| > delta`` (strictly: ``|w| == delta``
  gets code 0); ``scale = f32(mean of |w| over the kept)``; codes ``sign(w)`` where kept, else
  0 (so zeros, pruned ones included, stay 0, and -0.0 is code 0). A channel whose scale would
  be below ``2^-126`` (all zeros, or only values that small) is zero: scale 1, codes 0, as for
  the integer forms. Stored in 2 bits (``bits`` 2, the same codes as int2).
- binary: ``scale = f32(mean|w|)``; codes +1 where ``w >= 0`` (+0.0 and -0.0 included), else
  -1. Binary has no code 0: single pruned weights become ``±scale``, so a pruned layer loses
  its mask; a channel whose scale would be below ``2^-126`` (a whole pruned filter) gets scale
  0 and codes +1, so it stays exactly zero. Stored in 1 bit (``bits`` 1).

``dequantize()`` is ``codes * scale`` for every form but ``cluster``.

**Weight sharing** (``cluster``, :mod:`lwdsl.semantics.cluster`, Han et al. 2016): one float32
codebook of ``2^bits`` values per layer (``codebook[0] = 0.0``, reserved for the zeros) and
unsigned codes into it; ``dequantize()`` is ``codebook[codes]``; ``scale`` is ``1`` (unused),
``axis`` None. Packed by :func:`lwdsl.semantics.cluster.pack_indices` at every ``bits``.

**Casts** (:func:`half_bits`, :func:`cast_weight`): ``fp16`` is IEEE binary16 and ``bf16``
bfloat16 (the high 16 bits of a float32), both rounded to nearest, ties to even (fp16 keeps
subnormals; a float32 subnormal rounds the same way in bf16). The weight a cast layer computes
with is that value in float32 (exact). A weight whose rounding overflows (``|w| > 65504`` in
fp16, within half a bf16 ulp of the float32 maximum in bf16), NaN or inf raises RunError.

**Packing** (:func:`pack_codes`, :func:`unpack_codes`): codes of 1, 2 or 4 bits are stored in
bytes, in C order, element ``i`` in bits ``b*(i % (8/b))`` and up of byte ``i // (8/b)``
(little-endian: the first element in the lowest bits; two int4 per byte, four int2 or ternary,
eight binary), each field the code's two's complement in ``b`` bits (``-1`` is ``0b11`` in 2
bits, ``0xF`` in 4), binary +1 as bit 1 and -1 as bit 0; unused high bits of the last byte are
0.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import RunError, UsageError
from .cluster import CLUSTER_BITS, cluster_weight, nearest_codes, pack_indices, unpack_indices

__all__ = [
    "WeightQuant",
    "int8_only",
    "quantize_weight",
    "ActQuant",
    "act_qparams",
    "fake_quantize",
    "RangeObserver",
    "agreement",
    "codes_with_scale",
    "snap",
    "pack_state",
    "unpack_state",
    "check_state",
    "DamagedTensor",
    "unpack_act",
    "unpack_casts",
    "quantize_ternary",
    "quantize_binary",
    "quantize_as",
    "pack_codes",
    "unpack_codes",
    "FORM_BITS",
    "HALF_FORMS",
    "half_bits",
    "half_values",
    "cast_weight",
    "requantize",
    "CODEBOOK",
    "NONZERO",
    "sparse_pays",
]

_TINY = np.float32(2.0**-126)  # smallest normal float32: no scale is below it


@dataclass(frozen=True)
class WeightQuant:
    """Quantized weights: ``codes`` (int8, the weight's shape), ``scale`` (float32, shape
    ``(out,)`` per channel with ``axis=0``, ``()`` per tensor with ``axis=None``), ``bits``.
    A clustered layer (``cluster``) has a ``codebook`` (float32, ``2^bits`` values) and uint8
    codes indexing it; its scale is 1 and unused."""

    codes: np.ndarray
    scale: np.ndarray
    bits: int
    axis: Optional[int]
    codebook: Optional[np.ndarray] = None

    def dequantize(self) -> np.ndarray:
        """``codes * scale`` as one float32 multiply (scale broadcast along axis 0);
        ``codebook[codes]`` for a clustered layer."""
        if self.codebook is not None:
            return np.asarray(self.codebook, dtype=np.float32)[np.asarray(self.codes, dtype=np.intp)]
        scale = self.scale if self.axis is None else self.scale.reshape((-1,) + (1,) * (self.codes.ndim - 1))
        return self.codes.astype(np.float32) * scale


def quantize_weight(w: np.ndarray, bits: int = 8, granularity: str = "per_channel") -> WeightQuant:
    """Symmetric narrow-range quantization of a weight in the canonical layout (module rules).

    Args:
        w: the weight, channel axis 0 for ``per_channel``; converted to float32.
        bits: 2..8 (codes in ``[-(2^(bits-1)-1), 2^(bits-1)-1]``).
        granularity: ``"per_channel"`` (one scale per slice of axis 0) or ``"per_tensor"``.

    Returns:
        The codes and scales; ``dequantize()`` gives the float weights they stand for.

    Raises:
        RunError: if a weight is NaN or infinite, or ``qmax * scale`` overflows float32 (only
            ``|w|`` within about an ulp of the float32 maximum).
        ValueError: for bits outside 2..8, an unknown granularity, or a 0-d per-channel weight.

    >>> wq = quantize_weight(np.array([[1.984375, -0.5, 0.0078125, 0.0234375], [0, 0, 0, 0]], np.float32))
    >>> wq.codes.tolist(), wq.scale.tolist()
    ([[127, -32, 0, 2], [0, 0, 0, 0]], [0.015625, 1.0])
    """
    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"weight bits must be an integer in 2..8, got {bits!r}")
    if granularity not in ("per_channel", "per_tensor"):
        raise ValueError(f"granularity must be per_channel or per_tensor, got {granularity!r}")
    w = np.asarray(w, dtype=np.float32)
    mag = np.abs(w)
    if not np.isfinite(w).all():
        raise RunError("a weight to quantize is NaN or infinite: the model is broken, nothing to quantize")
    qmax = np.float32(2 ** (bits - 1) - 1)
    if granularity == "per_channel":
        if w.ndim == 0:
            raise ValueError("per_channel quantization needs a weight with an output-channel axis 0")
        m = np.max(mag.reshape(w.shape[0], -1), axis=1, initial=np.float32(0))
        axis, bshape = 0, (-1,) + (1,) * (w.ndim - 1)
    else:
        m = np.max(mag, initial=np.float32(0)).astype(np.float32)
        axis, bshape = None, ()
    zero = (m / qmax) < _TINY  # zero channels: scale 1, codes 0
    scale = np.where(zero, np.float32(1), m / qmax).astype(np.float32)
    with np.errstate(over="ignore"):
        if np.isinf(qmax * scale).any():
            raise RunError(f"a weight to quantize is too large ({float(m.max()):.4g}): qmax * scale overflows float32")
    codes = np.clip(np.rint(w / scale.reshape(bshape)), -qmax, qmax)
    codes = np.where(zero.reshape(bshape), np.float32(0), codes).astype(np.int8)
    return WeightQuant(codes, scale, int(bits), axis)


#: Storage bits of each weight form (the recipe's ``quantize`` dtype).
FORM_BITS = {"int8": 8, "int4": 4, "int2": 2, "ternary": 2, "binary": 1}


def _channel_view(w: np.ndarray, granularity: str) -> tuple[np.ndarray, Optional[int], tuple]:
    """``w`` as float32 rows (one per output channel, or one row per tensor), its axis and the
    scale's broadcast shape; NaN and inf refused."""
    if granularity not in ("per_channel", "per_tensor"):
        raise ValueError(f"granularity must be per_channel or per_tensor, got {granularity!r}")
    w = np.asarray(w, dtype=np.float32)
    if not np.isfinite(w).all():
        raise RunError("a weight to quantize is NaN or infinite: the model is broken, nothing to quantize")
    if granularity == "per_channel":
        if w.ndim == 0:
            raise ValueError("per_channel quantization needs a weight with an output-channel axis 0")
        return w.reshape(w.shape[0], -1), 0, (-1,) + (1,) * (w.ndim - 1)
    return w.reshape(1, -1), None, ()


def _mean64(x: np.ndarray, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Row means in float64 (numpy's pairwise sums; over ``weights``' True entries when given),
    0 for an empty selection."""
    x = x.astype(np.float64)
    if weights is None:
        return x.mean(axis=1) if x.shape[1] else np.zeros(x.shape[0])
    count = weights.sum(axis=1)
    return np.where(weights, x, 0.0).sum(axis=1) / np.maximum(count, 1)


def quantize_ternary(w: np.ndarray, granularity: str = "per_channel") -> WeightQuant:
    """Ternary weights (TWN, Li et al. 2016), per output channel or per tensor (module rules).

    ``delta = f32(0.7 * mean|w|)``; the kept weights are ``|w| > delta``; ``scale = f32(mean of
    the kept |w|)``; codes ``sign(w)`` where kept, else 0. Means in float64, rounded once. A
    channel whose scale would be below ``2^-126`` gets scale 1 and codes 0. ``bits`` is 2.

    Raises:
        RunError: NaN or infinite weights.
        ValueError: an unknown granularity or a 0-d per-channel weight.

    >>> wq = quantize_ternary(np.array([[1.0, -0.5, 0.25, 0.0], [0, 0, 0, 0]], np.float32))
    >>> wq.codes.tolist(), wq.scale.tolist()
    ([[1, -1, 0, 0], [0, 0, 0, 0]], [0.75, 1.0])
    """
    rows, axis, _ = _channel_view(w, granularity)
    mag = np.abs(rows)
    delta = (0.7 * _mean64(mag)).astype(np.float32)
    kept = mag > delta[:, None]
    scale = _mean64(mag, kept).astype(np.float32)
    zero = scale < _TINY
    scale = np.where(zero, np.float32(1), scale).astype(np.float32)
    codes = np.where(kept & ~zero[:, None], np.sign(rows), np.float32(0)).astype(np.int8)
    shape = np.shape(w)
    return WeightQuant(codes.reshape(shape), scale if axis == 0 else scale.reshape(()), 2, axis)


def quantize_binary(w: np.ndarray, granularity: str = "per_channel") -> WeightQuant:
    """Binary weights (BWN, Rastegari et al. 2016), per output channel or per tensor.

    ``scale = f32(mean|w|)`` (float64 mean, rounded once); codes +1 where ``w >= 0`` (both
    zeros included), else -1. A channel whose scale would be below ``2^-126`` (a whole pruned
    filter) gets scale 0 and codes +1: it stays exactly zero. Single zeros cannot stay zero
    (there is no code 0). ``bits`` is 1.

    Raises:
        RunError: NaN or infinite weights.
        ValueError: an unknown granularity or a 0-d per-channel weight.

    >>> wq = quantize_binary(np.array([[1.0, -0.5, 0.25, -0.0], [0, 0, 0, 0]], np.float32))
    >>> wq.codes.tolist(), wq.scale.tolist()
    ([[1, -1, 1, 1], [1, 1, 1, 1]], [0.4375, 0.0])
    """
    rows, axis, _ = _channel_view(w, granularity)
    scale = _mean64(np.abs(rows)).astype(np.float32)
    scale = np.where(scale < _TINY, np.float32(0), scale).astype(np.float32)
    codes = codes_with_scale(rows, scale, 1)
    return WeightQuant(codes.reshape(np.shape(w)), scale if axis == 0 else scale.reshape(()), 1, axis)


def quantize_as(w: np.ndarray, dtype: str, granularity: str = "per_channel", bits: Optional[int] = None) -> WeightQuant:
    """Quantize ``w`` (canonical layout) to the recipe's ``dtype``: ``int8``, ``int4``, ``int2``
    (:func:`quantize_weight`), ``ternary`` (:func:`quantize_ternary`), ``binary``
    (:func:`quantize_binary`) or ``cluster`` (:func:`lwdsl.semantics.cluster.cluster_weight`
    at ``bits``, default 4; one codebook per tensor whatever ``granularity``).

    >>> quantize_as(np.array([[0.5, -1.0]], np.float32), "int4").codes.tolist()
    [[3, -7]]
    """
    if dtype == "cluster":
        b = 4 if bits is None else int(bits)
        codes, book = cluster_weight(w, b)
        return WeightQuant(codes, np.float32(1).reshape(()), b, None, book)
    if dtype == "ternary":
        return quantize_ternary(w, granularity)
    if dtype == "binary":
        return quantize_binary(w, granularity)
    if dtype not in FORM_BITS:
        raise ValueError(f"unknown weight form {dtype!r}; one of {', '.join(FORM_BITS)}")
    return quantize_weight(w, FORM_BITS[dtype], granularity)


def _code_range(bits: int) -> tuple[int, int]:
    return (-1, 1) if bits == 1 else (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes of 1, 2 or 4 bits packed into bytes (module rules: C order, little-endian fields,
    two's complement; binary +1 as 1, -1 as 0): ``ceil(size * bits / 8)`` uint8.

    Raises:
        ValueError: bits not 1, 2 or 4, or a code outside the form's range (binary: not ±1).

    >>> pack_codes(np.array([1, -1, 0, 7, -7], np.int8), 4).tolist()
    [241, 112, 9]
    >>> pack_codes(np.array([1, -1, 1, 1, -1, -1, -1, 1, 1], np.int8), 1).tolist()
    [141, 1]
    """
    if bits not in (1, 2, 4):
        raise ValueError(f"packing needs bits 1, 2 or 4, got {bits!r}")
    c = np.asarray(codes).astype(np.int8, copy=False).reshape(-1)
    lo, hi = _code_range(bits)
    if c.size and (c.min() < lo or c.max() > hi or (bits == 1 and (c == 0).any())):
        raise ValueError(f"codes outside the {bits}-bit range [{lo}, {hi}]" + (" (binary: ±1 only)" if bits == 1 else ""))
    if bits == 1:
        return np.packbits(c > 0, bitorder="little")
    per = 8 // bits
    fields = c.view(np.uint8) & np.uint8((1 << bits) - 1)
    fields = np.concatenate([fields, np.zeros(-fields.size % per, np.uint8)]).reshape(-1, per)
    shifts = (np.arange(per) * bits).astype(np.uint8)
    return np.bitwise_or.reduce(fields << shifts, axis=1).astype(np.uint8)


def unpack_codes(packed: np.ndarray, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_codes`: int8 codes of ``shape``.

    Raises:
        RunError: the byte count does not fit ``shape``, or a field holds no valid code (a
            damaged file).

    >>> unpack_codes(np.array([241, 112, 9], np.uint8), 4, (5,)).tolist()
    [1, -1, 0, 7, -7]
    """
    if bits not in (1, 2, 4):
        raise RunError(f"packed codes need bits 1, 2 or 4, got {bits!r}")
    shape = tuple(int(d) for d in shape)
    n = int(np.prod(shape, dtype=np.int64))
    p = np.asarray(packed).reshape(-1)
    if p.dtype != np.uint8 or p.size != -(-n * bits // 8):
        raise RunError(f"packed codes of {p.size} {p.dtype} bytes do not fit shape {shape} at {bits} bits")
    if bits == 1:
        return np.where(np.unpackbits(p, count=n, bitorder="little") > 0, 1, -1).astype(np.int8).reshape(shape)
    per = 8 // bits
    shifts = (np.arange(per) * bits).astype(np.uint8)
    fields = ((p[:, None] >> shifts) & np.uint8((1 << bits) - 1)).reshape(-1)[:n].astype(np.int16)
    codes = np.where(fields >= 2 ** (bits - 1), fields - 2**bits, fields)
    if n and codes.min() < -(2 ** (bits - 1) - 1):
        raise RunError(f"packed {bits}-bit codes hold {int(codes.min())}, outside the narrow range: the file is damaged")
    return codes.astype(np.int8).reshape(shape)


#: The float casts: dtype -> bits per weight.
HALF_FORMS = {"fp16": 16, "bf16": 16}


def half_bits(w: np.ndarray, dtype: str) -> np.ndarray:
    """The 16-bit patterns (uint16) of ``w`` cast to ``fp16`` or ``bf16`` (module rules:
    nearest, ties to even).

    Raises:
        RunError: NaN, inf, or a weight whose cast overflows.
        ValueError: a dtype other than fp16 or bf16.

    >>> half_bits(np.array([1.0, -2.0, 1 + 2.0**-8, 1 + 3 * 2.0**-8], np.float32), "bf16").tolist()
    [16256, 49152, 16256, 16258]
    """
    if dtype not in HALF_FORMS:
        raise ValueError(f"a cast is fp16 or bf16, got {dtype!r}")
    w = np.asarray(w, dtype=np.float32)
    if not np.isfinite(w).all():
        raise RunError("a weight to cast is NaN or infinite: the model is broken, nothing to cast")
    if dtype == "fp16":
        with np.errstate(over="ignore"):
            h = w.astype(np.float16)
        bits = h.view(np.uint16)
    else:
        u = np.ascontiguousarray(w).view(np.uint32).astype(np.uint64)
        bits = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    if ((bits & 0x7FFF) >= (0x7C00 if dtype == "fp16" else 0x7F80)).any():
        limit = "65504" if dtype == "fp16" else "about 3.39e38"
        raise RunError(f"a weight ({float(np.abs(w).max()):.4g}) overflows {dtype}: its largest finite value is {limit}")
    return bits


def half_values(bits: np.ndarray, dtype: str) -> np.ndarray:
    """The float32 values of 16-bit ``fp16`` or ``bf16`` patterns (exact)."""
    b = np.ascontiguousarray(np.asarray(bits, dtype=np.uint16))
    if dtype == "fp16":
        return b.view(np.float16).astype(np.float32)
    if dtype == "bf16":
        return (b.astype(np.uint32) << 16).view(np.float32)
    raise ValueError(f"a cast is fp16 or bf16, got {dtype!r}")


def cast_weight(w: np.ndarray, dtype: str) -> np.ndarray:
    """``w`` rounded to ``fp16``/``bf16``, as float32: the weight a cast layer computes with.

    >>> cast_weight(np.array([0.1, 70000.0 / 2], np.float32), "fp16").tolist()
    [0.0999755859375, 35008.0]
    """
    return half_values(half_bits(w, dtype), dtype)


@dataclass(frozen=True)
class ActQuant:
    """Affine activation quantization: ``q = clip(rint(x / scale) + zero_point, qmin, qmax)``;
    ``scale`` is a float32 value."""

    scale: float
    zero_point: int
    qmin: int = 0
    qmax: int = 255


def act_qparams(lo: float, hi: float, bits: int = 8, signed: bool = False) -> ActQuant:
    """Scale and zero point for the activation range ``[lo, hi]`` (module rules).

    ``lo, hi`` are rounded to float32 and widened to contain 0; ``scale = (hi - lo) / (qmax -
    qmin)`` in float32 (1 when ``hi == lo``, floored at 2^-126); ``zero_point = clip(qmin -
    rint(lo / scale), qmin, qmax)`` (float32 division, half to even), so 0 is exactly
    representable.

    Raises:
        RunError: if ``lo`` or ``hi`` is NaN or infinite, or ``hi - lo`` overflows float32.
        ValueError: if ``lo > hi`` or bits is outside 2..16.

    >>> act_qparams(-1.0, 3.0)
    ActQuant(scale=0.01568627543747425, zero_point=64, qmin=0, qmax=255)
    """
    if not 2 <= bits <= 16:
        raise ValueError(f"activation bits must be in 2..16, got {bits}")
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if not (np.isfinite(lo32) and np.isfinite(hi32)):
        raise RunError(f"activation range [{lo}, {hi}] is not finite: calibration saw NaN or inf")
    if lo32 > hi32:
        raise ValueError(f"activation range has lo {lo} > hi {hi}")
    lo32, hi32 = min(lo32, np.float32(0)), max(hi32, np.float32(0))
    with np.errstate(over="ignore"):
        width = hi32 - lo32
    if not np.isfinite(width):
        raise RunError(f"activation range [{lo}, {hi}] is too wide for float32")
    scale = np.float32(1) if width == 0 else max(width / np.float32(qmax - qmin), _TINY)
    zp = int(np.clip(qmin - np.rint(lo32 / scale), qmin, qmax))
    return ActQuant(float(scale), zp, qmin, qmax)


def fake_quantize(x: np.ndarray, aq: ActQuant) -> np.ndarray:
    """Quantize and dequantize in float32: ``(clip(rint(x/scale) + zp, qmin, qmax) - zp) * scale``.

    inf saturates to the end of the range, NaN stays NaN.

    >>> fake_quantize(np.array([-2.0, 0.0, 0.01, 5.0], np.float32), act_qparams(-1.0, 3.0)).tolist()
    [-1.003921627998352, 0.0, 0.01568627543747425, 2.9960784912109375]
    """
    s, zp = np.float32(aq.scale), np.float32(aq.zero_point)
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.clip(np.rint(np.asarray(x, dtype=np.float32) / s) + zp, np.float32(aq.qmin), np.float32(aq.qmax))
    return ((q - zp) * s).astype(np.float32)


class RangeObserver:
    """Streams calibration batches and returns the activation range ``(lo, hi)`` to quantize.

    The exact min, max, how often each occurs, and the count of exact zeros are kept always.

    - ``minmax``: the exact running min and max.
    - ``percentile``: the values below which ``100 - p`` and ``p`` percent of the data lie, read
      off the histogram (linear within a bin); a rank among the copies of the min (max) gives
      exactly the min (max), so ReLU outputs keep ``lo = 0``.
    - ``mse``: the ``[l, h]`` minimising a modelled ``bits``-bit error over the candidates ``l, h``
      in the histogram edges clipped to ``[min, max]``, widened to contain 0 as
      :func:`act_qparams` does. Error model, per bin of center ``c`` and count ``n`` (exact
      zeros excluded: 0 is on the grid): ``n * (c - h)^2`` if ``c > h``, ``n * (l - c)^2`` if
      ``c < l``, else ``n * s^2 / 12`` (uniform rounding) with ``s = (h - l) / (2^bits - 1)``.
      Ties: lowest ``l``, then lowest ``h``. The model overrates rounding error when most data
      sits in a bin far narrower than ``s`` (Cauchy-like outliers), and then clips too much.

    Both return values inside the exact ``[min, max]``. The histogram has ``bins`` equal bins
    (fixed memory). It starts on the range of the first data with two distinct values; a batch
    outside it grows the bin width by the smallest power of two ``2^k`` for which a grid
    aligned on the old edges (``j`` new bins below the old low edge, ``j`` the fewest that reach
    the new minimum) covers the new data, and the old bin ``i`` is added to new bin
    ``j + i // 2^k``: re-binning merges whole bins, exactly.

    >>> ob = RangeObserver(); ob.update(np.array([0.5, -2.0, 1.0])); ob.update(np.array([3.0])); ob.range()
    (-2.0, 3.0)
    """

    def __init__(self, method: str = "minmax", bins: int = 2048, percentile: float = 99.99, bits: int = 8) -> None:
        if method not in ("minmax", "percentile", "mse"):
            raise ValueError(f"method must be minmax, percentile or mse, got {method!r}")
        if int(bins) < 2 or not 50.0 < percentile <= 100.0 or not 2 <= bits <= 16:
            raise ValueError(f"need bins >= 2, 50 < percentile <= 100, bits in 2..16; got {bins}, {percentile}, {bits}")
        self.method, self.bins, self.percentile, self.bits = method, int(bins), float(percentile), int(bits)
        self._min, self._max, self._n, self._nmin, self._nmax, self._nzero = np.inf, -np.inf, 0, 0, 0, 0
        self._counts: Optional[np.ndarray] = None  # the non-zero values; zeros are only counted
        self._lo = self._width = 0.0

    def update(self, x: np.ndarray) -> None:
        """Add a batch (any shape). Raises RunError if it holds NaN or inf."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if not x.size:
            return
        if not np.isfinite(x).all():
            raise RunError("calibration saw a NaN or infinite activation: the model or the data is broken")
        bmin, bmax = float(x.min()), float(x.max())
        old_min, old_n = self._min, self._n - self._nzero
        nmin, nmax = int(np.count_nonzero(x == bmin)), int(np.count_nonzero(x == bmax))
        if bmin <= self._min:
            self._nmin = nmin + (self._nmin if bmin == self._min else 0)
            self._min = bmin
        if bmax >= self._max:
            self._nmax = nmax + (self._nmax if bmax == self._max else 0)
            self._max = bmax
        self._n += x.size
        self._nzero += int(np.count_nonzero(x == 0))
        if self.method == "minmax" or self._min == self._max:
            return
        if self._counts is None:
            self._lo, self._width = self._min, (self._max - self._min) / self.bins
            while self._lo + self.bins * self._width < self._max:  # cover max despite rounding
                self._width = float(np.nextafter(self._width, np.inf))
            self._counts = np.zeros(self.bins, dtype=np.int64)
            if old_n:  # what came before was one non-zero value, old_n times
                self._counts[self._index(np.array([old_min]))] += old_n
        else:
            self._grow(bmin, bmax)
        self._counts += np.bincount(self._index(x[x != 0]), minlength=self.bins)

    def _index(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.floor((x - self._lo) / self._width), 0, self.bins - 1).astype(np.int64)

    def _grow(self, xmin: float, xmax: float) -> None:
        lo, w, b = self._lo, self._width, self.bins
        if xmin >= lo and xmax <= lo + b * w:
            return
        k = 0
        while True:
            k += 1
            w2 = w * 2.0**k
            j = int(np.ceil((lo - min(xmin, lo)) / w2))
            j += lo - j * w2 > xmin  # rounding
            if j + ((b - 1) >> k) < b and lo - j * w2 + b * w2 >= xmax:
                break
        new = np.zeros(b, dtype=np.int64)
        np.add.at(new, j + (np.arange(b) >> min(k, 62)), self._counts)
        self._counts, self._lo, self._width = new, lo - j * w2, w2

    def histogram(self) -> tuple[np.ndarray, float, float]:
        """``(counts, lo, hi)`` of all the data (percentile and mse only), zeros in the bin of 0;
        all data in bin 0 and ``lo == hi`` while a single value has been seen."""
        if self.method == "minmax":
            raise ValueError("a minmax observer keeps no histogram")
        if self._counts is None:
            counts = np.zeros(self.bins, dtype=np.int64)
            counts[0] = self._n
            return counts, self._min, self._max
        counts = self._counts.copy()
        if self._nzero:
            counts[self._index(np.zeros(1))] += self._nzero
        return counts, self._lo, self._lo + self.bins * self._width

    def range(self) -> tuple[float, float]:
        """``(lo, hi)`` by the observer's method, never outside the exact ``[min, max]``.

        Raises:
            RunError: if no data was observed.
        """
        if not self._n:
            raise RunError("calibration observed no data: give at least one batch")
        if self.method == "minmax" or self._counts is None:
            return float(self._min), float(self._max)
        lo, hi = self._search() if self.method == "mse" else self._percentiles()
        return float(min(max(lo, self._min), self._max)), float(max(min(hi, self._max), self._min))

    def _percentiles(self) -> tuple[float, float]:
        counts = self.histogram()[0].astype(np.float64)
        cum = np.cumsum(counts)

        def at(target: float) -> float:
            i = min(int(np.searchsorted(cum, target, side="left")), self.bins - 1)
            before = cum[i - 1] if i else 0.0
            frac = (target - before) / counts[i] if counts[i] else 0.0
            return self._lo + (i + min(max(frac, 0.0), 1.0)) * self._width

        low, high = self._n * (1.0 - self.percentile / 100.0), self._n * self.percentile / 100.0
        lo = self._min if low <= self._nmin else at(low)
        hi = self._max if high > self._n - self._nmax else at(high)
        return lo, hi

    def _search(self) -> tuple[float, float]:
        n = self._counts.astype(np.float64)
        ctr = self._lo + (np.arange(self.bins) + 0.5) * self._width
        cands = np.clip(self._lo + np.arange(self.bins + 1) * self._width, self._min, self._max)
        lows, highs = np.unique(np.minimum(cands, 0.0)), np.unique(np.maximum(cands, 0.0))
        s0, s1, s2 = (np.concatenate([[0.0], np.cumsum(v)]) for v in (n, n * ctr, n * ctr * ctr))
        a = np.searchsorted(ctr, lows, side="left")  # bins [0, a) lie below l
        b = np.searchsorted(ctr, highs, side="right")  # bins [b, B) lie above h
        err_lo = lows**2 * s0[a] - 2 * lows * s1[a] + s2[a]
        err_hi = highs**2 * (s0[-1] - s0[b]) - 2 * highs * (s1[-1] - s1[b]) + (s2[-1] - s2[b])
        levels = float(2**self.bits - 1)
        best, arg = np.inf, (self._min, self._max)
        for start in range(0, lows.size, 256):  # rows in chunks: bounded temporary memory
            sl = slice(start, start + 256)
            inside = np.maximum(s0[b][None, :] - s0[a[sl]][:, None], 0.0)
            step = (highs[None, :] - lows[sl, None]) / levels
            err = err_lo[sl, None] + err_hi[None, :] + inside * step**2 / 12.0
            err[step <= 0] = np.inf  # l == h == 0 is no range
            i = int(np.argmin(err))
            if err.flat[i] < best:
                best, arg = float(err.flat[i]), (lows[start + i // highs.size], highs[i % highs.size])
        return arg


def agreement(codes_a: np.ndarray, codes_b: np.ndarray) -> tuple[int, int]:
    """``(equal, total)``: how many integer codes of two same-shape arrays are equal (by value).

    >>> agreement(np.array([1, -2, 3], np.int8), np.array([1, 2, 3], np.int32))
    (2, 3)
    """
    a, b = np.asarray(codes_a), np.asarray(codes_b)
    if a.shape != b.shape:
        raise ValueError(f"code arrays differ in shape: {a.shape} vs {b.shape}")
    return int(np.count_nonzero(a.astype(np.int64) == b.astype(np.int64))), int(a.size)


# -- quantized weights in the canonical state, and training after quantize ------------------
#
# A quantized layer's weight is stored in the canonical state (and so in the .lwz file) as its
# integer codes and scales instead of float32: "<layer>.weight.codes", "<layer>.weight.scale"
# (float32, (out,) per channel or () per tensor) and "<layer>.weight.bits" (int8, a 0-d array).
# At 8 (or 3, 5, 6, 7) bits the codes are int8 of the weight's canonical shape; at 4, 2 and 1
# bits they are packed (pack_codes: uint8, 1-d) and "<layer>.weight.shape" (int64) gives the
# canonical shape. A clustered layer ("cluster") stores "<layer>.weight.codes" (pack_indices,
# uint8), ".shape", ".bits" and "<layer>.weight.codebook" (float32, 2^bits values) and no
# scale. Packed codes with many zeros are stored sparsely: "<layer>.weight.nonzero" (the bitmap
# of the non-zero codes) and ".codes" the non-zero codes only (module docstring, "Sparse
# packing"). A statically quantized layer also stores its input quantization:
# "<layer>.act.scale" (float32, 0-d) and "<layer>.act.zero_point" (int32, 0-d; uint8 range).
# In the framework's own model the weight holds codes * scale (float32, exactly
# representable), so any engine that re-quantizes it by the integer rule finds the same codes
# (the fixed point).
#
# Training after quantize (qat, finetune, distill) keeps the scales fixed (they are never
# recomputed while training, for every form) and trains through the quantizer with the
# straight-through estimator: a float master copy is updated by the optimizer (the gradient of
# the quantized weight is taken as the master's; with mode=qat the master starts at the float
# weight before quantization, as BinaryConnect and TWN train; a finetune or distill after
# quantize starts it at the quantized weight, the float one being gone), and the weight the model computes with is
# snap(master) = codes_with_scale(master) * scale after every optimizer step (pruned weights
# stay 0 where the form has a code 0). codes_with_scale at fixed scales is the nearest level:
# clip(rint(w / scale), -qmax, qmax) for 2..8 bits (ternary too: levels {-scale, 0, scale},
# so the threshold while training is scale / 2, not TWN's 0.7 * mean|w|), and for binary
# +1 where w >= 0 or scale == 0, else -1. A clustered layer keeps its codebook fixed the same
# way and snaps to the nearest codebook value (requantize; 0.0 wins ties, pruned weights stay
# 0): its codes move, its shared values do not.

CODES, SCALE, BITS, SHAPE, CODEBOOK = ".codes", ".scale", ".bits", ".shape", ".codebook"
NONZERO = ".nonzero"  # sparse packing: the bitmap of the non-zero codes (module docstring)
ACT_SCALE, ACT_ZERO_POINT = ".act.scale", ".act.zero_point"
_PACKED = (1, 2, 4)


def int8_only(quants: dict[str, WeightQuant]) -> bool:
    """Whether a model's quantized layers (layer -> WeightQuant) are all int8 codes with scales:
    such a model has an int8 artifact with kernels of its own (ONNX Runtime, LiteRT), which is
    what its latency times; low-bit and cluster layers run float kernels as the model does.

    >>> int8_only({"fc": quantize_as(np.ones((2, 3)), "int8")}), int8_only({"fc": quantize_as(np.ones((2, 3)), "int4")})
    (True, False)
    """
    return bool(quants) and all(q.bits == 8 and q.codebook is None for q in quants.values())


def codes_with_scale(w: np.ndarray, scale: np.ndarray, bits: int = 8) -> np.ndarray:
    """Codes of ``w`` (canonical layout) at fixed per-channel (or scalar) ``scale``: the nearest
    level, ``clip(rint(w / scale), -qmax, qmax)`` in float32 for 2..8 bits; for 1 bit (binary)
    +1 where ``w >= 0`` or the channel's scale is 0, else -1. As int8.

    >>> codes_with_scale(np.array([[0.3, -0.2, 0.1]], np.float32), np.array([0.4], np.float32), 2).tolist()
    [[1, 0, 0]]
    """
    w = np.asarray(w, dtype=np.float32)
    s = np.asarray(scale, dtype=np.float32)
    s = s.reshape((-1,) + (1,) * (w.ndim - 1)) if s.ndim == 1 else s
    if bits == 1:
        return np.where((w >= 0) | (s == 0), np.int8(1), np.int8(-1)).astype(np.int8)
    qmax = np.float32(2 ** (bits - 1) - 1)
    return np.clip(np.rint(w / s), -qmax, qmax).astype(np.int8)


def snap(w: np.ndarray, scale: np.ndarray, bits: int = 8) -> np.ndarray:
    """``codes_with_scale(w) * scale`` in float32: the weight a quantized layer computes with."""
    s = np.asarray(scale, dtype=np.float32)
    s = s.reshape((-1,) + (1,) * (np.ndim(w) - 1)) if s.ndim == 1 else s
    return (codes_with_scale(w, scale, bits).astype(np.float32) * s).astype(np.float32)


def requantize(w: np.ndarray, q: WeightQuant) -> WeightQuant:
    """``q`` with the codes of ``w`` at its fixed scales (:func:`codes_with_scale`) or fixed
    codebook (:func:`lwdsl.semantics.cluster.nearest_codes`): what training after quantize keeps.

    >>> q = quantize_as(np.array([1.0, -2.0, 0.0, 3.0], np.float32), "cluster", bits=2)
    >>> requantize(np.array([2.9, -1.5, 0.4, 0.0], np.float32), q).dequantize().tolist()
    [3.0, -2.0, 0.0, 0.0]
    """
    if q.codebook is not None:
        return WeightQuant(nearest_codes(w, q.codebook), q.scale, q.bits, q.axis, q.codebook)
    return WeightQuant(codes_with_scale(w, q.scale, q.bits), q.scale, q.bits, q.axis)


def pack_state(
    state: dict[str, np.ndarray],
    quants: dict[str, WeightQuant],
    acts: Optional[dict[str, ActQuant]] = None,
    casts: Optional[dict[str, str]] = None,
) -> dict[str, np.ndarray]:
    """The canonical state with each quantized layer's ``.weight`` replaced by its codes (packed
    at 1, 2 and 4 bits), scales and bits (``quants``: layer name -> WeightQuant), the input
    scale and zero point of each layer in ``acts``, and each cast layer's weight (``casts``:
    layer -> fp16/bf16) as its 16-bit patterns ``<layer>.weight.fp16`` / ``.bf16`` (uint16).

    >>> st = pack_state({"fc.weight": np.zeros((2, 3), np.float32)}, {"fc": quantize_as(np.ones((2, 3)), "int4")})
    >>> sorted(st), st["fc.weight.codes"].tolist()
    (['fc.weight.bits', 'fc.weight.codes', 'fc.weight.scale', 'fc.weight.shape'], [119, 119, 119])
    """
    out = dict(state)
    for layer, q in quants.items():
        base = f"{layer}.weight"
        out.pop(base, None)
        if q.codebook is not None:  # cluster: packed indices, the codebook instead of scales
            out.update(_packed(base, q.codes, q.bits, pack_indices))
            out[base + SHAPE] = np.asarray(np.shape(q.codes), dtype=np.int64)
            out[base + CODEBOOK] = np.asarray(q.codebook, dtype=np.float32)
            out[base + BITS] = np.asarray(q.bits, dtype=np.int8)
            continue
        if q.bits in _PACKED:
            out.update(_packed(base, q.codes, q.bits, pack_codes))
            out[base + SHAPE] = np.asarray(np.shape(q.codes), dtype=np.int64)
        else:
            out[base + CODES] = np.asarray(q.codes, dtype=np.int8)
        out[base + SCALE] = np.asarray(q.scale, dtype=np.float32)
        out[base + BITS] = np.asarray(q.bits, dtype=np.int8)
    for layer, dtype in (casts or {}).items():
        base = f"{layer}.weight"
        if base in out:
            out[f"{base}.{dtype}"] = half_bits(out.pop(base), dtype)
    for layer, a in (acts or {}).items():
        out[layer + ACT_SCALE] = np.asarray(a.scale, dtype=np.float32)
        out[layer + ACT_ZERO_POINT] = np.asarray(a.zero_point, dtype=np.int32)
    return out


def sparse_pays(n: int, kept: int, bits: int) -> bool:
    """Whether ``n`` packed ``bits``-bit codes, ``kept`` of them non-zero, are stored sparsely: the
    bitmap and the non-zero codes take at most 3/4 of the bytes of all codes packed and save at
    least 256 bytes (what the extra array costs in the file; module docstring).

    >>> sparse_pays(235_200, 11_760, 3), sparse_pays(235_200, 117_600, 2), sparse_pays(1_000, 100, 2)
    (True, False, False)
    """
    dense, sparse = -(-n * bits // 8), -(-n // 8) + -(-kept * bits // 8)
    return 4 * sparse <= 3 * dense and dense - sparse >= 256


def _packed(base: str, codes: np.ndarray, bits: int, pack) -> dict[str, np.ndarray]:
    """``<base>.codes`` packed by ``pack``, all of them or, where fewer bytes, the non-zero ones
    and ``<base>.nonzero`` (module docstring, "Sparse packing").

    >>> sparse = _packed("w", np.eye(64, dtype=np.int8), 4, pack_codes)
    >>> sorted((k, v.size) for k, v in sparse.items())
    [('w.codes', 32), ('w.nonzero', 512)]
    """
    flat = np.asarray(codes).reshape(-1)
    keep = flat != 0
    kept = int(np.count_nonzero(keep))
    if sparse_pays(flat.size, kept, bits):
        return {base + CODES: pack(flat[keep], bits), base + NONZERO: np.packbits(keep)}
    return {base + CODES: pack(flat, bits)}


class DamagedTensor(UsageError):
    """A tensor of a packed state that does not hold what the state declares for it (its
    dtype, shape, range or finiteness: :func:`check_state`), as in a damaged file. A bad-input
    error (exit code 2); :func:`lwdsl.weights.load_weights` adds the file's name."""

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


def _unpacked(state: dict[str, np.ndarray], base: str, bits: int, unpack) -> np.ndarray:
    """The codes of ``base`` in its canonical shape, from all codes packed or from the bitmap of
    the non-zero codes and those codes (:func:`_packed`), each part checked against the others:
    byte counts, the unused bits of last bytes (0), no zero among the non-zero codes.

    Raises:
        DamagedTensor: no ``<base>.shape``, or parts that do not fit it or each other.
    """
    shape = _shape_of(state, base)
    n = math.prod(shape)
    packed = np.asarray(state[base + CODES])
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise DamagedTensor(base + CODES, f"is {packed.dtype} of shape {list(packed.shape)}, not packed codes (1-d uint8)")
    keep = None
    if base + NONZERO in state:
        bitmap = np.asarray(state[base + NONZERO])
        if bitmap.dtype != np.uint8 or bitmap.ndim != 1 or bitmap.size != -(-n // 8):
            raise DamagedTensor(
                base + NONZERO, f"has {bitmap.size} {bitmap.dtype} bytes, not the {-(-n // 8)} of shape {shape}: the bitmap does not fit"
            )
        if n % 8 and bitmap[-1] & np.uint8(0xFF >> (n % 8)):
            raise DamagedTensor(base + NONZERO, f"marks weights past the {n:,} of shape {shape}")
        keep = np.unpackbits(bitmap, count=n).astype(bool)
        count = int(np.count_nonzero(keep))
    else:
        count = n
    if packed.size != -(-count * bits // 8):
        raise DamagedTensor(base + CODES, f"packed codes of {packed.size} uint8 bytes do not fit shape {(count,) if keep is not None else shape} at {bits} bits")
    if (count * bits) % 8 and packed[-1] >> np.uint8((count * bits) % 8):
        raise DamagedTensor(base + CODES, "has bits set past its last code (unused bits are 0)")
    try:
        codes = unpack(packed, bits, (count,))
    except RunError as exc:
        raise DamagedTensor(base + CODES, exc.message) from None
    if keep is None:
        return codes.reshape(shape)
    if (codes == 0).any():
        raise DamagedTensor(base + CODES, f"holds a zero where '{base + NONZERO}' marks a non-zero code")
    dense = np.zeros(n, dtype=codes.dtype)
    dense[keep] = codes
    return dense.reshape(shape)


def _scale_of(state: dict[str, np.ndarray], base: str, codes: np.ndarray, bits: int) -> tuple[np.ndarray, Optional[int]]:
    """(the scale, its axis) of a layer of integer codes: float32, ``()`` per tensor (shape
    ``(1,)`` read as such) or ``(out,)`` per channel, finite and > 0 (binary: >= 0, a channel of
    scale 0 having codes +1 only)."""
    key = base + SCALE
    if key not in state:
        raise DamagedTensor(base + CODES, f"holds {bits}-bit codes but the state has no '{key}'")
    scale = np.asarray(state[key])
    out = codes.shape[0] if codes.ndim else None
    if scale.shape == (1,) and out != 1:
        scale = scale.reshape(())  # a per-tensor (0-d) scale that a writer stored as shape (1,)
    if scale.dtype != np.float32 or scale.shape not in ((), (out,)):
        want = "()" + (f" or ({out},)" if out is not None else "")
        raise DamagedTensor(key, f"is {scale.dtype} of shape {list(scale.shape)}; a float32 scale of shape {want} fits '{base + CODES}' {list(codes.shape)}")
    flat = scale.reshape(-1)
    bad = ~np.isfinite(flat) | (flat < 0) | ((flat == 0) if bits != 1 else False)
    if bad.any():
        i = int(np.argmax(bad))
        where = f" (channel {i} of {flat.size})" if scale.ndim else ""
        need = ">= 0" if bits == 1 else "> 0"
        raise DamagedTensor(key, f"holds {float(flat[i])!r}{where}; scales are finite and {need}")
    if bits == 1 and (flat == 0).any():
        rows = codes.reshape(flat.size, -1) if scale.ndim else codes.reshape(1, -1)
        if (rows[flat == 0] != 1).any():
            raise DamagedTensor(base + CODES, "holds -1 in a binary channel of scale 0 (its codes are +1)")
    return scale, (0 if scale.ndim == 1 else None)


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
        if base + SCALE in state:
            raise DamagedTensor(base + SCALE, "belongs to a clustered layer, which has a codebook and no scale")
        book = np.asarray(state[base + CODEBOOK])
        if book.dtype != np.float32 or book.shape != (2**bits,):
            raise DamagedTensor(base + CODEBOOK, f"is {book.dtype} of shape {list(book.shape)}, not the float32 ({2**bits},) of {bits} bits: the file is damaged")
        if not np.isfinite(book).all():
            raise DamagedTensor(base + CODEBOOK, f"holds {float(book[~np.isfinite(book)][0])!r}; a codebook is finite")
        if book[:1].view(np.uint32)[0] != 0:
            raise DamagedTensor(base + CODEBOOK, f"starts with {float(book[0])!r}; code 0 stands for +0.0")
        codes = _unpacked(state, base, bits, unpack_indices)
        return WeightQuant(codes, np.float32(1).reshape(()), bits, None, book.copy())
    if not 1 <= bits <= 8:
        raise DamagedTensor(base + BITS, f"is {bits}; quantized codes have 1..8 bits")
    if bits in _PACKED:
        codes = _unpacked(state, base, bits, unpack_codes)
    else:
        codes = np.asarray(state[base + CODES])
        if codes.dtype != np.int8:
            raise DamagedTensor(base + CODES, f"holds {codes.dtype} values, not the int8 codes of {bits} bits")
        if base + NONZERO in state:
            raise DamagedTensor(base + NONZERO, f"belongs to {bits}-bit codes, which are never stored sparsely")
        if base + SHAPE in state and _shape_of(state, base) != codes.shape:
            raise DamagedTensor(base + SHAPE, f"says {list(_shape_of(state, base))} but '{base + CODES}' is {list(codes.shape)}")
        lo, hi = _code_range(bits)
        if codes.size and (codes.min() < lo or codes.max() > hi):
            raise DamagedTensor(base + CODES, f"holds {int(codes.min() if codes.min() < lo else codes.max())}, outside the {bits}-bit range [{lo}, {hi}]")
    scale, axis = _scale_of(state, base, codes, bits)
    return WeightQuant(codes, scale, bits, axis)


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


_PARTS = (SCALE, BITS, SHAPE, CODEBOOK, NONZERO)


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
    (one integer, 1..8; 2..8 with a codebook) and: int8 codes of the form's range (3..8 bits),
    or packed uint8 codes whose byte count fits ``.shape`` (1-d integers) at ``bits`` (only
    the non-zero codes when a ``.nonzero`` bitmap of ``ceil(n / 8)`` bytes is there, none of
    them zero), unused bits of last bytes 0, each field a code of the form; a float32 scale,
    ``()`` or ``(out,)``, finite and > 0 (binary: >= 0, with codes +1 where 0) whose product
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


def unpack_act(state: dict[str, np.ndarray]) -> dict[str, ActQuant]:
    """The activation quantization stored by :func:`pack_state` (uint8 range): layer -> ActQuant,
    each checked (:func:`check_state`).

    >>> unpack_act(pack_state({}, {}, {"fc": act_qparams(-1.0, 3.0)}))
    {'fc': ActQuant(scale=0.01568627543747425, zero_point=64, qmin=0, qmax=255)}
    """
    acts = {key[: -len(ACT_SCALE)] for key in state if key.endswith(ACT_SCALE)}
    return {layer: _act(state, layer) for layer in sorted(acts)}
