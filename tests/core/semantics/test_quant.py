"""lwdsl.semantics.quant, the one numeric definition of quantization (framework-free)."""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lwdsl.errors import RunError, UsageError
from lwdsl.semantics import quant as Q

F32 = np.float32
TINY = 2.0**-126


def _qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def _bits_of(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def test_docstring_examples_run():
    result = doctest.testmod(Q)
    assert result.attempted >= 5 and not result.failed


def test_module_imports_numpy_only():
    import subprocess
    import sys

    code = "import sys, lwdsl.semantics.quant; print([m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


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
    wq = Q.quantize_weight(w, bits, granularity)
    again = Q.quantize_weight(wq.dequantize(), bits, granularity)
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
    wq = Q.quantize_weight(w, bits)
    again = Q.quantize_weight(wq.dequantize(), bits)
    assert np.array_equal(again.codes, wq.codes)
    assert np.array_equal(_bits_of(again.scale), _bits_of(wq.scale))


@settings(max_examples=200, deadline=None)
@given(weights())
def test_error_bound_range_zeros_and_max(wb):
    w, bits = wb
    q = _qmax(bits)
    wq = Q.quantize_weight(w, bits)
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
    wq = Q.quantize_weight(w.astype(F32)[None, :], bits)
    assert wq.scale.tolist() == [step]
    assert wq.codes[0, 0] == q
    assert wq.codes[0, 1:].tolist() == np.rint(halves).astype(int).tolist()
    assert all(c % 2 == 0 for c in wq.codes[0, 1:].tolist())
    assert wq.codes.min() >= -q and (wq.codes == -q).sum() <= 1


def test_per_channel_is_per_tensor_of_each_channel_and_layout_free():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((6, 3, 3, 3)) * rng.uniform(0.01, 10, (6, 1, 1, 1))).astype(F32)
    w[2] = 0
    wq = Q.quantize_weight(w, 4)
    for c in range(6):
        one = Q.quantize_weight(w[c], 4, "per_tensor")
        assert one.scale.shape == () and one.axis is None
        assert np.array_equal(one.codes, wq.codes[c]) and one.scale == wq.scale[c]
    assert wq.scale[2] == 1.0 and not wq.codes[2].any()
    fortran = Q.quantize_weight(np.asfortranarray(w), 4)
    strided = Q.quantize_weight(np.concatenate([w, w], axis=1)[:, ::2], 4)
    assert np.array_equal(fortran.codes, wq.codes) and np.array_equal(_bits_of(fortran.scale), _bits_of(wq.scale))
    assert np.array_equal(strided.codes, Q.quantize_weight(np.ascontiguousarray(np.concatenate([w, w], axis=1)[:, ::2]), 4).codes)
    expect = wq.codes.astype(F32) * wq.scale[:, None, None, None]
    assert np.array_equal(_bits_of(wq.dequantize()), _bits_of(expect))
    pt = Q.quantize_weight(w, 8, "per_tensor")
    assert pt.scale == F32(np.abs(w).max()) / F32(127)


def test_per_tensor_differs_from_per_channel_when_channels_differ():
    w = np.array([[1.0, 0.5], [0.015625, 0.0078125]], F32)
    assert Q.quantize_weight(w, 8).codes.tolist() == [[127, 64], [127, 64]]
    assert Q.quantize_weight(w, 8, "per_tensor").codes.tolist() == [[127, 64], [2, 1]]


def test_deterministic_and_float64_input_rounds_to_float32_first():
    rng = np.random.default_rng(5)
    w64 = rng.standard_normal((4, 9))
    a, b = Q.quantize_weight(w64), Q.quantize_weight(w64.astype(F32))
    assert np.array_equal(a.codes, b.codes) and np.array_equal(_bits_of(a.scale), _bits_of(b.scale))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_weights_raise_run_error(bad):
    w = np.ones((2, 3), F32)
    w[1, 2] = bad
    with pytest.raises(RunError, match="NaN or infinite"):
        Q.quantize_weight(w)


def test_overflowing_weight_raises_and_just_below_is_fine():
    top = np.finfo(F32).max
    with pytest.raises(RunError, match="overflows"):
        Q.quantize_weight(np.array([[top, 1.0]], F32))
    Q.quantize_weight(np.array([[top]], F32), 2)  # qmax = 1: scale = m, no overflow
    ok = Q.quantize_weight(np.array([[F32(2.0**127)]], F32))
    assert np.isfinite(ok.dequantize()).all()


