"""Training on the tensorflow backend follows PyTorch's update rules (checked against numpy)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow
pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow
import keras  # noqa: E402

from lwdsl.backend import Dataset, StepContext, get_backend  # noqa: E402
from lwdsl.semantics.order import batches, epoch_order  # noqa: E402
from lwdsl.runner.progress import NullBar  # noqa: E402
from lwdsl.language.specs import FinetuneSpec  # noqa: E402
from lwdsl.semantics.schedules import lr_at  # noqa: E402

N, D, K = 48, 12, 3


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, 1, 3, 4)).astype(np.float32)
    y = rng.integers(0, K, N).astype(np.int64)
    return Dataset("tiny", x, y, x, y, K)


def _ctx(data):
    return StepContext(data, seed=0, index=0, progress=lambda total, what: NullBar())


def _softmax_regression(be, w, b):
    model = keras.Sequential([keras.Input((3, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(K, name="fc")])
    model.set_weights([w.T.copy(), b.copy()])
    return be.load_model(model, (1, 3, 4), K)


def _reference(w, b, x, y, spec, steps):
    """torch.optim.SGD / Adam on softmax regression, full batch, in float64 numpy."""
    params, state = [w.astype(np.float64), b.astype(np.float64)], [np.zeros_like(w, float), np.zeros_like(b, float)]
    state2 = [np.zeros_like(w, float), np.zeros_like(b, float)]
    for t in range(1, steps + 1):
        z = x @ params[0].T + params[1]
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        grads = [p.T @ x / len(y), p.mean(0)]
        lr = lr_at(spec.schedule, spec.lr, t - 1, steps)
        for i, g in enumerate(grads):
            g = g + spec.weight_decay * params[i]
            if spec.optimizer == "adam":
                state[i] = 0.9 * state[i] + 0.1 * g
                state2[i] = 0.999 * state2[i] + 0.001 * g * g
                denom = np.sqrt(state2[i]) / np.sqrt(1 - 0.999**t) + 1e-8
                params[i] = params[i] - lr / (1 - 0.9**t) * state[i] / denom
            else:
                state[i] = spec.momentum * state[i] + g if t > 1 else g
                params[i] = params[i] - lr * state[i]
    return params


@pytest.mark.parametrize(
    "spec",
    [
        FinetuneSpec(epochs=6, lr=0.1, momentum=0.9, batch=N),
        FinetuneSpec(epochs=6, lr=0.1, momentum=0.0, weight_decay=0.01, batch=N, schedule="cosine"),
        FinetuneSpec(epochs=6, lr=0.1, momentum=0.5, weight_decay=0.01, batch=N, schedule="step"),
        FinetuneSpec(epochs=6, lr=0.01, optimizer="adam", weight_decay=0.01, batch=N),
    ],
    ids=["sgd-momentum", "sgd-wd-cosine", "sgd-step", "adam-wd"],
)
def test_updates_follow_torch_equations(spec):
    be = get_backend("tensorflow")
    data = _data()
    rng = np.random.default_rng(1)
    w, b = (rng.standard_normal((K, D)) * 0.3).astype(np.float32), (rng.standard_normal(K) * 0.1).astype(np.float32)
    h = be.apply(_softmax_regression(be, w, b), spec, ["fc"], _ctx(data))
    want_w, want_b = _reference(w, b, data.train_x.reshape(N, -1).astype(np.float64), data.train_y, spec, spec.epochs)
    state = be.state(h)
    np.testing.assert_allclose(state["fc.weight"], want_w, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(state["fc.bias"], want_b, rtol=2e-5, atol=1e-6)
    assert len(h.losses) == spec.epochs


def test_lr_schedules():
    assert [lr_at("constant", 0.1, t, 4) for t in range(4)] == [0.1] * 4
    assert lr_at("cosine", 0.1, 0, 4) == 0.1 and lr_at("cosine", 0.1, 2, 4) == pytest.approx(0.05)
    assert [round(lr_at("step", 1.0, t, 8), 6) for t in range(8)] == [1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01]


def test_data_order_is_the_shared_one():
    order = epoch_order(10, 3, 1)
    assert sorted(order.tolist()) == list(range(10))
    assert np.array_equal(order, np.random.default_rng(4).permutation(10))
    assert [len(b) for b in batches(10, 4, 3, 1)] == [4, 4, 2]

