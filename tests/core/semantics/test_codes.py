"""lwdsl.semantics.codes: weight codes and scales (integer forms, ternary, binary), training at fixed
scales, agreement (framework-free)."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lwdsl.errors import RunError
from lwdsl.semantics import codes as W

F32 = np.float32
TINY = 2.0**-126


def test_docstring_examples_run():
    result = doctest.testmod(W)
    assert result.attempted and not result.failed


def _qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def _bits_of(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


# ----------------------------------------------------------------------------- weights


@st.composite
def weights(draw):
    """(w, bits): channels of random floats, planted ties at exact half codes, zeros, tiny
    (floored or subnormal) values; zeros sprinkled everywhere."""
    bits = draw(st.integers(2, 8))
    q = _qmax(bits)
    out = draw(st.integers(1, 5))
    inner = draw(st.sampled_from([(), (1,), (4,), (2, 3), (2, 1, 3)]))
    n = int(np.prod(inner)) if inner else 1
    rows = []
    for _ in range(out):
        kind = draw(st.sampled_from(["random", "ties", "zeros", "tiny", "narrow"]))
        if kind == "random":
            row = draw(hnp.arrays(F32, n, elements=st.floats(-(2.0**127), 2.0**127, width=32)))
        elif kind == "narrow":
            row = draw(hnp.arrays(F32, n, elements=st.floats(-2.0, 2.0, width=32)))
        elif kind == "ties":  # scale is exactly 2^e, every other value is (k + 1/2) * 2^e
            e = draw(st.integers(-110, 100))
            ks = draw(hnp.arrays(np.int64, n, elements=st.integers(-q, q - 1)))
            row = ((ks + 0.5) * 2.0**e).astype(F32)
            row[0] = F32(draw(st.sampled_from([q, -q])) * 2.0**e)
        elif kind == "zeros":
            row = draw(st.sampled_from([np.zeros(n, F32), -np.zeros(n, F32)]))
        else:
            row = draw(hnp.arrays(F32, n, elements=st.floats(-(2.0**-116), 2.0**-116, width=32)))
        zero = draw(hnp.arrays(bool, n))
        row = np.where(zero, F32(0), row).astype(F32)
        rows.append(row)
    return np.stack(rows).reshape((out,) + inner), bits


@settings(max_examples=300, deadline=None)
@given(weights(), st.sampled_from(["per_channel", "per_tensor"]))
def test_fixed_point_codes_and_scale_bit_identical(wb, granularity):
    w, bits = wb
    wq = W.quantize_weight(w, bits, granularity)
    again = W.quantize_weight(wq.dequantize(), bits, granularity)
    assert np.array_equal(again.codes, wq.codes)
    assert np.array_equal(_bits_of(again.scale), _bits_of(wq.scale))
    assert (again.axis, again.bits) == (wq.axis, wq.bits)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_scale_identity_exhaustive_over_a_binade(bits):
    """fl(fl(q * fl(m / q)) / q) == fl(m / q) for every float32 m in [1, 2): the reason the
    re-quantized scale is bit-identical although m' = q * scale may differ from m by an ulp."""
    q = F32(_qmax(bits))
    m = (np.arange(1 << 23, dtype=np.uint32) | np.uint32(0x3F800000)).view(F32)
    s = m / q
    assert np.array_equal(_bits_of((q * s) / q), _bits_of(s))


@pytest.mark.parametrize("exponent", [-121, -120, -119, 0, 126, 127])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fixed_point_over_binades_at_the_edges(exponent, bits):
    """Every 61st float32 of a binade (near the 2^-126 floor, around 1, up to the float32
    maximum) as a channel maximum, beside a negative multiple and a zero."""
    m = (np.arange(0, 1 << 23, 61, dtype=np.uint32) | np.uint32((exponent + 127) << 23)).view(F32)
    q = F32(_qmax(bits))
    with np.errstate(over="ignore"):
        m = m[np.isfinite(q * (m / q))]  # the last ulps below the maximum are refused (tested below)
    w = np.stack([m, -m * F32(0.3), np.zeros_like(m)], axis=1)
    wq = W.quantize_weight(w, bits)
    again = W.quantize_weight(wq.dequantize(), bits)
    assert np.array_equal(again.codes, wq.codes)
    assert np.array_equal(_bits_of(again.scale), _bits_of(wq.scale))