@pytest.mark.parametrize("bits", [0, 1, 9, 16])
def test_bits_outside_2_to_8_are_refused(bits):
    with pytest.raises(ValueError, match="2..8"):
        Q.quantize_weight(np.ones((2, 2), F32), bits)


def test_bad_granularity_and_scalar_per_channel_are_refused():
    with pytest.raises(ValueError, match="granularity"):
        Q.quantize_weight(np.ones((2, 2), F32), 8, "per_row")
    with pytest.raises(ValueError, match="axis 0"):
        Q.quantize_weight(np.float32(1.0))
    assert Q.quantize_weight(np.float32(-0.5), 8, "per_tensor").codes.tolist() == -127


# ----------------------------------------------------------------------------- activations


def test_act_qparams_known_values():
    aq = Q.act_qparams(-1.0, 3.0)
    assert aq.scale == float(F32(4.0) / F32(255)) and aq.zero_point == 64 and (aq.qmin, aq.qmax) == (0, 255)
    sq = Q.act_qparams(-1.0, 3.0, signed=True)
    assert sq.scale == aq.scale and sq.zero_point == -64 and (sq.qmin, sq.qmax) == (-128, 127)
    four = Q.act_qparams(-1.0, 3.0, bits=4)
    assert four.scale == float(F32(4.0) / F32(15)) and (four.qmin, four.qmax) == (0, 15)


def test_act_range_is_widened_to_contain_zero():
    pos = Q.act_qparams(0.5, 2.0)
    assert pos.zero_point == 0 and pos.scale == float(F32(2.0) / F32(255))
    neg = Q.act_qparams(-2.0, -0.5)
    assert neg.zero_point == 255 and neg.scale == float(F32(2.0) / F32(255))
    signed_pos = Q.act_qparams(0.5, 2.0, signed=True)
    assert signed_pos.zero_point == -128


def test_act_empty_range_gets_scale_one():
    assert Q.act_qparams(0.0, 0.0) == Q.ActQuant(1.0, 0, 0, 255)
    assert Q.act_qparams(0.0, 0.0, signed=True) == Q.ActQuant(1.0, -128, -128, 127)  # qmin - rint(0)


def test_act_bad_ranges():
    with pytest.raises(RunError, match="not finite"):
        Q.act_qparams(float("nan"), 1.0)
    with pytest.raises(RunError, match="not finite"):
        Q.act_qparams(0.0, float("inf"))
    with pytest.raises(RunError, match="too wide"):
        Q.act_qparams(-3e38, 3e38)
    with pytest.raises(ValueError, match="lo"):
        Q.act_qparams(2.0, 1.0)


ranges = st.tuples(st.floats(-1e6, 1e6, width=32), st.floats(-1e6, 1e6, width=32)).map(sorted)


@settings(max_examples=200, deadline=None)
@given(ranges, st.booleans(), st.integers(2, 16), hnp.arrays(F32, 20, elements=st.floats(-2e6, 2e6, width=32)))
def test_fake_quantize_properties(r, signed, bits, x):
    lo, hi = r
    aq = Q.act_qparams(lo, hi, bits, signed)
    assert aq.qmin <= aq.zero_point <= aq.qmax
    s = F32(aq.scale)
    assert float(s) == aq.scale and s > 0
    y = Q.fake_quantize(x, aq)
    assert y.dtype == np.float32
    assert Q.fake_quantize(np.zeros(3, F32), aq).tolist() == [0.0, 0.0, 0.0]  # 0 is exact
    assert np.array_equal(_bits_of(Q.fake_quantize(y, aq)), _bits_of(y))  # idempotent
    grid_lo, grid_hi = (aq.qmin - aq.zero_point) * float(s), (aq.qmax - aq.zero_point) * float(s)
    assert np.all(y >= F32(grid_lo)) and np.all(y <= F32(grid_hi))
    inside = (x >= grid_lo) & (x <= grid_hi)
    assert np.all(np.abs(x[inside].astype(np.float64) - y[inside]) <= float(s) * (0.5 + 2.0**-10))
    assert np.all(y[x > grid_hi] == F32(grid_hi)) and np.all(y[x < grid_lo] == F32(grid_lo))
    if lo < 0 < hi:  # the range is covered up to rounding of the zero point
        assert grid_lo <= lo + float(s) and grid_hi >= hi - float(s)


