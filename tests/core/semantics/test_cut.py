"""The one-pass magnitude cut returns exactly lwdsl.semantics.masks.magnitude_cut's answer."""

from __future__ import annotations

import pytest


import numpy as np

from lwdsl.semantics import masks as lm
from lwdsl.errors import RunError
from lwdsl.semantics import cut as magnitude


def _arrays(rng, tied: bool) -> list[np.ndarray]:
    out = []
    for _ in range(int(rng.integers(1, 5))):
        shape = tuple(int(x) for x in rng.integers(1, 9, int(rng.integers(1, 4))))
        if tied:  # a few levels, both signs, zeros, signed zeros
            levels = int(rng.integers(1, 6))
            w = (rng.integers(-levels, levels + 1, shape) / levels).astype(np.float32)
            w[rng.random(shape) < 0.1] = -0.0
        else:
            w = rng.standard_normal(shape).astype(np.float32)
        out.append(w)
    return out


@pytest.mark.parametrize("tied", [False, True])
def test_equal_to_lwdsl_masks_on_random_and_tied_weights(tied):
    rng = np.random.default_rng(11 + tied)
    for _ in range(400):
        ws = _arrays(rng, tied)
        total = sum(w.size for w in ws)
        k = int(rng.integers(0, total + 1))
        sample = int(rng.integers(1, 6))  # tiny samples: the one-pass path even on small arrays
        assert magnitude.magnitude_cut(ws, k, sample=sample) == lm.magnitude_cut(ws, k)


def test_equal_on_a_large_array_through_the_fast_path():
    rng = np.random.default_rng(3)
    ws = [rng.standard_normal(3_000_000).astype(np.float32), rng.standard_normal((700, 900)).astype(np.float32)]
    ws[1][:10, :10] = ws[0][:100].reshape(10, 10)  # cross-layer ties
    for amount in (0.01, 0.2, 0.5, 0.99):
        k = lm.count_to_prune(amount, 3_630_000)
        fast = magnitude.magnitude_cut(ws, k, sample=1 << 16)
        assert fast == lm.magnitude_cut(ws, k)


def _spy(monkeypatch) -> list:
    calls = []
    original = lm.magnitude_cut
    monkeypatch.setattr(magnitude.lm, "magnitude_cut", lambda ws, k: calls.append(k) or original(ws, k))
    return calls


def test_a_window_that_misses_falls_back_to_the_exact_histogram(monkeypatch):
    w = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    expected = lm.magnitude_cut([w], 20_000)
    calls = _spy(monkeypatch)
    assert magnitude.magnitude_cut([w], 20_000, sample=1000) == expected and not calls  # the fast path
    high = np.float32(3.0).view(np.uint32)
    monkeypatch.setattr(magnitude, "_window", lambda *a: (high, high + np.uint32(5), 10))
    assert magnitude.magnitude_cut([w], 20_000, sample=1000) == expected and calls == [20_000]


def test_masses_of_equal_magnitudes_fall_back_to_bounded_memory(monkeypatch):
    w = np.zeros(400_000, np.float32)
    w[::20] = np.random.default_rng(0).standard_normal(w[::20].size)
    k = 100_000  # the cut is inside 380,000 zeros: the window would hold them all
    expected = lm.magnitude_cut([w], k)
    monkeypatch.setattr(magnitude, "_CHUNK", 1 << 12)
    calls = _spy(monkeypatch)
    assert magnitude.magnitude_cut([w], k, sample=1000) == expected and calls == [k]


def test_apply_cut_writes_the_keep_mask_and_zeroes_in_place():
    rng = np.random.default_rng(4)
    ws = [(rng.integers(-4, 5, (30, 7)) / 4).astype(np.float32) for _ in range(3)]
    cut = lm.magnitude_cut(ws, 333)
    for i, w in enumerate(ws):
        expected = cut.keep_mask(i, w)
        keep = np.empty(w.shape, bool)
        before = w.copy()
        magnitude.apply_cut(cut, i, w, keep)
        assert np.array_equal(keep, expected)
        assert np.array_equal(w, np.where(expected, before, 0)) and not np.signbit(w[~expected]).any()


def test_nan_and_inf_are_refused():
    w = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    w[777] = np.inf
    with pytest.raises(RunError, match="NaN or infinite"):
        magnitude.magnitude_cut([w], 5_000, sample=1000)
