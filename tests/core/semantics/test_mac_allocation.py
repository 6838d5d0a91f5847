"""lwdsl.semantics.mac_allocation: MAC counts of removed channels, the uniform ratio, the greedy
search and its fill-back (prune auto of=macs)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwdsl.semantics import mac_allocation as A
from lwdsl.semantics.groups import Group, Member


def _lenet5():
    """LeNet-5's groups as both backends trace them: conv1 -> conv2 -> (flatten, 4x4) fc1 -> fc2."""
    groups = [
        Group(20, (Member("conv1", "out"), Member("conv2", "in"))),
        Group(50, (Member("conv2", "out"), Member("fc1", "in", block=16))),
        Group(500, (Member("fc1", "out"), Member("fc2", "in"))),
    ]
    shapes = {"conv1": (20, 1, 5, 5), "conv2": (50, 20, 5, 5), "fc1": (500, 800), "fc2": (10, 500)}
    positions = {"conv1": 576, "conv2": 64, "fc1": 1, "fc2": 1}
    return groups, A.MacModel(groups, shapes, positions)


def test_docstring_examples_run():
    result = doctest.testmod(A)
    assert result.attempted and not result.failed


def test_mac_model_counts_shortened_axes():
    groups, mm = _lenet5()
    assert mm.baseline == 20 * 25 * 576 + 50 * 20 * 25 * 64 + 500 * 800 + 10 * 500 == 2_293_000
    # conv1 loses 5 filters: conv1 15 filters, conv2 15 input channels
    assert mm.total([5, 0, 0]) == 15 * 25 * 576 + 50 * 15 * 25 * 64 + 500 * 800 + 5000
    # conv2 loses 10: fc1 loses 10 * 16 columns
    assert mm.layer("fc1", [0, 10, 0]) == 500 * (800 - 160)


def _measure_sum(removed):
    return 1.0, 0.001 * sum(removed)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.05, 0.8))
def test_search_keeps_at_most_the_target_and_less_than_a_channel_below(share):
    groups, mm = _lenet5()
    target = int(np.floor(share * mm.baseline))
    removed, steps, measured = A.search_removal(groups, mm, target, lambda r: (1.0, 0.01 * r[0] + 0.001 * r[1]))
    kept = mm.total(removed)
    assert kept <= target
    # no single channel could be put back under the target (the stated rounding)
    for gi in range(len(groups)):
        if removed[gi]:
            back = list(removed)
            back[gi] -= 1
            assert mm.total(back) > target
    assert all(0 <= r < g.channels for r, g in zip(removed, groups))
    assert measured >= len(steps)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.05, 0.95))
def test_uniform_is_one_ratio_at_most_the_target(share):
    groups, mm = _lenet5()
    target = int(np.floor(share * mm.baseline))
    ratio, removed = A.uniform_removal(groups, mm, target)
    assert mm.total(removed) <= target
    assert list(removed) == [min(int(round(ratio * g.channels)), g.channels - 1) for g in groups]


def test_an_unreachable_target_is_refused():
    groups, mm = _lenet5()
    with pytest.raises(ValueError):
        A.search_removal(groups, mm, 10, _measure_sum)
    with pytest.raises(ValueError):
        A.uniform_removal(groups, mm, 10)


def test_removal_state_is_the_removed_model():
    """A 2-layer linear net: zeroing the consumer's columns of the lost channels gives the
    outputs of the net with those channels cut out."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((3, 6)).astype(np.float32)
    g = Group(6, (Member("a", "out"), Member("b", "in")))
    state = {"a.weight": w1, "b.weight": w2}
    out, keeps = A.removal_state(state, [g], (2,))
    x = rng.standard_normal(4).astype(np.float32)
    kept = keeps[0]
    assert kept.sum() == 4
    assert np.allclose(out["b.weight"] @ np.maximum(w1 @ x, 0), w2[:, kept] @ np.maximum(w1[kept] @ x, 0), atol=1e-5)
    assert np.array_equal(state["b.weight"], w2)  # the input state is not changed
    # the two filters of lowest L1 norm are the ones lost
    assert set(np.flatnonzero(~kept)) == set(np.argsort(np.abs(w1).sum(axis=1), kind="stable")[:2])


def test_eligible_groups_leave_the_output_and_unselected_couplings():
    groups = [
        Group(4, (Member("a", "out"), Member("b", "in"))),
        Group(4, (Member("b", "out"), Member("c", "out"), Member("d", "in")), via=("a residual addition",)),
        Group(10, (Member("d", "out"),), reason="it produces the model's outputs"),
    ]
    chosen, left = A.eligible_groups(groups, ["a", "b", "d"])
    assert chosen == [groups[0]]
    assert any(line.startswith("b: coupled to c") for line in left) and any("model's outputs" in line for line in left)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.1, 0.6), st.integers(0, 2))
def test_exchanges_stay_under_the_target_and_only_take_clear_gains(share, favoured):
    groups, mm = _lenet5()
    target = int(np.floor(share * mm.baseline))
    _, start = A.uniform_removal(groups, mm, target)

    def measure(r):  # accuracy rises with the channels the favoured group loses: exchanges should follow it
        return min(1.0, 0.5 + 0.004 * r[favoured]), 1.0 - 0.004 * r[favoured]

    removed, taken, measured = A.exchange_removal(groups, mm, target, start, measure, 1000, measure(start))
    assert mm.total(removed) <= target and measured <= A.EXCHANGE_BUDGET
    assert all(0 <= r < g.channels for r, g in zip(removed, groups))
    assert all(i == favoured for i, _, _, _, _ in taken)
    if taken:
        assert removed[favoured] > start[favoured]
    filled = A.fill_back(removed, mm, target)
    assert mm.total(filled) <= target and all(f <= r for f, r in zip(filled, removed))


def test_exchanges_take_nothing_from_a_flat_probe():
    groups, mm = _lenet5()
    target = int(0.25 * mm.baseline)
    _, start = A.uniform_removal(groups, mm, target)
    removed, taken, _ = A.exchange_removal(groups, mm, target, start, lambda r: (0.9, 0.3), 2000, (0.9, 0.3))
    assert removed == start and taken == []
