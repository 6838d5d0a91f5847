"""Pruning on the tensorflow backend: ``remove=True`` rebuilds a smaller Keras model. The masks,
structured slices, second prunes, gradual and fine-tuning on every backend: tests/contract/test_prune.py."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow
pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow

from lwdsl.backend import StepContext, get_backend  # noqa: E402
from lwdsl.data.builtin import load_data  # noqa: E402
from lwdsl.errors import LwdslError  # noqa: E402
from lwdsl.runner.progress import NullBar  # noqa: E402
from lwdsl.language.specs import PruneSpec  # noqa: E402

SHAPE = (1, 28, 28)
DATA = load_data("synthetic:1,28,28:10")


def _ctx(data=DATA):
    return StepContext(data, seed=0, index=2, progress=lambda total, what: NullBar())


@pytest.fixture
def be():
    return get_backend("tensorflow")


def test_remove_matches_masked_model(be):
    h = be.load_model("seedcnn", SHAPE, 10)
    for layer in h.model.layers:  # zero biases: a removed filter then contributes exactly nothing
        if layer.weights:
            layer.set_weights([layer.get_weights()[0], np.zeros_like(layer.get_weights()[1])])
    masked = be.copy_model(h)
    spec = dict(method="l1", amount=0.4, structured="filters")
    masked = be.apply(masked, PruneSpec(**spec), ["conv1", "conv2", "fc1"], _ctx())
    small = be.apply(h, PruneSpec(**spec, remove=True), ["conv1", "conv2", "fc1"], _ctx())
    assert [i.shape for i in be.layers(small)] == [(6, 1, 5, 5), (12, 6, 5, 5), (30, 192), (10, 30)]
    x = DATA.test_x[:32].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(small.model(x).numpy(), masked.model(x).numpy(), atol=1e-5)


def test_remove_refuses_the_output_layer(be):
    h = be.load_model("lenet5", SHAPE, 10)
    with pytest.raises(LwdslError, match="'fc2'.*model's outputs") as err:
        be.apply(h, PruneSpec(method="l1", amount=0.5, structured="filters", remove=True), ["fc2"], _ctx())
    assert "except" in err.value.hint


