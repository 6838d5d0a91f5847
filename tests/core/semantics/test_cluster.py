"""lwdsl.semantics.cluster: weight sharing (Han et al. 2016), the one definition of codebooks and
cluster codes (framework-free)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lwdsl.errors import RunError, UsageError
from lwdsl.semantics import cluster as C
from lwdsl.semantics import quant as Q


def _pruned(seed: int = 0, shape=(50, 40), keep: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.1, shape).astype(np.float32)
    w[np.abs(w) < np.quantile(np.abs(w), 1 - keep)] = 0
    return w


def test_docstring_examples_run():
    result = doctest.testmod(C)
    assert result.attempted >= 4 and not result.failed


def test_same_weights_give_the_same_bits_every_time_and_in_any_layout():
    w = _pruned()
    a, b = C.cluster_weight(w, 4), C.cluster_weight(w.copy(), 4)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    t = C.cluster_weight(np.ascontiguousarray(w.T), 4)  # another layout: the same codebook, codes moved along
    assert t[1].tobytes() == a[1].tobytes() and np.array_equal(t[0], a[0].T)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_codebook_size_zero_code_and_pruned_zeros_kept(bits):
    w = _pruned(bits)
    w.flat[:5] = -0.0
    codes, book = C.cluster_weight(w, bits)
    assert codes.dtype == np.uint8 and codes.shape == w.shape and book.dtype == np.float32
    assert book.shape == (2**bits,) and book[:1].view(np.uint32).tolist() == [0]  # +0.0
    assert (codes[w == 0] == 0).all() and (codes[w != 0] > 0).all()
    assert (book[1:] != 0).all() and (np.diff(book[1:]) >= 0).all()  # ascending centroids
    deq = Q.quantize_as(w, "cluster", bits=bits).dequantize()
    assert (deq[w == 0] == 0).all() and not np.signbit(deq[w == 0]).any()
    assert len(np.unique(deq)) <= 2**bits


def test_linear_initialisation_and_lloyd_fixed_point():
    """The centroids are the means of their clusters, and each non-zero weight sits at its
    nearest centroid (float64): Lloyd converged. The extremes stay inside [min, max]."""
    w = _pruned(3, (80, 60))
    codes, book = C.cluster_weight(w, 4)
    x, c = w[w != 0].astype(np.float64), codes[w != 0].astype(np.int64) - 1
    for j in np.unique(c):
        assert np.float32(x[c == j].mean()) == book[j + 1]
    cent = book[1:].astype(np.float64)
    near = np.abs(x[:, None] - cent[None, :]).min(axis=1)
    assert np.allclose(np.abs(x - cent[c]), near, rtol=0, atol=1e-7)
    assert x.min() <= book[1] and book[-1] <= x.max()


def test_more_bits_fit_better():
    w = _pruned(4)
    err = [float(np.abs(Q.quantize_as(w, "cluster", bits=b).dequantize() - w).mean()) for b in (2, 3, 4, 6)]
    assert err == sorted(err, reverse=True) and err[-1] < err[0] / 8


def test_tie_goes_to_the_lower_centroid():
    # centroids start at -1, 0, 1 (linear between min and max); -0.5 and 0.5 lie exactly between
    # two of them and go to the lower one: clusters {-1, -0.5}, {0.5}, {1} -> -0.75, 0.5, 1 (stable)
    w = np.array([-1.0, -0.5, 0.5, 1.0], np.float32)
    codes, book = C.cluster_weight(w, 2)
    assert book.tolist() == [0.0, -0.75, 0.5, 1.0] and codes.tolist() == [1, 1, 2, 3]
    x = np.array([0.25, -0.25], np.float32)
    assert C.nearest_codes(x, np.array([0.0, -0.5, 0.5, 1.0], np.float32)).tolist() == [0, 0]  # 0.0 wins ties
    assert C.nearest_codes(x, np.array([0.0, 0.0, 0.5, 0.5], np.float32)).tolist() == [0, 0]
    assert C.nearest_codes(np.float32([0.75]), np.array([0.0, 0.5, 1.0, 2.0], np.float32)).tolist() == [1]


def test_empty_and_constant_layers():
    codes, book = C.cluster_weight(np.zeros((3, 4), np.float32), 3)
    assert not codes.any() and not book.any() and book.shape == (8,)
    codes, book = C.cluster_weight(np.full((3, 4), 0.5, np.float32), 3)
    assert (book[codes] == 0.5).all()
    with pytest.raises(RunError, match="NaN or infinite"):
        C.cluster_weight(np.array([1.0, np.nan], np.float32), 4)
    with pytest.raises(ValueError, match="2..8"):
        C.cluster_weight(np.ones(3, np.float32), 1)


def test_requantize_is_a_fixed_point_and_keeps_the_codebook():
    w = _pruned(5)
    q = Q.quantize_as(w, "cluster", bits=4)
    again = Q.requantize(q.dequantize(), q)
    assert again.dequantize().tobytes() == q.dequantize().tobytes() and again.codebook is q.codebook
    moved = Q.requantize(q.dequantize() * np.float32(1.5), q)
    assert np.isin(moved.dequantize(), q.codebook).all() and not np.array_equal(moved.codes, q.codes)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), hnp.arrays(np.uint8, st.integers(0, 70), elements=st.integers(0, 255)))
def test_pack_round_trip_any_bits(bits, raw):
    codes = (raw.astype(np.uint16) % 2**bits).astype(np.uint8)
    packed = C.pack_indices(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == -(-codes.size * bits // 8)
    assert np.array_equal(C.unpack_indices(packed, bits, codes.shape), codes)


def test_pack_layout_matches_pack_codes_for_non_negative_codes():
    codes = np.array([1, 0, 3, 2, 1, 1, 0], np.uint8)
    signed = np.array([1, 0, -1, 1, 1, 1, 0], np.int8)  # two's complement of 3 in 2 bits is -1
    assert C.pack_indices(np.where(codes == 2, 1, codes), 2).tobytes() == Q.pack_codes(signed, 2).tobytes()
    assert C.pack_indices(np.array([1, 7, 0, 5], np.uint8), 3).tolist() == [0b00111001, 0b1010]
    with pytest.raises(ValueError, match="outside"):
        C.pack_indices(np.array([4], np.uint8), 2)
    with pytest.raises(RunError, match="do not fit"):
        C.unpack_indices(np.zeros(3, np.uint8), 4, (7,))


def test_pack_state_round_trip_stores_codebook_not_scale():
    w = _pruned(6, (300, 200))
    q = Q.quantize_as(w, "cluster", bits=3)
    st_ = Q.pack_state({"fc.weight": w, "fc.bias": np.ones(300, np.float32)}, {"fc": q})
    # 20% kept: the bitmap of the non-zero codes and those codes, 7,500 + 4,500 bytes, not 22,500
    assert sorted(st_) == ["fc.bias", "fc.weight.bits", "fc.weight.codebook", "fc.weight.codes", "fc.weight.nonzero", "fc.weight.shape"]
    assert st_["fc.weight.codes"].size == 12_000 * 3 // 8 and st_["fc.weight.nonzero"].size == 60_000 // 8
    dense = Q.pack_state({}, {"fc": Q.quantize_as(_pruned(6, (300, 200), keep=1.0), "cluster", bits=3)})
    assert "fc.weight.nonzero" not in dense and dense["fc.weight.codes"].size == 300 * 200 * 3 // 8
    flat, quants = Q.unpack_state(st_)
    assert np.array_equal(quants["fc"].codes, q.codes) and quants["fc"].codebook.tobytes() == q.codebook.tobytes()
    assert flat["fc.weight"].tobytes() == q.dequantize().tobytes() and quants["fc"].bits == 3
    bad = dict(st_, **{"fc.weight.codebook": np.zeros(5, np.float32)})
    with pytest.raises(UsageError, match="damaged"):
        Q.unpack_state(bad)
