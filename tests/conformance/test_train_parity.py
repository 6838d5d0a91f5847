"""Training from identical weights and data order gives the same losses on both backends."""

from __future__ import annotations

import pytest

from .cases import TOLERANCE, TRAIN_CASES, train_outcome

pytestmark = [pytest.mark.torch, pytest.mark.tensorflow]


@pytest.mark.parametrize("case", TRAIN_CASES, ids=[c.id for c in TRAIN_CASES])
def test_training_agrees(case):
    outcome = train_outcome(case)
    assert outcome.figures["steps"] >= 20
    assert outcome.figures["loss_rel"] <= TOLERANCE["loss_rtol"], outcome.detail
    assert outcome.ok, outcome.detail
