"""Training on the tensorflow backend: the shared data order. Updates following torch.optim's equations and
the schedules, on every backend: tests/contract/test_train.py."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow
pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow

from lwdsl.semantics.order import batches, epoch_order  # noqa: E402


def test_data_order_is_the_shared_one():
    order = epoch_order(10, 3, 1)
    assert sorted(order.tolist()) == list(range(10))
    assert np.array_equal(order, np.random.default_rng(4).permutation(10))
    assert [len(b) for b in batches(10, 4, 3, 1)] == [4, 4, 2]
