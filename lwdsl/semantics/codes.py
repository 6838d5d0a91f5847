"""Weight codes and scales: the one definition of each weight form's integer codes.

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

**The full grid** (``grid="full"``: compressed-tensors' and llm-compressor's symmetric rule):
all ``2^b`` codes, ``[qmin, qmax] = [-qmax - 1, qmax]`` (:func:`code_bounds`; int4: -8..7,
int2: -2..1), ``scale = m / ((qmax - qmin) / 2) = m / (qmax + 1/2)`` (int4: ``m / 7.5``),
``codes = clip(rint(w / scale), qmin, qmax)``, zero channels as above. The largest ``|w|``
is ``±(qmax + 1/2)`` steps up to float32 rounding: ``qmax`` if positive (half a step off),
``qmin`` or ``-qmax`` if negative; the step is ``qmax / (qmax + 1/2)`` of the narrow one, so
the error is smaller on average (docs/semantics.md). No fixed
point (a positive max requantizes to a smaller scale): the spec refuses ``grid=full`` with
int8 activations and the int8 exports, whose kernels re-quantize by the narrow rule.

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
``axis`` None.

The forms, their bits and which have a code 0 are :mod:`lwdsl.semantics.forms`'s table; how
codes are stored is :mod:`lwdsl.semantics.state` (packed by :mod:`lwdsl.semantics.packing`).

**Training after quantize** (:func:`codes_with_scale`, :func:`snap`, :func:`requantize`; qat,
finetune, distill) keeps the scales fixed (they are never recomputed while training, for every
form) and trains through the quantizer with the straight-through estimator: a float master copy
is updated by the optimizer (the gradient of the quantized weight is taken as the master's;
with mode=qat the master starts at the float weight before quantization, as BinaryConnect and
TWN train; a finetune or distill after quantize starts it at the quantized weight, the float
one being gone), and the weight the model computes with is ``snap(master) =
codes_with_scale(master) * scale`` after every optimizer step (pruned weights stay 0 where the
form has a code 0). codes_with_scale at fixed scales is the nearest level: clip(rint(w /
scale), qmin, qmax) for 2..8 bits (:func:`code_bounds`: ``qmin = -qmax`` on the narrow
grid, ``-qmax - 1`` on the full one; ternary too: levels {-scale, 0, scale}, so the threshold
while training is scale / 2, not TWN's 0.7 * mean|w|), and for binary +1 where w >= 0 or scale
== 0, else -1. A clustered layer keeps its codebook fixed the same way and snaps to the nearest
codebook value (requantize; 0.0 wins ties, pruned weights stay 0): its codes move, its shared
values do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import RunError
from .cluster import cluster_weight, nearest_codes
from .forms import FORM_BITS, GRIDS, code_bounds

__all__ = [
    "WeightQuant",
    "quantize_weight",
    "quantize_ternary",
    "quantize_binary",
    "quantize_as",
    "FORM_BITS",
    "int8_only",
    "codes_with_scale",
    "snap",
    "requantize",
    "agreement",
    "group_scales",
    "group_count",
    "GRIDS",
    "code_bounds",
]

_TINY = np.float32(2.0**-126)  # smallest normal float32: no scale is below it


@dataclass(frozen=True)
class WeightQuant:
    """Quantized weights: ``codes`` (int8, the weight's shape), ``scale`` (float32, shape
    ``(out,)`` per channel with ``axis=0``, ``()`` per tensor with ``axis=None``), ``bits``.
    A clustered layer (``cluster``) has a ``codebook`` (float32, ``2^bits`` values) and uint8
    codes indexing it; its scale is 1 and unused. A layer quantized in groups (``group=G``, a
    linear weight ``[out, in]``) has one scale per ``G`` consecutive inputs of each output row:
    ``scale`` is ``(out, ceil(in / G))``, ``axis`` 0, ``group`` G (the last group of a row may
    be shorter). ``grid``: ``narrow`` or ``full`` (:data:`GRIDS`; the integer forms only)."""

    codes: np.ndarray
    scale: np.ndarray
    bits: int
    axis: Optional[int]
    codebook: Optional[np.ndarray] = None
    group: Optional[int] = None
    grid: str = "narrow"

    def bounds(self) -> tuple[int, int]:
        """``(qmin, qmax)`` of its bits and grid (:func:`code_bounds`): what training clamps to."""
        return code_bounds(self.bits, self.grid)

    def full_scale(self) -> np.ndarray:
        """The scale broadcastable against the codes: ``()`` per tensor, ``(out, 1, ...)`` per
        channel, the codes' own shape ``(out, in)`` in groups (each group's scale repeated)."""
        if self.group is not None:
            return group_scales(self.scale, self.group, self.codes.shape[1])
        return self.scale if self.axis is None else self.scale.reshape((-1,) + (1,) * (self.codes.ndim - 1))

    def dequantize(self) -> np.ndarray:
        """``codes * scale`` as one float32 multiply (scale broadcast along axis 0, or over each
        group); ``codebook[codes]`` for a clustered layer."""
        if self.codebook is not None:
            return np.asarray(self.codebook, dtype=np.float32)[np.asarray(self.codes, dtype=np.intp)]
        return self.codes.astype(np.float32) * self.full_scale()


def group_scales(scale: np.ndarray, group: int, cols: int) -> np.ndarray:
    """Per-group scales ``(out, ceil(cols / group))`` repeated to the weight's ``(out, cols)``.

    >>> group_scales(np.array([[1.0, 2.0]], np.float32), 2, 3).tolist()
    [[1.0, 1.0, 2.0]]
    """
    return np.repeat(np.asarray(scale, dtype=np.float32), int(group), axis=1)[:, : int(cols)]


def group_count(cols: int, group: int) -> int:
    """Groups of ``group`` inputs in a row of ``cols`` (the last may be shorter).

    >>> group_count(128, 32), group_count(100, 32)
    (4, 4)
    """
    return -(-int(cols) // int(group))


def quantize_weight(w: np.ndarray, bits: int = 8, granularity: str = "per_channel", group: Optional[int] = None,
                    grid: str = "narrow") -> WeightQuant:
    """Symmetric quantization of a weight in the canonical layout (module rules), on the narrow
    grid or (``grid="full"``) the full one.

    Args:
        w: the weight, channel axis 0 for ``per_channel``; converted to float32.
        bits: 2..8 (codes in :func:`code_bounds` of ``bits`` and ``grid``).
        granularity: ``"per_channel"`` (one scale per slice of axis 0) or ``"per_tensor"``.
        group: per channel only, a 2-d weight ``[out, in]``: one scale per ``group``
            consecutive inputs of each row (``m`` is the group's max ``|w|``; the rule is
            otherwise the same, zero groups included).
        grid: ``"narrow"`` (``scale = m / qmax``) or ``"full"`` (``scale = m / (qmax + 1/2)``,
            compressed-tensors' rule; module docstring).

    Returns:
        The codes and scales; ``dequantize()`` gives the float weights they stand for.

    Raises:
        RunError: if a weight is NaN or infinite, or ``-qmin * scale`` overflows float32 (only
            ``|w|`` within about an ulp of the float32 maximum).
        ValueError: for bits outside 2..8, an unknown granularity, a 0-d per-channel weight, or
            a group with a weight that is not 2-d or with ``per_tensor``.

    >>> wq = quantize_weight(np.array([[1.984375, -0.5, 0.0078125, 0.0234375], [0, 0, 0, 0]], np.float32))
    >>> wq.codes.tolist(), wq.scale.tolist()
    ([[127, -32, 0, 2], [0, 0, 0, 0]], [0.015625, 1.0])
    >>> wq = quantize_weight(np.array([[7.0, -1.0, 0.5, 0.25]], np.float32), 4, group=2)
    >>> wq.codes.tolist(), wq.scale.tolist()
    ([[7, -1, 7, 3]], [[1.0, 0.0714285746216774]])
    >>> wq = quantize_weight(np.array([[-7.5, 1.0, 3.75, 7.5]], np.float32), 4, grid="full")
    >>> wq.codes.tolist(), wq.scale.tolist(), wq.bounds()
    ([[-8, 1, 4, 7]], [1.0], (-8, 7))
    """
    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"weight bits must be an integer in 2..8, got {bits!r}")
    if granularity not in ("per_channel", "per_tensor"):
        raise ValueError(f"granularity must be per_channel or per_tensor, got {granularity!r}")
    w = np.asarray(w, dtype=np.float32)
    mag = np.abs(w)
    if not np.isfinite(w).all():
        raise RunError("a weight to quantize is NaN or infinite: the model is broken, nothing to quantize")
    lo, hi = code_bounds(int(bits), grid)
    qmin, qmax, div = np.float32(lo), np.float32(hi), np.float32((hi - lo) / 2)  # div: qmax, or qmax + 1/2 (full)
    axis = 0
    if group is not None:
        if granularity != "per_channel" or w.ndim != 2 or int(group) < 1:
            raise ValueError(f"group={group!r} quantizes a 2-d [out, in] weight per channel in groups of its inputs")
        if w.shape[1] == 0:
            raise ValueError("group= needs a weight with inputs")
        m = np.maximum.reduceat(mag, np.arange(0, w.shape[1], int(group)), axis=1)
        spread = lambda a: group_scales(a, int(group), w.shape[1])  # noqa: E731  (per group -> the weight's shape)
    elif granularity == "per_channel":
        if w.ndim == 0:
            raise ValueError("per_channel quantization needs a weight with an output-channel axis 0")
        m = np.max(mag.reshape(w.shape[0], -1), axis=1, initial=np.float32(0))
        spread = lambda a: a.reshape((-1,) + (1,) * (w.ndim - 1))  # noqa: E731
    else:
        m, axis = np.max(mag, initial=np.float32(0)).astype(np.float32), None
        spread = lambda a: a  # noqa: E731
    zero = (m / div) < _TINY  # zero channels (groups): scale 1, codes 0
    scale = np.where(zero, np.float32(1), m / div).astype(np.float32)
    with np.errstate(over="ignore"):
        if np.isinf(-qmin * scale).any():
            raise RunError(f"a weight to quantize is too large ({float(m.max()):.4g}): the largest code times its "
                           "scale overflows float32")
    codes = np.clip(np.rint(w / spread(scale)), qmin, qmax)
    codes = np.where(spread(zero), np.float32(0), codes).astype(np.int8)
    return WeightQuant(codes, scale, int(bits), axis, group=None if group is None else int(group), grid=grid)


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


def quantize_as(w: np.ndarray, dtype: str, granularity: str = "per_channel", bits: Optional[int] = None,
                group: Optional[int] = None, grid: str = "narrow") -> WeightQuant:
    """Quantize ``w`` (canonical layout) to the recipe's ``dtype``: ``int8``, ``int4``, ``int2``
    (:func:`quantize_weight`), ``ternary`` (:func:`quantize_ternary`), ``binary``
    (:func:`quantize_binary`) or ``cluster`` (:func:`lwdsl.semantics.cluster.cluster_weight`
    at ``bits``, default 4; one codebook per tensor whatever ``granularity``). ``group`` (the
    integer forms only): one scale per ``group`` inputs of each row; ``grid``: :data:`GRIDS`.

    >>> quantize_as(np.array([[0.5, -1.0]], np.float32), "int4").codes.tolist()
    [[3, -7]]
    """
    if (group is not None or grid != "narrow") and dtype not in ("int8", "int4", "int2"):
        raise ValueError(f"{'group=' if group is not None else f'grid={grid}'} applies to int8, int4 and int2, not {dtype}")
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
    return quantize_weight(w, FORM_BITS[dtype], granularity, group, grid)


def int8_only(quants: dict[str, WeightQuant]) -> bool:
    """Whether a model's quantized layers (layer -> WeightQuant) are all int8 codes with scales:
    such a model has an int8 artifact with kernels of its own (ONNX Runtime, LiteRT), which is
    what its latency times; low-bit, cluster, grouped and full-grid layers run float kernels as the
    model does.

    >>> int8_only({"fc": quantize_as(np.ones((2, 3)), "int8")}), int8_only({"fc": quantize_as(np.ones((2, 3)), "int4")})
    (True, False)
    """
    return bool(quants) and all(q.bits == 8 and q.codebook is None and q.group is None and q.grid == "narrow"
                                for q in quants.values())


def codes_with_scale(w: np.ndarray, scale: np.ndarray, bits: int = 8, grid: str = "narrow") -> np.ndarray:
    """Codes of ``w`` (canonical layout) at fixed per-channel (or scalar, or a grouped layer's
    full ``(out, in)``: :meth:`WeightQuant.full_scale`) ``scale``: the nearest
    level, ``clip(rint(w / scale), qmin, qmax)`` in float32 for 2..8 bits (:func:`code_bounds`
    of ``bits`` and ``grid``); for 1 bit (binary) +1 where ``w >= 0`` or the channel's scale is
    0, else -1. As int8.

    >>> codes_with_scale(np.array([[0.3, -0.2, 0.1]], np.float32), np.array([0.4], np.float32), 2).tolist()
    [[1, 0, 0]]
    """
    w = np.asarray(w, dtype=np.float32)
    s = np.asarray(scale, dtype=np.float32)
    s = s.reshape((-1,) + (1,) * (w.ndim - 1)) if s.ndim == 1 else s
    if bits == 1:
        return np.where((w >= 0) | (s == 0), np.int8(1), np.int8(-1)).astype(np.int8)
    qmin, qmax = code_bounds(bits, grid)
    return np.clip(np.rint(w / s), np.float32(qmin), np.float32(qmax)).astype(np.int8)


def snap(w: np.ndarray, scale: np.ndarray, bits: int = 8, grid: str = "narrow") -> np.ndarray:
    """``codes_with_scale(w) * scale`` in float32: the weight a quantized layer computes with."""
    s = np.asarray(scale, dtype=np.float32)
    s = s.reshape((-1,) + (1,) * (np.ndim(w) - 1)) if s.ndim == 1 else s
    return (codes_with_scale(w, scale, bits, grid).astype(np.float32) * s).astype(np.float32)


def requantize(w: np.ndarray, q: WeightQuant) -> WeightQuant:
    """``q`` with the codes of ``w`` at its fixed scales (:func:`codes_with_scale`) or fixed
    codebook (:func:`lwdsl.semantics.cluster.nearest_codes`): what training after quantize keeps.

    >>> q = quantize_as(np.array([1.0, -2.0, 0.0, 3.0], np.float32), "cluster", bits=2)
    >>> requantize(np.array([2.9, -1.5, 0.4, 0.0], np.float32), q).dequantize().tolist()
    [3.0, -2.0, 0.0, 0.0]
    """
    if q.codebook is not None:
        return WeightQuant(nearest_codes(w, q.codebook), q.scale, q.bits, q.axis, q.codebook)
    scale = q.full_scale() if q.group is not None else q.scale
    return WeightQuant(codes_with_scale(w, scale, q.bits, q.grid), q.scale, q.bits, q.axis, group=q.group, grid=q.grid)


def agreement(codes_a: np.ndarray, codes_b: np.ndarray) -> tuple[int, int]:
    """``(equal, total)``: how many integer codes of two same-shape arrays are equal (by value).

    >>> agreement(np.array([1, -2, 3], np.int8), np.array([1, 2, 3], np.int32))
    (2, 3)
    """
    a, b = np.asarray(codes_a), np.asarray(codes_b)
    if a.shape != b.shape:
        raise ValueError(f"code arrays differ in shape: {a.shape} vs {b.shape}")
    return int(np.count_nonzero(a.astype(np.int64) == b.astype(np.int64))), int(a.size)

