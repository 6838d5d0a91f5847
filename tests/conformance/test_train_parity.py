"""Training from identical weights and data order gives the same losses on both backends."""

from __future__ import annotations

import pytest

from .cases import TOLERANCE, TRAIN_CASES, train_outcome

pytestmark = [pytest.mark.torch, pytest.mark.tensorflow]


@pytest.mark.parametrize("case", TRAIN_CASES, ids=[c.id for c in TRAIN_CASES])
def test_training_agrees(case):
    outcome = train_outcome(case)
    assert outcome.figures["steps"] >= 20
    assert outcome.figures["loss_rel"] <= outcome.figures["loss_limit"], outcome.detail
    assert outcome.figures["loss_limit"] <= max(TOLERANCE["loss_rtol"], 1e-3), "rounding alone moves training too far to compare"
    assert outcome.ok, outcome.detail