@settings(max_examples=200, deadline=None)
@given(weights())
def test_error_bound_range_zeros_and_max(wb):
    w, bits = wb
    q = _qmax(bits)
    wq = W.quantize_weight(w, bits)
    assert wq.codes.dtype == np.int8 and wq.codes.shape == w.shape
    assert wq.scale.dtype == np.float32 and wq.scale.shape == (w.shape[0],) and wq.axis == 0
    assert np.abs(wq.codes.astype(int)).max() <= q
    assert np.all(wq.codes[w == 0] == 0)
    deq = wq.dequantize()
    assert deq.dtype == np.float32
    assert np.all(deq[w == 0] == 0)
    s = wq.scale.astype(np.float64).reshape((-1,) + (1,) * (w.ndim - 1))
    assert np.all(np.abs(w.astype(np.float64) - deq) <= s * (0.5 + 2.0**-16))
    m = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    for c in range(w.shape[0]):
        if m[c] == 0:
            assert wq.scale[c] == 1.0
        elif m[c] / q >= TINY:
            assert wq.scale[c] == F32(m[c]) / F32(q)
            top = np.abs(w[c]) == m[c]
            assert np.all(wq.codes[c][top] == np.sign(w[c][top]) * q)
        else:  # below qmax * 2^-126: a zero channel
            assert wq.scale[c] == 1.0 and not wq.codes[c].any()


@pytest.mark.parametrize("bits,q", [(8, 127), (4, 7), (2, 1)])
def test_narrow_symmetric_range_and_ties_to_even(bits, q):
    step = 2.0**-6
    halves = np.arange(-q, q) + 0.5  # every tie between two codes
    w = np.concatenate([[q], halves]).astype(np.float64) * step
    wq = W.quantize_weight(w.astype(F32)[None, :], bits)
    assert wq.scale.tolist() == [step]
    assert wq.codes[0, 0] == q
    assert wq.codes[0, 1:].tolist() == np.rint(halves).astype(int).tolist()
    assert all(c % 2 == 0 for c in wq.codes[0, 1:].tolist())
    assert wq.codes.min() >= -q and (wq.codes == -q).sum() <= 1


def test_per_channel_is_per_tensor_of_each_channel_and_layout_free():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((6, 3, 3, 3)) * rng.uniform(0.01, 10, (6, 1, 1, 1))).astype(F32)
    w[2] = 0
    wq = W.quantize_weight(w, 4)
    for c in range(6):
        one = W.quantize_weight(w[c], 4, "per_tensor")
        assert one.scale.shape == () and one.axis is None
        assert np.array_equal(one.codes, wq.codes[c]) and one.scale == wq.scale[c]
    assert wq.scale[2] == 1.0 and not wq.codes[2].any()
    fortran = W.quantize_weight(np.asfortranarray(w), 4)
    strided = W.quantize_weight(np.concatenate([w, w], axis=1)[:, ::2], 4)
    assert np.array_equal(fortran.codes, wq.codes) and np.array_equal(_bits_of(fortran.scale), _bits_of(wq.scale))
    assert np.array_equal(strided.codes, W.quantize_weight(np.ascontiguousarray(np.concatenate([w, w], axis=1)[:, ::2]), 4).codes)
    expect = wq.codes.astype(F32) * wq.scale[:, None, None, None]
    assert np.array_equal(_bits_of(wq.dequantize()), _bits_of(expect))
    pt = W.quantize_weight(w, 8, "per_tensor")
    assert pt.scale == F32(np.abs(w).max()) / F32(127)


def test_per_tensor_differs_from_per_channel_when_channels_differ():
    w = np.array([[1.0, 0.5], [0.015625, 0.0078125]], F32)
    assert W.quantize_weight(w, 8).codes.tolist() == [[127, 64], [127, 64]]
    assert W.quantize_weight(w, 8, "per_tensor").codes.tolist() == [[127, 64], [2, 1]]


def test_deterministic_and_float64_input_rounds_to_float32_first():
    rng = np.random.default_rng(5)
    w64 = rng.standard_normal((4, 9))
    a, b = W.quantize_weight(w64), W.quantize_weight(w64.astype(F32))
    assert np.array_equal(a.codes, b.codes) and np.array_equal(_bits_of(a.scale), _bits_of(b.scale))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_weights_raise_run_error(bad):
    w = np.ones((2, 3), F32)
    w[1, 2] = bad
    with pytest.raises(RunError, match="NaN or infinite"):
        W.quantize_weight(w)


