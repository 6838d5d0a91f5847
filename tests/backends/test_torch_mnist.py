"""End to end on real MNIST (slow; skipped when the data is absent)."""

from __future__ import annotations

import pytest

from torch_helpers import make_ctx, torch_backend  # first: skips unless torch is selected and installed

from lwdsl.semantics import masks as lm
from lwdsl.language.specs import FinetuneSpec, PruneSpec, TrainingOptions

pytestmark = [pytest.mark.torch, pytest.mark.slow]


def test_seedcnn_trains_prunes_to_80_percent_and_recovers(mnist):
    backend = torch_backend()
    ctx = make_ctx(mnist, seed=0)
    handle = backend.load_model("seedcnn", mnist.input_shape, mnist.num_classes)
    backend.train(handle, TrainingOptions(epochs=1, lr=0.01, momentum=0.9), ctx)
    trained, _ = backend.evaluate(handle, ctx)
    assert trained > 0.95
    layers = [layer.name for layer in backend.layers(handle)]
    backend.apply(handle, PruneSpec(scope="global", method="l1", amount=0.8), layers, ctx)
    backend.apply(handle, FinetuneSpec(epochs=1, lr=0.01, momentum=0.9), layers, ctx)
    tuned, _ = backend.evaluate(handle, ctx)
    assert tuned > 0.95
    stats = backend.stats(handle)
    weights = sum(layer.weights for layer in stats.layers)
    assert sum(layer.zeros for layer in stats.layers) == lm.count_to_prune(0.8, weights)