def test_fake_quantize_inf_saturates_nan_propagates():
    aq = Q.act_qparams(-1.0, 3.0)
    y = Q.fake_quantize(np.array([np.inf, -np.inf, np.nan], F32), aq)
    assert y[0] == F32((255 - 64) * F32(aq.scale)) and y[1] == F32(-64 * F32(aq.scale)) and np.isnan(y[2])


# ----------------------------------------------------------------------------- observers

batches = st.lists(hnp.arrays(F32, st.integers(0, 30), elements=st.floats(-1e4, 1e4, width=32)), min_size=1, max_size=6)


@settings(max_examples=100, deadline=None)
@given(batches)
def test_minmax_is_exact_and_order_free(bs):
    data = np.concatenate(bs)
    if not data.size:
        return
    ob = Q.RangeObserver("minmax")
    for b in bs:
        ob.update(b)
    assert ob.range() == (float(data.min()), float(data.max()))
    for perm in itertools.islice(itertools.permutations(bs), 6):
        other = Q.RangeObserver("minmax")
        for b in perm:
            other.update(b)
        assert other.range() == ob.range()


@settings(max_examples=100, deadline=None)
@given(batches, st.sampled_from(["percentile", "mse"]), st.sampled_from([2, 16, 64]))
def test_histogram_ranges_never_wider_than_minmax(bs, method, bins):
    data = np.concatenate(bs)
    if not data.size:
        return
    ob = Q.RangeObserver(method, bins=bins, percentile=99.0)
    for b in bs:
        ob.update(b)
    lo, hi = ob.range()
    assert float(data.min()) <= lo <= hi <= float(data.max())
    counts, hlo, hhi = ob.histogram()
    assert counts.shape == (bins,) and counts.sum() == data.size
    assert hlo <= data.min() and hhi >= data.max()


def _sample(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)  # growing spread: the histogram has to widen
    return [(rng.standard_normal(25_000) * s + o).astype(F32) for s, o in ((0.5, 0), (1, 1), (2, -1), (4, 3), (1, 0), (8, 0))]


@pytest.mark.parametrize("p", [99.99, 99.0, 90.0])
def test_percentile_close_to_numpy(p):
    bs = _sample(1)
    ob = Q.RangeObserver("percentile", percentile=p)
    for b in bs:
        ob.update(b)
    counts, hlo, hhi = ob.histogram()
    width = (hhi - hlo) / counts.size
    x = np.sort(np.concatenate(bs).astype(np.float64))
    n = x.size
    lo, hi = ob.range()
    for got, q in ((hi, p), (lo, 100 - p)):
        k = int(np.ceil(n * q / 100))  # 1-based rank the histogram bin holds
        gap = x[min(k, n - 1)] - x[max(k - 2, 0)]  # how far numpy's interpolated rank can be
        assert abs(got - np.percentile(x, q)) <= width * 1.001 + gap
    assert width < (x[-1] - x[0]) / 2048 * 4.01  # here the grown histogram spans < 4x the data


def test_percentile_of_non_negative_data_keeps_lo_at_min():
    rng = np.random.default_rng(2)
    ob = Q.RangeObserver("percentile")
    x = np.maximum(rng.standard_normal(100_000), 0).astype(F32)
    ob.update(x)
    lo, hi = ob.range()
    assert lo == 0.0 and 0 < hi < x.max()


def _true_mse(x: np.ndarray, lo: float, hi: float) -> float:
    return float(np.mean((Q.fake_quantize(x, Q.act_qparams(lo, hi)).astype(np.float64) - x) ** 2))


@pytest.mark.parametrize("dist", ["laplace", "t3", "cauchy"])
def test_mse_clips_heavy_tails(dist):
    rng = np.random.default_rng(4)
    x = {"laplace": rng.laplace(size=200_000), "cauchy": rng.standard_cauchy(200_000), "t3": rng.standard_t(3, 200_000)}[dist].astype(F32)
    ob = Q.RangeObserver("mse")
    for b in np.array_split(x, 4):
        ob.update(b)
    lo, hi = ob.range()
    assert x.min() < lo < hi < x.max()
    if dist != "cauchy":  # documented limit: the uniform model misjudges a core far narrower than a step
        assert _true_mse(x, lo, hi) < 0.9 * _true_mse(x, float(x.min()), float(x.max()))


