"""Every prune form gives bit-identical canonical weights on torch and tensorflow."""

from __future__ import annotations

import numpy as np
import pytest

from .cases import PRUNE_CASES, compare_states, planted_state, prune_outcome, run_prune_case

pytestmark = [pytest.mark.torch, pytest.mark.tensorflow]


@pytest.mark.parametrize("case", PRUNE_CASES, ids=[c.id for c in PRUNE_CASES])
def test_prune_is_bit_identical(case):
    outcome = prune_outcome(case)
    assert outcome.ok, outcome.detail
    assert outcome.figures["zeros"] > 0


def test_cases_have_ties_at_the_cut():
    """The planted weights make the magnitude cut fall inside a tie group (else the tie rule
    would go untested): at 20-40% the cut lands on the planted magnitude."""
    from lwdsl.semantics.masks import count_to_prune, magnitude_cut

    state = planted_state("lenet5")
    weights = [v for k, v in state.items() if k.endswith(".weight")]
    cut = magnitude_cut(weights, count_to_prune(0.2, sum(w.size for w in weights)))
    assert cut.value == pytest.approx(0.03) and sum(cut.ties) > 0


def test_remove_shrinks_both_alike():
    case = next(c for c in PRUNE_CASES if c.id == "remove-lenet5")
    states = run_prune_case(case)
    assert states["torch"]["conv1.weight"].shape == (10, 1, 5, 5)
    assert states["tensorflow"]["fc1.weight"].shape == (250, 25 * 16)
    assert compare_states(states["torch"], states["tensorflow"]).ok


def test_compare_states_sees_a_sign_of_zero():
    a = {"w": np.array([0.0, 1.0], np.float32)}
    b = {"w": np.array([-0.0, 1.0], np.float32)}
    assert not compare_states(a, b).ok
