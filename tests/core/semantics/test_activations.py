"""lwdsl.semantics.activations: activation scales and zero points, fake quantization, range
observers (framework-free)."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lwdsl.errors import RunError
from lwdsl.semantics import activations as A

F32 = np.float32


def test_docstring_examples_run():
    result = doctest.testmod(A)
    assert result.attempted and not result.failed


def _bits_of(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


# ----------------------------------------------------------------------------- activations


def test_act_qparams_known_values():
    aq = A.act_qparams(-1.0, 3.0)
    assert aq.scale == float(F32(4.0) / F32(255)) and aq.zero_point == 64 and (aq.qmin, aq.qmax) == (0, 255)
    sq = A.act_qparams(-1.0, 3.0, signed=True)
    assert sq.scale == aq.scale and sq.zero_point == -64 and (sq.qmin, sq.qmax) == (-128, 127)
    four = A.act_qparams(-1.0, 3.0, bits=4)
    assert four.scale == float(F32(4.0) / F32(15)) and (four.qmin, four.qmax) == (0, 15)


def test_act_range_is_widened_to_contain_zero():
    pos = A.act_qparams(0.5, 2.0)
    assert pos.zero_point == 0 and pos.scale == float(F32(2.0) / F32(255))
    neg = A.act_qparams(-2.0, -0.5)
    assert neg.zero_point == 255 and neg.scale == float(F32(2.0) / F32(255))
    signed_pos = A.act_qparams(0.5, 2.0, signed=True)
    assert signed_pos.zero_point == -128


def test_act_empty_range_gets_scale_one():
    assert A.act_qparams(0.0, 0.0) == A.ActQuant(1.0, 0, 0, 255)
    assert A.act_qparams(0.0, 0.0, signed=True) == A.ActQuant(1.0, -128, -128, 127)  # qmin - rint(0)


def test_act_bad_ranges():
    with pytest.raises(RunError, match="not finite"):
        A.act_qparams(float("nan"), 1.0)
    with pytest.raises(RunError, match="not finite"):
        A.act_qparams(0.0, float("inf"))
    with pytest.raises(RunError, match="too wide"):
        A.act_qparams(-3e38, 3e38)
    with pytest.raises(ValueError, match="lo"):
        A.act_qparams(2.0, 1.0)


ranges = st.tuples(st.floats(-1e6, 1e6, width=32), st.floats(-1e6, 1e6, width=32)).map(sorted)


@settings(max_examples=200, deadline=None)
@given(ranges, st.booleans(), st.integers(2, 16), hnp.arrays(F32, 20, elements=st.floats(-2e6, 2e6, width=32)))
def test_fake_quantize_properties(r, signed, bits, x):
    lo, hi = r
    aq = A.act_qparams(lo, hi, bits, signed)
    assert aq.qmin <= aq.zero_point <= aq.qmax
    s = F32(aq.scale)
    assert float(s) == aq.scale and s > 0
    y = A.fake_quantize(x, aq)
    assert y.dtype == np.float32
    assert A.fake_quantize(np.zeros(3, F32), aq).tolist() == [0.0, 0.0, 0.0]  # 0 is exact
    assert np.array_equal(_bits_of(A.fake_quantize(y, aq)), _bits_of(y))  # idempotent
    grid_lo, grid_hi = (aq.qmin - aq.zero_point) * float(s), (aq.qmax - aq.zero_point) * float(s)
    assert np.all(y >= F32(grid_lo)) and np.all(y <= F32(grid_hi))
    inside = (x >= grid_lo) & (x <= grid_hi)
    assert np.all(np.abs(x[inside].astype(np.float64) - y[inside]) <= float(s) * (0.5 + 2.0**-10))
    assert np.all(y[x > grid_hi] == F32(grid_hi)) and np.all(y[x < grid_lo] == F32(grid_lo))
    if lo < 0 < hi:  # the range is covered up to rounding of the zero point
        assert grid_lo <= lo + float(s) and grid_hi >= hi - float(s)


def test_fake_quantize_inf_saturates_nan_propagates():
    aq = A.act_qparams(-1.0, 3.0)
    y = A.fake_quantize(np.array([np.inf, -np.inf, np.nan], F32), aq)
    assert y[0] == F32((255 - 64) * F32(aq.scale)) and y[1] == F32(-64 * F32(aq.scale)) and np.isnan(y[2])


# ----------------------------------------------------------------------------- observers

batches = st.lists(hnp.arrays(F32, st.integers(0, 30), elements=st.floats(-1e4, 1e4, width=32)), min_size=1, max_size=6)


@settings(max_examples=100, deadline=None)
@given(batches)
def test_minmax_is_exact_and_order_free(bs):
    data = np.concatenate(bs)
    if not data.size:
        return
    ob = A.RangeObserver("minmax")
    for b in bs:
        ob.update(b)
    assert ob.range() == (float(data.min()), float(data.max()))
    for perm in itertools.islice(itertools.permutations(bs), 6):
        other = A.RangeObserver("minmax")
        for b in perm:
            other.update(b)
        assert other.range() == ob.range()


@settings(max_examples=100, deadline=None)
@given(batches, st.sampled_from(["percentile", "mse"]), st.sampled_from([2, 16, 64]))
def test_histogram_ranges_never_wider_than_minmax(bs, method, bins):
    data = np.concatenate(bs)
    if not data.size:
        return
    ob = A.RangeObserver(method, bins=bins, percentile=99.0)
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
    ob = A.RangeObserver("percentile", percentile=p)
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
    ob = A.RangeObserver("percentile")
    x = np.maximum(rng.standard_normal(100_000), 0).astype(F32)
    ob.update(x)
    lo, hi = ob.range()
    assert lo == 0.0 and 0 < hi < x.max()


def _true_mse(x: np.ndarray, lo: float, hi: float) -> float:
    return float(np.mean((A.fake_quantize(x, A.act_qparams(lo, hi)).astype(np.float64) - x) ** 2))


@pytest.mark.parametrize("dist", ["laplace", "t3", "cauchy"])
def test_mse_clips_heavy_tails(dist):
    rng = np.random.default_rng(4)
    x = {"laplace": rng.laplace(size=200_000), "cauchy": rng.standard_cauchy(200_000), "t3": rng.standard_t(3, 200_000)}[dist].astype(F32)
    ob = A.RangeObserver("mse")
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
        ob = A.RangeObserver("mse")
        ob.update(np.concatenate([np.zeros(zeros, F32), pos[:25_000]]))
        ob.update(pos[25_000:])
        ranges.append(ob.range())
        assert ob.histogram()[0].sum() == zeros + pos.size
    assert ranges[0] == ranges[1] and ranges[0][0] == 0.0 and ranges[0][1] < pos.max()


def test_mse_keeps_the_whole_range_of_uniform_data():
    x = np.random.default_rng(6).uniform(-1, 3, 100_000).astype(F32)
    ob = A.RangeObserver("mse")
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
    ob = A.RangeObserver("mse", bins=32)
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
    ob = A.RangeObserver("percentile", bins=16)
    ob.update(base)
    h1, lo, hi = ob.histogram()
    assert (lo, hi) == (0.0, 16.0)
    ob.update(np.array([40.25], F32))  # k = 2: width 4, j = 0
    h2, lo2, hi2 = ob.histogram()
    assert (lo2, hi2) == (0.0, 64.0)
    assert h2[:4].tolist() == h1.reshape(4, 4).sum(axis=1).tolist() and h2[10] == 1 and h2.sum() == h1.sum() + 1
    ob = A.RangeObserver("percentile", bins=16)
    ob.update(base)
    ob.update(np.array([-5.0], F32))  # k = 1: width 2, j = ceil(5 / 2) = 3, old bin i -> 3 + i // 2
    h3, lo3, hi3 = ob.histogram()
    assert (lo3, hi3) == (-6.0, 26.0)
    assert h3[3:11].tolist() == h1.reshape(8, 2).sum(axis=1).tolist() and h3[0] == 1 and h3.sum() == h1.sum() + 1


def test_memory_is_bounded_and_counts_are_kept():
    rng = np.random.default_rng(8)
    ob = A.RangeObserver("mse", bins=128)
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
    ob = A.RangeObserver("percentile", bins=8)
    ob.update(np.zeros(100, F32))  # a ReLU batch of zeros: no histogram width yet
    assert ob.range() == (0.0, 0.0)
    counts, lo, hi = ob.histogram()
    assert counts[0] == 100 and lo == hi == 0.0
    ob.update(np.array([1.0, 2.0], F32))
    counts, lo, hi = ob.histogram()
    assert (lo, hi) == (0.0, 2.0) and counts[0] == 100 and counts.sum() == 102


def test_observer_errors():
    with pytest.raises(RunError, match="no data"):
        A.RangeObserver("mse").range()
    with pytest.raises(RunError, match="NaN or infinite"):
        A.RangeObserver().update(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="method"):
        A.RangeObserver("entropy")
    with pytest.raises(ValueError, match="bins"):
        A.RangeObserver("mse", bins=1)
    with pytest.raises(ValueError, match="keeps no histogram"):
        A.RangeObserver().histogram()