def test_mse_ignores_exact_zeros():
    """0 is on every grid, so ReLU zeros cost nothing: their number does not move the range."""
    rng = np.random.default_rng(9)
    pos = np.abs(rng.laplace(size=50_000)).astype(F32)
    ranges = []
    for zeros in (1, 200_000):
        ob = Q.RangeObserver("mse")
        ob.update(np.concatenate([np.zeros(zeros, F32), pos[:25_000]]))
        ob.update(pos[25_000:])
        ranges.append(ob.range())
        assert ob.histogram()[0].sum() == zeros + pos.size
    assert ranges[0] == ranges[1] and ranges[0][0] == 0.0 and ranges[0][1] < pos.max()


def test_mse_keeps_the_whole_range_of_uniform_data():
    x = np.random.default_rng(6).uniform(-1, 3, 100_000).astype(F32)
    ob = Q.RangeObserver("mse")
    ob.update(x)
    lo, hi = ob.range()
    assert lo <= x.min() + 0.01 and hi >= x.max() - 0.01


def _model_error(counts, edges, lo, hi, levels=255.0):
    ctr = (edges[:-1] + edges[1:]) / 2
    l, h = min(lo, 0.0), max(hi, 0.0)
    err = 0.0
    for c, n in zip(ctr, counts):
        err += n * ((c - h) ** 2 if c > h else (l - c) ** 2 if c < l else ((h - l) / levels) ** 2 / 12)
    return err


def test_mse_search_equals_brute_force_over_the_documented_candidates():
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.laplace(size=5000), rng.uniform(-40, 25, 30)]).astype(F32)
    assert not (x == 0).any()
    ob = Q.RangeObserver("mse", bins=32)
    ob.update(x)
    counts, hlo, hhi = ob.histogram()
    edges = hlo + np.arange(33) * (hhi - hlo) / 32
    cands = np.clip(edges, x.min(), x.max()).astype(np.float64)
    best = min(
        ((_model_error(counts, edges, l, h), min(l, 0.0), max(h, 0.0)) for l in cands for h in cands if min(l, 0) < max(h, 0)),
        key=lambda t: t[0],
    )
    lo, hi = ob.range()
    assert _model_error(counts, edges, lo, hi) == pytest.approx(best[0], rel=1e-9)
    assert (lo, hi) == pytest.approx((best[1], best[2]), abs=1e-9)


def test_growth_merges_whole_bins_exactly_as_documented():
    base = np.concatenate([[0.0, 16.0], np.arange(16) + 0.5, np.arange(8) + 0.25]).astype(F32)
    ob = Q.RangeObserver("percentile", bins=16)
    ob.update(base)
    h1, lo, hi = ob.histogram()
    assert (lo, hi) == (0.0, 16.0)
    ob.update(np.array([40.25], F32))  # k = 2: width 4, j = 0
    h2, lo2, hi2 = ob.histogram()
    assert (lo2, hi2) == (0.0, 64.0)
    assert h2[:4].tolist() == h1.reshape(4, 4).sum(axis=1).tolist() and h2[10] == 1 and h2.sum() == h1.sum() + 1
    ob = Q.RangeObserver("percentile", bins=16)
    ob.update(base)
    ob.update(np.array([-5.0], F32))  # k = 1: width 2, j = ceil(5 / 2) = 3, old bin i -> 3 + i // 2
    h3, lo3, hi3 = ob.histogram()
    assert (lo3, hi3) == (-6.0, 26.0)
    assert h3[3:11].tolist() == h1.reshape(8, 2).sum(axis=1).tolist() and h3[0] == 1 and h3.sum() == h1.sum() + 1


def test_memory_is_bounded_and_counts_are_kept():
    rng = np.random.default_rng(8)
    ob = Q.RangeObserver("mse", bins=128)
    total = 0
    for i in range(60):
        b = (rng.standard_normal(500) * 1.5**i).astype(F32)
        ob.update(b)
        total += b.size
        counts, _, _ = ob.histogram()
        assert counts.shape == (128,) and counts.sum() == total
    lo, hi = ob.range()
    assert lo < 0 < hi


