"""The training loop on every backend: updates follow torch.optim's equations (a numpy reference),
NaN stops cleanly with the weights of the epoch's start, L1 regularization shrinks the selected
weights (merged from test_torch_train.py and test_tf_train.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lwdsl.backend import Dataset
from lwdsl.errors import RunError
from lwdsl.semantics.order import epoch_order
from lwdsl.language.specs import FinetuneSpec, PruneSpec, RegularizeSpec
from lwdsl.semantics.schedules import lr_at

from .helpers import make_ctx, make_data

LAYERS = ["conv1", "conv2", "fc1", "fc2"]
N, K = 48, 3


def _tiny(seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, 1, 3, 4)).astype(np.float32)
    y = rng.integers(0, K, N).astype(np.int64)
    return Dataset("tiny", x, y, x, y, K)


def _softmax_regression(be, kit, w, b):
    h = kit.dense_model((1, 3, 4), {"fc": K})
    be.load_state(h, {"fc.weight": w, "fc.bias": b})
    return h


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
def test_updates_follow_torch_equations(backend, kit, spec):
    be, data = backend, _tiny()
    rng = np.random.default_rng(1)
    w, b = (rng.standard_normal((K, 12)) * 0.3).astype(np.float32), (rng.standard_normal(K) * 0.1).astype(np.float32)
    h = be.apply(_softmax_regression(be, kit, w, b), spec, ["fc"], make_ctx(data))
    want_w, want_b = _reference(w, b, data.train_x.reshape(N, -1).astype(np.float64), data.train_y, spec, spec.epochs)
    state = be.state(h)
    np.testing.assert_allclose(state["fc.weight"], want_w, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(state["fc.bias"], want_b, rtol=2e-5, atol=1e-6)
    assert len(h.losses) == spec.epochs


def test_lr_schedules():
    """The core's schedules (backend-free: runs once)."""
    assert [lr_at("constant", 0.1, t, 4) for t in range(4)] == [0.1] * 4 and lr_at("constant", 0.1, 77, 100) == 0.1
    assert lr_at("cosine", 0.1, 0, 4) == 0.1 and lr_at("cosine", 0.1, 2, 4) == pytest.approx(0.05)
    assert lr_at("cosine", 0.1, 0, 100) == 0.1 and lr_at("cosine", 0.1, 50, 100) == pytest.approx(0.05)
    assert [round(lr_at("step", 1.0, t, 8), 6) for t in range(8)] == [1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01]
    assert [lr_at("step", 1.0, t, 100) for t in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def _poisoned_run(be):
    """Pruned lenet5 finetuned on data with one NaN pixel in the third batch: (handle, its
    state before, the context, the RunError)."""
    data = make_data()
    ctx = make_ctx(data, index=4)
    data.train_x[int(epoch_order(256, ctx.seed, 0)[150]), 0, 3, 3] = np.nan  # one poisoned image, in the third batch
    h = be.load_model("lenet5", (1, 28, 28), 10)
    h = be.apply(h, PruneSpec(scope="global", method="l1", amount=0.6), LAYERS, make_ctx())
    start = be.state(h)
    with pytest.raises(RunError) as err:
        be.apply(h, FinetuneSpec(epochs=2), [], ctx)
    return h, start, ctx, err.value


def test_nan_loss_stops_with_a_run_error_and_the_last_good_weights(backend, kit):
    be = backend
    h, start, ctx, err = _poisoned_run(be)
    assert "step 5 (finetune): " in err.message and " at epoch 1, step 3 of 4" in err.message
    assert "holds NaN or infinite values" in err.message  # the cause, on every backend
    assert "back to the start of epoch 1" in err.message and "lr=" in err.hint
    now = be.state(h)  # steps 1 and 2 had moved the weights; they are back where epoch 1 began
    assert set(now) == set(start) and all(np.array_equal(start[k], now[k]) for k in start)
    assert all(np.isfinite(v).all() for v in now.values())
    acc, loss = be.evaluate(h, make_ctx())
    assert math.isfinite(loss)
    assert all(bar.closed for bar in ctx.extra["bars"])


def test_a_nan_image_is_named_as_the_cause_on_every_backend(backend):
    """torch's max pooling passes a NaN pixel on (the loss is nan), TensorFlow's drops it (a
    gradient is not finite): the core names the poisoned example either way, in one text."""
    _, _, ctx, err = _poisoned_run(backend)
    poisoned = int(epoch_order(256, ctx.seed, 0)[150])
    assert f"training example {poisoned} holds NaN or infinite values" in err.message
    assert "at epoch 1, step 3 of 4" in err.message


def test_nan_loss_in_the_second_batch_of_a_linear_model(backend, kit):
    data = _tiny()
    data.train_x[epoch_order(N, 0, 0)[20]] = np.nan  # in the second batch of 16
    h = _softmax_regression(backend, kit, np.zeros((K, 12), np.float32), np.zeros(K, np.float32))
    with pytest.raises(RunError, match=rf"training example {epoch_order(N, 0, 0)[20]} holds NaN or infinite values .*at epoch 1, step 2.*back to the start of epoch 1") as err:
        backend.apply(h, FinetuneSpec(epochs=1, lr=0.1, batch=16), ["fc"], make_ctx(data))
    assert "lr=" in err.value.hint
    state = backend.state(h)  # step 1 had moved the weights; they are back where epoch 1 began
    assert all(np.isfinite(v).all() for v in state.values()) and np.abs(state["fc.weight"]).sum() == 0


def test_regularize_l1_shrinks_the_selected_weights(backend, kit):
    be = backend
    sums = {}
    for l1 in (None, 1e-3):
        h = be.load_model("lenet300", (1, 28, 28), 10)
        options = dict(epochs=3, lr=0.05)
        spec = RegularizeSpec(l1=l1, **options) if l1 else FinetuneSpec(**options)
        be.apply(h, spec, ["fc1"], make_ctx())
        w = np.abs(kit.weight(h, "fc1"))
        sums[l1] = (float(w.sum()), float((w < 1e-3).mean()))
    assert sums[1e-3][0] < 0.9 * sums[None][0]
    assert sums[1e-3][1] > sums[None][1]
    # a linear model from equal weights: the L1 run ends with a smaller sum
    data = _tiny()
    w, b = np.full((K, 12), 0.2, np.float32), np.zeros(K, np.float32)
    plain = be.apply(_softmax_regression(be, kit, w, b), FinetuneSpec(epochs=3, lr=0.1, batch=16), ["fc"], make_ctx(data))
    sparse = be.apply(_softmax_regression(be, kit, w, b), RegularizeSpec(l1=0.05, epochs=3, lr=0.1, batch=16), ["fc"], make_ctx(data))
    assert np.abs(be.state(sparse)["fc.weight"]).sum() < np.abs(be.state(plain)["fc.weight"]).sum() - 0.1


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_checkpoint_has_the_cores_layout_and_resumes_to_the_same_next_step(backend, kit, optimizer):
    """Both backends name a trainer's state alike (lwdsl/backend/trainer.py: the trained tensors,
    the optimizer's state in PyTorch's names); a trainer built afresh and resumed from it takes
    the same next step as the one that went on."""
    from lwdsl.language.specs import TrainingOptions

    data = _tiny()
    w = np.random.default_rng(1).normal(0, 0.1, (K, 12)).astype(np.float32)
    h = _softmax_regression(backend, kit, w, np.zeros(K, np.float32))
    opts = TrainingOptions(epochs=1, lr=0.1, batch=16, optimizer=optimizer)
    x, y, idx = data.train_x, np.asarray(data.train_y, np.int64), np.arange(N)
    first = kit.trainer(h, opts, make_ctx(data))
    first.step(x[:16], y[:16], idx[:16], 0.1)
    state = first.checkpoint()
    went_on = first.step(x[16:32], y[16:32], idx[16:32], 0.1)
    first.close()
    trained = backend.state(h)
    assert {k for k in state if k.startswith("param:")} == {"param:0", "param:1"}
    want = {"momentum_buffer"} if optimizer == "sgd" else {"step", "exp_avg", "exp_avg_sq"}
    assert {k.split(":", 2)[2] for k in state if k.startswith("opt:")} == want
    assert {k.split(":", 2)[1] for k in state if k.startswith("opt:")} == {"0", "1"}
    again = kit.trainer(h, opts, make_ctx(data))
    again.resume(state)
    resumed = again.step(x[16:32], y[16:32], idx[16:32], 0.1)
    again.close()
    assert resumed == went_on
    assert all(np.array_equal(trained[k], v) for k, v in backend.state(h).items())
