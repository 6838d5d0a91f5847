"""The zoo is the same network on both backends: layers, canonical state, logits, metrics."""

from __future__ import annotations

import numpy as np
import pytest

from .cases import SHAPE, backend, context, dataset, planted_state

pytestmark = [pytest.mark.torch, pytest.mark.tensorflow]
ZOO = ("lenet300", "lenet5", "seedcnn", "seedcnn_student", "mlp1200", "mlp800", "resnet8")


@pytest.mark.parametrize("model", ZOO)
def test_selector_parity(model):
    torch_be, tf_be = backend("torch"), backend("tensorflow")
    assert torch_be.layers(torch_be.load_model(model, SHAPE, 10)) == tf_be.layers(tf_be.load_model(model, SHAPE, 10))


@pytest.mark.parametrize("model", ZOO)
@pytest.mark.parametrize("shape", [SHAPE, (3, 32, 32)], ids=["1x28x28", "3x32x32"])
def test_same_state_same_logits(model, shape):
    """A state written by torch loads into tensorflow (flatten order included) and back."""
    import torch

    torch_be, tf_be = backend("torch"), backend("tensorflow")
    th = torch_be.load_model(model, shape, 10)
    kh = tf_be.load_model(model, shape, 10)
    state = torch_be.state(th)
    tf_be.load_state(kh, state)
    assert all(np.array_equal(state[k], v) for k, v in tf_be.state(kh).items())
    x = np.random.default_rng(0).standard_normal((16, *shape)).astype(np.float32)
    with torch.no_grad():
        a = th.module(torch.from_numpy(x)).numpy()
    b = kh.model(np.moveaxis(x, 1, -1)).numpy()
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_same_metrics():
    data = dataset(64, 256)
    state = planted_state("lenet5", trainable=True)
    results = []
    for name in ("torch", "tensorflow"):
        be = backend(name)
        h = be.load_model("lenet5", SHAPE, 10)
        be.load_state(h, state)
        results.append((be.evaluate(h, context(data)), be.stats(h)))
    (acc_t, loss_t), stats_t = results[0]
    (acc_k, loss_k), stats_k = results[1]
    assert acc_t == acc_k and loss_t == pytest.approx(loss_k, rel=1e-5)
    assert stats_t == stats_k