def test_single_value_then_spread():
    ob = Q.RangeObserver("percentile", bins=8)
    ob.update(np.zeros(100, F32))  # a ReLU batch of zeros: no histogram width yet
    assert ob.range() == (0.0, 0.0)
    counts, lo, hi = ob.histogram()
    assert counts[0] == 100 and lo == hi == 0.0
    ob.update(np.array([1.0, 2.0], F32))
    counts, lo, hi = ob.histogram()
    assert (lo, hi) == (0.0, 2.0) and counts[0] == 100 and counts.sum() == 102


def test_observer_errors():
    with pytest.raises(RunError, match="no data"):
        Q.RangeObserver("mse").range()
    with pytest.raises(RunError, match="NaN or infinite"):
        Q.RangeObserver().update(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="method"):
        Q.RangeObserver("entropy")
    with pytest.raises(ValueError, match="bins"):
        Q.RangeObserver("mse", bins=1)
    with pytest.raises(ValueError, match="keeps no histogram"):
        Q.RangeObserver().histogram()


# ----------------------------------------------------------------------------- agreement


def test_agreement_counts_equal_codes_by_value():
    a = np.array([[1, -2], [127, -127]], np.int8)
    assert Q.agreement(a, a.astype(np.int32)) == (4, 4)
    assert Q.agreement(a, np.array([[1, 2], [127, 0]], np.int64)) == (2, 4)
    assert Q.agreement(np.zeros(0, np.int8), np.zeros(0, np.int8)) == (0, 0)
    with pytest.raises(ValueError, match="shape"):
        Q.agreement(a, a.reshape(-1))


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
    q = Q.quantize_ternary(w)
    codes, scales = _ternary_ref(w)
    assert q.bits == 2 and q.axis == 0 and q.codes.dtype == np.int8
    assert np.array_equal(q.codes, codes) and q.scale.tobytes() == scales.tobytes()
    assert (q.codes[w == 0] == 0).all()  # zeros (pruned, -0.0 too) stay code 0
    # per tensor: the same rule over the whole tensor, on every channel at once
    t = Q.quantize_ternary(w, "per_tensor")
    tc, ts = _ternary_ref(w.reshape(1, -1))
    assert t.axis is None and t.scale.shape == () and np.array_equal(t.codes, tc.reshape(w.shape)) and t.scale == ts[0]


def test_ternary_threshold_is_strict_and_documented_example():
    # [1, d, 0, 0] with d = f32(0.7 * mean) exactly: |w| == delta gets code 0
    d = F32(0.5)
    for _ in range(50):
        d = F32(0.7 * (1.0 + float(d)) / 4)
    w = np.array([[1.0, d, 0.0, 0.0], [-1.0, -d, 0.0, -0.0]], np.float32)
    assert F32(0.7 * np.abs(w[0]).astype(np.float64).mean()) == d
    q = Q.quantize_ternary(w)
    assert q.codes.tolist() == [[1, 0, 0, 0], [-1, 0, 0, 0]] and q.scale.tolist() == [1.0, 1.0]
    w2 = w.copy()
    w2[:, 1] = np.nextafter(d, F32(1)) * np.sign(w2[:, 1])  # one ulp above: kept
    assert Q.quantize_ternary(w2).codes[:, 1].tolist() == [1, -1]


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
    q = Q.quantize_binary(w)
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
        Q.quantize_as(np.array([[1.0, bad]], np.float32), form)


def test_quantize_as_dispatches_to_the_documented_rules():
    w = np.random.default_rng(1).normal(size=(4, 9)).astype(np.float32)
    for dtype, bits in (("int8", 8), ("int4", 4), ("int2", 2)):
        a, b = Q.quantize_as(w, dtype, "per_tensor"), Q.quantize_weight(w, bits, "per_tensor")
        assert np.array_equal(a.codes, b.codes) and a.scale.tobytes() == b.scale.tobytes() and a.bits == bits
    assert Q.FORM_BITS == {"int8": 8, "int4": 4, "int2": 2, "ternary": 2, "binary": 1}
    with pytest.raises(ValueError, match="unknown weight form"):
        Q.quantize_as(w, "int3")