def test_overflowing_weight_raises_and_just_below_is_fine():
    top = np.finfo(F32).max
    with pytest.raises(RunError, match="overflows"):
        W.quantize_weight(np.array([[top, 1.0]], F32))
    W.quantize_weight(np.array([[top]], F32), 2)  # qmax = 1: scale = m, no overflow
    ok = W.quantize_weight(np.array([[F32(2.0**127)]], F32))
    assert np.isfinite(ok.dequantize()).all()


@pytest.mark.parametrize("bits", [0, 1, 9, 16])
def test_bits_outside_2_to_8_are_refused(bits):
    with pytest.raises(ValueError, match="2..8"):
        W.quantize_weight(np.ones((2, 2), F32), bits)


def test_bad_granularity_and_scalar_per_channel_are_refused():
    with pytest.raises(ValueError, match="granularity"):
        W.quantize_weight(np.ones((2, 2), F32), 8, "per_row")
    with pytest.raises(ValueError, match="axis 0"):
        W.quantize_weight(np.float32(1.0))
    assert W.quantize_weight(np.float32(-0.5), 8, "per_tensor").codes.tolist() == -127


# ----------------------------------------------------------------------------- agreement


def test_agreement_counts_equal_codes_by_value():
    a = np.array([[1, -2], [127, -127]], np.int8)
    assert W.agreement(a, a.astype(np.int32)) == (4, 4)
    assert W.agreement(a, np.array([[1, 2], [127, 0]], np.int64)) == (2, 4)
    assert W.agreement(np.zeros(0, np.int8), np.zeros(0, np.int8)) == (0, 0)
    with pytest.raises(ValueError, match="shape"):
        W.agreement(a, a.reshape(-1))


# ----------------------------------------------------------------------------- low-bit forms
#
# References written independently of the module: exact sums (math.fsum), one row at a time.
# The drawn weights are multiples of 2^-12 in [-8, 8], so every float64 sum is exact and the
# references agree with numpy's pairwise sums bit for bit.


grid_rows = st.integers(1, 6).flatmap(
    lambda out: st.tuples(
        st.just(out),
        st.sampled_from([(1,), (5,), (2, 3), (3, 2, 2)]),
        st.lists(st.sampled_from(["random", "zeros", "sparse", "equal"]), min_size=out, max_size=out),
        st.integers(0, 2**32 - 1),
    )
)


def _grid_weight(spec) -> np.ndarray:
    out, inner, kinds, seed = spec
    rng = np.random.default_rng(seed)
    n = int(np.prod(inner))
    rows = []
    for kind in kinds:
        row = rng.integers(-(2**15), 2**15 + 1, n).astype(np.float32) * F32(2.0**-12)
        if kind == "zeros":
            row[:] = 0
        elif kind == "sparse":
            row[rng.random(n) < 0.6] = 0
            row[rng.random(n) < 0.2] = -0.0
        elif kind == "equal":
            row[:] = row[0]
        rows.append(row)
    return np.stack(rows).reshape((out, *inner))


def _ternary_ref(w: np.ndarray):
    codes, scales = np.zeros(w.shape, np.int8).reshape(w.shape[0], -1), []
    for i, row in enumerate(w.reshape(w.shape[0], -1)):
        mags = [abs(float(v)) for v in row]
        delta = F32(0.7 * (math.fsum(mags) / len(mags)))
        kept = [j for j, m in enumerate(mags) if m > delta]
        scale = F32(math.fsum(mags[j] for j in kept) / len(kept)) if kept else F32(0)
        if scale < TINY:
            scales.append(F32(1))
            continue
        scales.append(scale)
        for j in kept:
            codes[i, j] = 1 if row[j] > 0 else -1
    return codes.reshape(w.shape), np.array(scales, np.float32)


@settings(max_examples=200, deadline=None)
@given(grid_rows)
def test_ternary_is_twn_per_channel(spec):
    w = _grid_weight(spec)
    q = W.quantize_ternary(w)
    codes, scales = _ternary_ref(w)
    assert q.bits == 2 and q.axis == 0 and q.codes.dtype == np.int8
    assert np.array_equal(q.codes, codes) and q.scale.tobytes() == scales.tobytes()
    assert (q.codes[w == 0] == 0).all()  # zeros (pruned, -0.0 too) stay code 0
    # per tensor: the same rule over the whole tensor, on every channel at once
    t = W.quantize_ternary(w, "per_tensor")
    tc, ts = _ternary_ref(w.reshape(1, -1))
    assert t.axis is None and t.scale.shape == () and np.array_equal(t.codes, tc.reshape(w.shape)) and t.scale == ts[0]


