"""lwdsl.semantics.casts: fp16 and bf16 weights (framework-free)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lwdsl.errors import RunError
from lwdsl.semantics import casts as H

F32 = np.float32


def test_docstring_examples_run():
    result = doctest.testmod(H)
    assert result.attempted and not result.failed


# ----------------------------------------------------------------------------- fp16 / bf16 casts


def _bf16_ref(x: float) -> int:
    """bfloat16 bits by exact arithmetic: the nearer of the two neighbours, ties to even."""
    u = int(np.array(x, np.float32).view(np.uint32))
    lo = u >> 16
    cands = [lo, lo + 1]
    vals = [float(np.array(c << 16, np.uint32).view(np.float32)) for c in cands]
    d = [abs(v - float(np.float32(x))) for v in vals]
    if d[0] != d[1]:
        return cands[int(d[1] < d[0])]
    return cands[0] if cands[0] % 2 == 0 else cands[1]


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(F32, st.integers(1, 40), elements=st.floats(-(2.0**100), 2.0**100, width=32)))
def test_bf16_is_round_to_nearest_even_of_the_high_bits(w):
    bits = H.half_bits(w, "bf16")
    assert bits.dtype == np.uint16 and bits.tolist() == [_bf16_ref(float(v)) for v in w]
    v = H.cast_weight(w, "bf16")
    assert v.dtype == np.float32 and np.array_equal(H.half_bits(v, "bf16"), bits)  # exact: a fixed point


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(F32, st.integers(1, 40), elements=st.floats(-65504, 65504, width=32)))
def test_fp16_is_ieee_binary16_and_keeps_signs_and_zeros(w):
    v = H.cast_weight(w, "fp16")
    assert np.array_equal(v, w.astype(np.float16).astype(np.float32))
    assert np.array_equal(np.signbit(v[w == 0]), np.signbit(w[w == 0]))  # +0 stays +0 (pruned), -0 stays -0
    assert np.array_equal(H.half_values(H.half_bits(w, "fp16"), "fp16"), v)


@pytest.mark.parametrize("dtype,bad", [("fp16", 65520.0), ("bf16", 3.4028235e38), ("fp16", np.nan), ("bf16", np.inf)])
def test_casts_refuse_overflow_nan_and_inf(dtype, bad):
    with pytest.raises(RunError, match="overflows|NaN or infinite"):
        H.half_bits(np.array([1.0, bad], np.float32), dtype)
    assert H.half_bits(np.array([65504.0], np.float32), "fp16").tolist() == [0x7BFF]  # the largest fp16