@settings(max_examples=150, deadline=None)
@given(grid_rows, st.sampled_from(["int4", "int2", "ternary", "binary"]), st.sampled_from(["per_channel", "per_tensor"]))
def test_training_grid_keeps_every_low_bit_form_fixed(spec, form, granularity):
    """At the fixed scales, the quantized weight is a fixed point of snap, and codes_with_scale
    finds the codes again (what training after quantize relies on, both backends)."""
    w = _grid_weight(spec)
    q = Q.quantize_as(w, form, granularity)
    dq = q.dequantize()
    assert np.array_equal(Q.codes_with_scale(dq, q.scale, q.bits), q.codes)
    assert Q.snap(dq, q.scale, q.bits).tobytes() == dq.tobytes()


def test_snap_moves_to_the_nearest_level_and_binary_by_sign():
    s = np.array([0.5, 0.0], np.float32)
    w = np.array([[0.26, -0.24, -0.25, 0.75], [0.3, -0.3, -0.0, 0.0]], np.float32)
    assert Q.codes_with_scale(w[:1], s[:1], 2).tolist() == [[1, 0, 0, 1]]  # -0.25 / 0.5 = -0.5: ties to even
    assert Q.codes_with_scale(w, s, 1).tolist() == [[1, -1, -1, 1], [1, 1, 1, 1]]  # scale 0: +1
    assert Q.snap(w, s, 1).tolist() == [[0.5, -0.5, -0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]


# ----------------------------------------------------------------------------- packing


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([1, 2, 4]), st.lists(st.integers(0, 6), min_size=0, max_size=3), st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip_and_size(bits, dims, seed):
    shape = tuple(dims)
    lo, hi = (-1, 1) if bits == 1 else (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
    rng = np.random.default_rng(seed)
    codes = rng.integers(lo, hi + 1, shape).astype(np.int8)
    if bits == 1:
        codes[codes == 0] = 1
    packed = Q.pack_codes(codes, bits)
    n = int(np.prod(shape))
    assert packed.dtype == np.uint8 and packed.shape == (-(-n * bits // 8),)
    assert np.array_equal(Q.unpack_codes(packed, bits, shape), codes)


def test_pack_layout_is_little_endian_twos_complement():
    # int4: element 0 in the low nibble; -1 is 0xF, 7 is 0x7, -7 is 0x9
    assert Q.pack_codes(np.array([1, -1, 0, 7, -7], np.int8), 4).tolist() == [0xF1, 0x70, 0x09]
    # int2 / ternary: four per byte, element 0 in bits 0-1; -1 is 0b11
    assert Q.pack_codes(np.array([1, -1, 0, 1, -1], np.int8), 2).tolist() == [0b01001101, 0b11]
    # binary: eight per byte, element 0 in bit 0; +1 is 1, -1 is 0
    assert Q.pack_codes(np.array([1, -1, -1, -1, -1, -1, -1, -1, 1], np.int8), 1).tolist() == [1, 1]


def test_pack_refuses_codes_outside_the_form_and_unpack_refuses_damage():
    with pytest.raises(ValueError, match="outside the 4-bit range"):
        Q.pack_codes(np.array([8], np.int8), 4)
    with pytest.raises(ValueError, match="binary"):
        Q.pack_codes(np.array([0], np.int8), 1)
    with pytest.raises(ValueError, match="bits 1, 2 or 4"):
        Q.pack_codes(np.array([0], np.int8), 8)
    with pytest.raises(RunError, match="do not fit shape"):
        Q.unpack_codes(np.zeros(3, np.uint8), 4, (7,))
    with pytest.raises(RunError, match="damaged"):
        Q.unpack_codes(np.array([0x08], np.uint8), 4, (1,))  # -8 is outside the narrow range


def test_pack_state_round_trip_mixed_forms_and_activations():
    rng = np.random.default_rng(0)
    state = {f"l{i}.weight": rng.normal(size=(6, 5, 3)).astype(np.float32) for i in range(5)}
    state["l0.bias"] = rng.normal(size=6).astype(np.float32)
    state["other.scale"] = np.ones(3, np.float32)  # a model's own tensor named like a suffix stays
    forms = ["int8", "int4", "int2", "ternary", "binary"]
    quants = {f"l{i}": Q.quantize_as(state[f"l{i}.weight"], f, g) for i, (f, g) in enumerate(zip(forms, ["per_channel", "per_tensor"] * 3))}
    acts = {"l1": Q.act_qparams(-0.5, 2.0)}
    packed = Q.pack_state(state, quants, acts)
    assert packed["l0.weight.codes"].dtype == np.int8 and "l0.weight.shape" not in packed
    for i, bits in ((1, 4), (2, 2), (3, 2), (4, 1)):
        assert packed[f"l{i}.weight.codes"].dtype == np.uint8
        kept = int(np.count_nonzero(quants[f"l{i}"].codes)) if f"l{i}.weight.nonzero" in packed else 90
        assert packed[f"l{i}.weight.codes"].size == -(-kept * bits // 8)
        assert packed[f"l{i}.weight.shape"].tolist() == [6, 5, 3] and int(packed[f"l{i}.weight.bits"]) == bits
    assert not any(k.endswith(".nonzero") for k in packed)  # 90 weights: sparse would save under 256 bytes
    assert packed["l1.act.scale"].dtype == np.float32 and packed["l1.act.zero_point"].dtype == np.int32
    flat, back = Q.unpack_state(packed)
    assert set(flat) == set(state) and Q.unpack_act(packed) == acts
    for layer, q in quants.items():
        assert np.array_equal(back[layer].codes, q.codes) and back[layer].scale.tobytes() == q.scale.tobytes()
        assert back[layer].bits == q.bits and back[layer].axis == q.axis
        assert flat[f"{layer}.weight"].tobytes() == q.dequantize().tobytes()
    assert np.array_equal(flat["other.scale"], state["other.scale"])
    del packed["l2.weight.shape"]
    with pytest.raises(UsageError, match="no 'l2.weight.shape'"):
        Q.unpack_state(packed)


@pytest.mark.parametrize("form,factor", [("int4", 2.0), ("int2", 4.0), ("ternary", 4.0), ("binary", 8.0)])
def test_packed_codes_take_the_promised_fraction_of_int8(form, factor):
    w = np.random.default_rng(2).normal(size=(64, 800)).astype(np.float32)
    raw8 = Q.pack_state({}, {"l": Q.quantize_as(w, "int8")})["l.weight.codes"].nbytes
    q = Q.quantize_as(w, form)
    assert raw8 / Q.pack_codes(q.codes, q.bits).nbytes == factor  # all codes packed
    packed = Q.pack_state({}, {"l": q})
    stored = packed["l.weight.codes"].nbytes + (packed["l.weight.nonzero"].nbytes if "l.weight.nonzero" in packed else 0)
    assert raw8 / stored >= factor  # sparse packing only where it is smaller


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["int4", "int2", "ternary", "cluster"]), st.floats(0.0, 1.0), st.integers(1, 2000), st.integers(0, 2**32 - 1))
def test_sparse_packing_is_chosen_by_its_rule_and_is_lossless(form, density, n, seed):
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(3, n)) * (rng.random((3, n)) < density)).astype(np.float32)
    q = Q.quantize_as(w, form, bits=3) if form == "cluster" else Q.quantize_as(w, form)
    packed = Q.pack_state({}, {"l": q})
    size, kept = 3 * n, int(np.count_nonzero(q.codes))
    dense_bytes, sparse_bytes = -(-size * q.bits // 8), -(-size // 8) + -(-kept * q.bits // 8)
    sparse = 4 * sparse_bytes <= 3 * dense_bytes and dense_bytes - sparse_bytes >= 256
    assert ("l.weight.nonzero" in packed) == sparse == Q.sparse_pays(size, kept, q.bits)
    if sparse:
        assert packed["l.weight.nonzero"].size == -(-size // 8) and packed["l.weight.codes"].size == -(-kept * q.bits // 8)
        assert np.array_equal(np.unpackbits(packed["l.weight.nonzero"], count=size).reshape(3, n).astype(bool), q.codes != 0)
    _, back = Q.unpack_state(packed)
    assert np.array_equal(back["l"].codes, q.codes) and back["l"].dequantize().tobytes() == q.dequantize().tobytes()


def test_sparse_packing_refuses_a_damaged_bitmap():
    w = np.zeros((4, 4096), np.float32)
    w[0, :3] = [0.5, -0.25, 1.0]
    for form in ("int4", "cluster"):
        packed = Q.pack_state({}, {"l": Q.quantize_as(w, form, bits=2) if form == "cluster" else Q.quantize_as(w, form)})
        assert packed["l.weight.nonzero"].size == 2048
        with pytest.raises(UsageError, match="nonzero' has 2047 uint8 bytes, not the 2048 of shape"):
            Q.unpack_state(dict(packed, **{"l.weight.nonzero": packed["l.weight.nonzero"][:2047]}))
        more = packed["l.weight.nonzero"].copy()
        more[5] = 0xFF  # eight more non-zeros than there are codes
        with pytest.raises(UsageError, match="do not fit shape"):
            Q.unpack_state(dict(packed, **{"l.weight.nonzero": more}))
        zero = dict(packed, **{"l.weight.codes": np.zeros_like(packed["l.weight.codes"])})
        with pytest.raises(UsageError, match="holds a zero where"):
            Q.unpack_state(zero)


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
    bits = Q.half_bits(w, "bf16")
    assert bits.dtype == np.uint16 and bits.tolist() == [_bf16_ref(float(v)) for v in w]
    v = Q.cast_weight(w, "bf16")
    assert v.dtype == np.float32 and np.array_equal(Q.half_bits(v, "bf16"), bits)  # exact: a fixed point


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(F32, st.integers(1, 40), elements=st.floats(-65504, 65504, width=32)))
def test_fp16_is_ieee_binary16_and_keeps_signs_and_zeros(w):
    v = Q.cast_weight(w, "fp16")
    assert np.array_equal(v, w.astype(np.float16).astype(np.float32))
    assert np.array_equal(np.signbit(v[w == 0]), np.signbit(w[w == 0]))  # +0 stays +0 (pruned), -0 stays -0
    assert np.array_equal(Q.half_values(Q.half_bits(w, "fp16"), "fp16"), v)


@pytest.mark.parametrize("dtype,bad", [("fp16", 65520.0), ("bf16", 3.4028235e38), ("fp16", np.nan), ("bf16", np.inf)])
def test_casts_refuse_overflow_nan_and_inf(dtype, bad):
    with pytest.raises(RunError, match="overflows|NaN or infinite"):
        Q.half_bits(np.array([1.0, bad], np.float32), dtype)
    assert Q.half_bits(np.array([65504.0], np.float32), "fp16").tolist() == [0x7BFF]  # the largest fp16


def test_pack_state_stores_casts_in_16_bits():
    w = np.random.default_rng(3).normal(size=(4, 6)).astype(np.float32)
    state = {"a.weight": Q.cast_weight(w, "fp16"), "b.weight": Q.cast_weight(w, "bf16"), "a.bias": w[0]}
    packed = Q.pack_state(state, {}, None, {"a": "fp16", "b": "bf16"})
    assert sorted(packed) == ["a.bias", "a.weight.fp16", "b.weight.bf16"]
    assert packed["a.weight.fp16"].dtype == np.uint16 and packed["a.weight.fp16"].nbytes == w.nbytes // 2
    flat, quants = Q.unpack_state(packed)
    assert not quants and Q.unpack_casts(packed) == {"a": "fp16", "b": "bf16"}
    assert all(flat[k].tobytes() == state[k].tobytes() for k in state)


def test_unpack_state_reads_a_per_tensor_scale_stored_as_shape_1():
    """A writer may store 0-d arrays as shape (1,): a per-tensor scale stays per tensor (from the
    weight's first dimension, for int8 codes and packed ones), a one-channel layer's (1,) scale
    stays per channel, and bits read the same either way."""
    w = np.random.default_rng(3).normal(size=(4, 300)).astype(np.float32)
    one = w[:1]
    quants = {"a": Q.quantize_as(w, "int8", "per_tensor"), "b": Q.quantize_as(w, "int4", "per_tensor"),
              "c": Q.quantize_as(one, "int4", "per_channel")}
    packed = Q.pack_state({}, quants)
    stored = {k: (np.asarray(v).reshape(1) if np.ndim(v) == 0 else v) for k, v in packed.items()}
    assert stored["a.weight.scale"].shape == stored["b.weight.bits"].shape == (1,)
    flat, back = Q.unpack_state(stored)
    for layer, q in quants.items():
        assert back[layer].scale.shape == np.shape(q.scale) and back[layer].axis == q.axis and back[layer].bits == q.bits
        assert flat[f"{layer}.weight"].tobytes() == q.dequantize().tobytes()
    assert back["a"].axis is None and back["c"].axis == 0