def test_ternary_threshold_is_strict_and_documented_example():
    # [1, d, 0, 0] with d = f32(0.7 * mean) exactly: |w| == delta gets code 0
    d = F32(0.5)
    for _ in range(50):
        d = F32(0.7 * (1.0 + float(d)) / 4)
    w = np.array([[1.0, d, 0.0, 0.0], [-1.0, -d, 0.0, -0.0]], np.float32)
    assert F32(0.7 * np.abs(w[0]).astype(np.float64).mean()) == d
    q = W.quantize_ternary(w)
    assert q.codes.tolist() == [[1, 0, 0, 0], [-1, 0, 0, 0]] and q.scale.tolist() == [1.0, 1.0]
    w2 = w.copy()
    w2[:, 1] = np.nextafter(d, F32(1)) * np.sign(w2[:, 1])  # one ulp above: kept
    assert W.quantize_ternary(w2).codes[:, 1].tolist() == [1, -1]


def _binary_ref(w: np.ndarray):
    rows = w.reshape(w.shape[0], -1)
    scales = [F32(math.fsum(abs(float(v)) for v in row) / row.size) for row in rows]
    scales = np.array([s if s >= TINY else 0 for s in scales], np.float32)
    codes = np.where((rows >= 0) | (scales[:, None] == 0), 1, -1).astype(np.int8)
    return codes.reshape(w.shape), scales


@settings(max_examples=200, deadline=None)
@given(grid_rows)
def test_binary_is_bwn_per_channel(spec):
    w = _grid_weight(spec)
    q = W.quantize_binary(w)
    codes, scales = _binary_ref(w)
    assert q.bits == 1 and np.array_equal(q.codes, codes) and q.scale.tobytes() == scales.tobytes()
    assert set(np.unique(q.codes)) <= {-1, 1}
    dq = q.dequantize()
    zero_rows = ~w.reshape(w.shape[0], -1).any(axis=1)
    assert not dq.reshape(w.shape[0], -1)[zero_rows].any()  # an all-zero channel stays zero
    assert (q.codes[np.signbit(w) & (w == 0)] == 1).all()  # -0.0 is code +1, like +0.0


@pytest.mark.parametrize("form", ["ternary", "binary"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_low_bit_refuses_nan_and_inf(form, bad):
    with pytest.raises(RunError, match="NaN or infinite"):
        W.quantize_as(np.array([[1.0, bad]], np.float32), form)


def test_quantize_as_dispatches_to_the_documented_rules():
    w = np.random.default_rng(1).normal(size=(4, 9)).astype(np.float32)
    for dtype, bits in (("int8", 8), ("int4", 4), ("int2", 2)):
        a, b = W.quantize_as(w, dtype, "per_tensor"), W.quantize_weight(w, bits, "per_tensor")
        assert np.array_equal(a.codes, b.codes) and a.scale.tobytes() == b.scale.tobytes() and a.bits == bits
    assert W.FORM_BITS == {"int8": 8, "int4": 4, "int2": 2, "ternary": 2, "binary": 1}
    with pytest.raises(ValueError, match="unknown weight form"):
        W.quantize_as(w, "int3")


@settings(max_examples=150, deadline=None)
@given(grid_rows, st.sampled_from(["int4", "int2", "ternary", "binary"]), st.sampled_from(["per_channel", "per_tensor"]))
def test_training_grid_keeps_every_low_bit_form_fixed(spec, form, granularity):
    """At the fixed scales, the quantized weight is a fixed point of snap, and codes_with_scale
    finds the codes again (what training after quantize relies on, both backends)."""
    w = _grid_weight(spec)
    q = W.quantize_as(w, form, granularity)
    dq = q.dequantize()
    assert np.array_equal(W.codes_with_scale(dq, q.scale, q.bits), q.codes)
    assert W.snap(dq, q.scale, q.bits).tobytes() == dq.tobytes()


def test_snap_moves_to_the_nearest_level_and_binary_by_sign():
    s = np.array([0.5, 0.0], np.float32)
    w = np.array([[0.26, -0.24, -0.25, 0.75], [0.3, -0.3, -0.0, 0.0]], np.float32)
    assert W.codes_with_scale(w[:1], s[:1], 2).tolist() == [[1, 0, 0, 1]]  # -0.25 / 0.5 = -0.5: ties to even
    assert W.codes_with_scale(w, s, 1).tolist() == [[1, -1, -1, 1], [1, 1, 1, 1]]  # scale 0: +1
    assert W.snap(w, s, 1).tolist() == [[0.5, -0.5, -0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]


