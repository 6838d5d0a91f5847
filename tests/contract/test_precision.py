"""``precision=bf16|fp16`` on every backend: a bf16 fine-tune trains as well as fp32 on real
MNIST with float32 weights and masks held; every kind of training step runs in bf16; fp16's
loss scaling skips a step whose scaled gradients overflow and backs the scale off
(:mod:`lwdsl.semantics.precision`). The fp16 trainer is driven directly here: the runner
refuses fp16 on the CPU (tests/runner/test_precision_run.py)."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.backend import Dataset
from lwdsl.language.specs import DistillSpec, FinetuneSpec, PruneSpec, QuantizeSpec, RegularizeSpec, TrainingOptions
from lwdsl.semantics.precision import BACKOFF_FACTOR

from .helpers import make_ctx, make_data

LAYERS = ["conv1", "conv2", "fc1", "fc2"]


@pytest.fixture(scope="module")
def mnist_part(data_root) -> Dataset:
    """3,000 training and 1,000 test images of real MNIST."""
    from lwdsl.data.builtin import load_data

    d = load_data("mnist")
    return Dataset("mnist-part", np.asarray(d.train_x[:3000]), d.train_y[:3000], np.asarray(d.test_x[:1000]), d.test_y[:1000], 10)


def _pruned_lenet5(backend, data):
    backend.set_seed(0)
    h = backend.load_model("lenet5", (1, 28, 28), 10)
    return backend.apply(h, PruneSpec(scope="global", method="l1", amount=0.5), LAYERS, make_ctx(data))


def _masks_held(backend, kit, h) -> bool:
    return all(not kit.weight(h, name)[~kit.mask(h, name)].any() for name in h.masks)


@pytest.mark.slow  # real MNIST, two fine-tunes per backend
def test_a_bf16_finetune_trains_like_fp32_with_float32_weights_and_masks_held(backend, kit, mnist_part):
    accuracy = {}
    for precision in ("fp32", "bf16"):
        h = _pruned_lenet5(backend, mnist_part)
        h = backend.apply(h, FinetuneSpec(epochs=1, lr=0.05, precision=precision), [], make_ctx(mnist_part, index=1))
        assert _masks_held(backend, kit, h)
        assert kit.compute_dtypes(h) == {"float32"}  # master weights, and the model's own policy back
        state = backend.state(h)
        assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in state.values())
        accuracy[precision] = backend.evaluate(h, make_ctx(mnist_part))[0]
    assert accuracy["fp32"] > 0.8, accuracy  # one epoch of 3,000 images from scratch trains
    assert abs(accuracy["bf16"] - accuracy["fp32"]) < 0.03, accuracy


@pytest.mark.parametrize("spec", [
    QuantizeSpec(dtype="int8", mode="qat", precision="bf16"),
    QuantizeSpec(dtype="int4", mode="qat", precision="bf16"),
    RegularizeSpec(l1=1e-4, precision="bf16"),
    PruneSpec(method="l1", amount=0.7, schedule="gradual", epochs=1, precision="bf16"),
    DistillSpec(T=2, alpha=0.5, precision="bf16"),
], ids=lambda s: f"{s.op}-{getattr(s, 'dtype', '')}")
def test_every_training_step_runs_in_bf16(backend, kit, spec):
    data = make_data()
    h = _pruned_lenet5(backend, data)
    ctx = make_ctx(data, index=1)
    if spec.needs_original() or spec.op == "distill":
        ctx.original = backend.copy_model(h)
    h = backend.apply(h, spec, LAYERS, ctx)
    assert _masks_held(backend, kit, h)
    assert kit.compute_dtypes(h) == {"float32"}
    assert all(np.isfinite(v).all() for v in backend.state(h).values())
    assert np.isfinite(h.losses).all() and len(h.losses) == 4  # 256 images, batches of 64


def test_fp16_skips_a_step_whose_scaled_gradients_overflow_and_backs_off(backend, kit):
    data = make_data()
    h = _pruned_lenet5(backend, data)
    before = backend.state(h)
    trainer = kit.trainer(h, TrainingOptions(precision="fp16", lr=0.05), make_ctx(data, index=1))
    try:
        idx = np.arange(64)
        kit.set_loss_scale(trainer, 3e38)  # loss ~2.3 times this is inf in float32
        ce, whole, ok = trainer.step(data.train_x[idx], data.train_y[idx].astype(np.int64), idx, 0.05)
        assert ok and np.isfinite(ce)  # skipped, not an error
        assert kit.loss_scale(trainer) == pytest.approx(3e38 * BACKOFF_FACTOR, rel=1e-6)
        after = backend.state(h)
        assert all(np.array_equal(before[k], after[k]) for k in before)  # weights, so masks, unchanged
        kit.set_loss_scale(trainer, 1024.0)
        _, _, ok = trainer.step(data.train_x[idx], data.train_y[idx].astype(np.int64), idx, 0.05)
        assert ok and kit.loss_scale(trainer) == 1024.0
        moved = backend.state(h)
        assert any(not np.array_equal(before[k], moved[k]) for k in before)
    finally:
        trainer.close()
    assert _masks_held(backend, kit, h)
    assert kit.compute_dtypes(h) == {"float32"}
