"""Casts: weights rounded to a 16-bit float (``fp16``, ``bf16``) and their 16-bit patterns.

**Casts** (:func:`half_bits`, :func:`cast_weight`): ``fp16`` is IEEE binary16 and ``bf16``
bfloat16 (the high 16 bits of a float32), both rounded to nearest, ties to even (fp16 keeps
subnormals; a float32 subnormal rounds the same way in bf16). The weight a cast layer computes
with is that value in float32 (exact). A weight whose rounding overflows (``|w| > 65504`` in
fp16, within half a bf16 ulp of the float32 maximum in bf16), NaN or inf raises RunError.
"""

from __future__ import annotations

import numpy as np

from ..errors import RunError
from .forms import HALF_FORMS

__all__ = ["HALF_FORMS", "half_bits", "half_values", "cast_weight"]


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

