"""lwdsl.semantics.allocation: drop curves, prune auto's allocation, the level step search."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwdsl.semantics import allocation as A
from lwdsl.semantics.masks import count_to_prune

GRID = A.AUTO_GRID


def test_docstring_examples_run():
    result = doctest.testmod(A)
    assert result.attempted and not result.failed


def test_probe_indices_are_seeded_sorted_and_not_calibrations():
    from lwdsl.semantics.order import calibration_indices

    a, b = A.probe_indices(1000, 100, 3), A.probe_indices(1000, 100, 3)
    assert a.tolist() == b.tolist() == sorted(set(a.tolist()))
    assert A.probe_indices(1000, 100, 4).tolist() != a.tolist()
    assert calibration_indices(1000, 100, 3).tolist() != a.tolist()
    assert len(A.probe_indices(10, 100, 0)) == 10


def test_envelope_is_a_running_max_with_a_tilt():
    x, y = A.envelope([0.2, 0.4, 0.6], [1.0, -2.0, 0.5])
    assert x.tolist() == [0.0, 0.2, 0.4, 0.6]
    assert np.allclose(y - A.TILT * x, [0.0, 1.0, 1.0, 1.0])
    assert np.all(np.diff(y) > 0)


@pytest.mark.parametrize("amounts", [[], [0.5, 0.4], [0.0, 0.5], [0.5, 1.0]])
def test_envelope_refuses_a_bad_grid(amounts):
    with pytest.raises(ValueError):
        A.envelope(amounts, [0.0] * len(amounts))


def test_amount_at_inverts_the_curve():
    x, y = A.envelope([0.5, 0.9], [2.0, 4.0])
    for a in (0.1, 0.25, 0.5, 0.7, 0.9):
        t = float(np.interp(a, x, y))
        assert A.amount_at(t, x, y) == pytest.approx(a, abs=1e-12)
    assert A.amount_at(100.0, x, y) == 0.9 and A.amount_at(0.0, x, y) == 0.0


def test_equally_insensitive_layers_get_the_same_amount():
    flat = [0.0] * len(GRID)
    a = A.allocate(0.5, [1000, 1000, 1000], GRID, [flat, flat, flat])
    assert a.counts == (500, 500, 500)


def test_the_sensitive_layer_is_spared_and_the_count_is_exact():
    flat = [0.0] * len(GRID)
    steep = [10.0 * g for g in GRID]
    a = A.allocate(0.6, [1000, 300], GRID, [flat, steep])
    assert sum(a.counts) == count_to_prune(0.6, 1300)
    assert a.amounts[0] > 0.6 > a.amounts[1]
    assert a.amounts[0] <= GRID[-1] + 1 / 1000
    assert "threshold" in a.reasons[1]


def test_every_layer_at_the_cap():
    drops = [[float(i) for i in range(len(GRID))]] * 2
    a = A.allocate(GRID[-1], [100, 50], GRID, drops)
    assert a.counts == (98, 49) and all("capped" in r for r in a.reasons)


def test_zero_target_prunes_nothing():
    assert A.allocate(0.0, [10, 20], GRID, [[1.0] * len(GRID)] * 2).counts == (0, 0)


def test_target_above_the_cap_is_refused():
    with pytest.raises(ValueError, match="capped"):
        A.allocate(0.99, [10], GRID, [[0.0] * len(GRID)])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 5000), min_size=1, max_size=6),
    st.floats(0.0, GRID[-1]),
    st.data(),
)
def test_allocation_always_meets_the_exact_count(weights, target, data):
    drops = [data.draw(st.lists(st.floats(-5, 50), min_size=len(GRID), max_size=len(GRID))) for _ in weights]
    a = A.allocate(target, weights, GRID, drops)
    assert sum(a.counts) == count_to_prune(target, sum(weights))
    assert all(0 <= c <= n for c, n in zip(a.counts, weights))
    assert all(c <= int(np.ceil(GRID[-1] * n)) for c, n in zip(a.counts, weights))
    # the same inputs, the same answer (nothing random, nothing order-dependent)
    assert A.allocate(target, weights, GRID, drops) == a


def test_level_search_goes_up_then_halves_on_each_turn():
    best, tried = A.level_search(lambda lv: (lv <= 0.83, None))
    assert [t.level for t in tried] == [0.5, 0.6, 0.7, 0.8, 0.9, 0.85, 0.825]
    # 0.85 fails and goes on down (no turn: same step) to 0.8, known within: the turn up halves
    assert [t.next_step for t in tried] == [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.025]
    assert best == 0.825


def test_level_search_goes_down_when_the_start_fails():
    best, tried = A.level_search(lambda lv: (lv <= 0.12, None))
    assert [t.level for t in tried] == [0.5, 0.4, 0.3, 0.2, 0.1, 0.15, 0.125]
    assert best == 0.1


def test_level_search_near_one_halves_instead_of_reaching_it():
    best, tried = A.level_search(lambda lv: (True, None))
    levels = [t.level for t in tried]
    assert levels == [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975] and best == 0.975
    assert all(0 < lv < 1 for lv in levels)


def test_level_search_with_nothing_within():
    best, tried = A.level_search(lambda lv: (False, None))
    assert best is None and [t.level for t in tried][-1] == 0.025


def test_level_search_measures_a_level_once():
    calls = []

    def measure(lv):
        calls.append(lv)
        return lv <= 0.72, {"level": lv}

    best, tried = A.level_search(measure)
    assert len(calls) == len(set(calls)) == len(tried)
    assert best == 0.7 and tried[0].measured == {"level": 0.5}


def test_level_search_refuses_a_start_outside():
    with pytest.raises(ValueError):
        A.level_search(lambda lv: (True, None), start=1.0)


# --- prune auto's candidates and exchange search ----------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5000), min_size=1, max_size=6), st.floats(0.0, 1.0))
def test_uniform_counts_sum_to_the_target_and_fit(sizes, target):
    k = count_to_prune(target, sum(sizes))
    counts = A.uniform_counts(k, sizes)
    assert sum(counts) == k and all(0 <= c <= n for c, n in zip(counts, sizes))
    assert all(abs(c - k * n / sum(sizes)) < 1 + 1e-9 for c, n in zip(counts, sizes))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=4), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_global_counts_are_the_global_magnitude_masks(sizes, target, seed):
    from lwdsl.semantics.masks import magnitude_keep_masks

    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(n).astype(np.float32) * rng.uniform(0.1, 3) for n in sizes]
    k = count_to_prune(target, sum(sizes))
    counts = A.global_counts(weights, k)
    keeps = magnitude_keep_masks(weights, target)
    assert sum(counts) == k
    assert list(counts) == [int((~keep).sum()) for keep in keeps]


def test_better_needs_the_margin_and_a_loss_no_higher():
    old = A.score(0.90, 0.2000, 2000)
    assert A.better(A.score(0.9025, 0.2000, 2000), old)  # 5 images more, same loss
    assert not A.better(A.score(0.9020, 0.1000, 2000), old)  # 4 images: within the probe's noise
    assert not A.better(A.score(0.9100, 0.2001, 2000), old)  # more right, but the loss says worse


def test_refine_keeps_the_total_and_the_caps():
    calls = []

    def measure(c):
        calls.append(c)
        return 1.0 - 0.001 * c[0] - 0.0001 * c[2], 0.0  # pruning layer 1 is free, layer 0 costs most

    out = A.refine((50, 50, 50), (98, 98, 98), measure, 10_000, margin=1)
    assert sum(out.counts) == 150 and all(0 <= c <= 98 for c in out.counts)
    assert out.counts[1] == 98 and out.counts[0] == 0  # moved off layer 0, onto layer 1 up to its cap
    assert out.evaluated == len(calls) - 1  # the start measured once, outside the budget
    assert all(m.weights > 0 for m in out.moves)
    again = A.refine((50, 50, 50), (98, 98, 98), measure, 10_000, margin=1)
    assert again == out  # nothing random


def test_refine_stops_at_the_budget_and_takes_nothing_below_the_margin():
    out = A.refine((10, 10), (20, 20), lambda c: (0.5 + 0.001 * c[0], 0.0), 1000, budget=3)
    assert out.counts == (10, 10) and out.moves == ()  # 1 image per move: below the margin of 5
    out = A.refine((10, 10), (20, 20), lambda c: (0.5 + 0.01 * c[0], 0.0), 1000, budget=3)
    assert out.evaluated <= 3 and out.counts[0] > 10
