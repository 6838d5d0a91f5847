"""distill on the tensorflow backend: self-distillation keeps masks, student= replaces the
model, teachers' logits are averaged, bad inputs fail before training (mirrors
test_torch_distill.py)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow
pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow

from lwdsl.backend import Dataset, StepContext, get_backend  # noqa: E402
from lwdsl.backends.tf_backend import distill as dmod  # noqa: E402
from lwdsl.backends.tf_backend.train import nhwc  # noqa: E402
from lwdsl.errors import LwdslError  # noqa: E402
from lwdsl.progress import NullBar  # noqa: E402
from lwdsl.backend.distill import load_teachers, teacher_logits
from lwdsl.semantics import distill as core  # noqa: E402
from lwdsl.specs import DistillSpec, PruneSpec  # noqa: E402
from lwdsl.specs.base import FeaturePair  # noqa: E402
from lwdsl.weights import save_weights  # noqa: E402

SHAPE, LAYERS = (1, 28, 28), ["conv1", "conv2", "fc1", "fc2"]


def _ctx(classes: int = 10) -> StepContext:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((160, *SHAPE), dtype=np.float32)
    y = np.argmax(x.reshape(160, -1) @ rng.standard_normal((784, classes)).astype(np.float32), axis=1).astype(np.int64)
    data = Dataset("synthetic", x[:128], y[:128], x[128:], y[128:], classes)
    return StepContext(data=data, seed=0, index=0, progress=lambda t, d: NullBar())


def _model(be, ref="seedcnn", classes=10):
    return be.load_model(ref, SHAPE, classes)


def test_self_distillation_keeps_the_masks():
    be, ctx = get_backend("tensorflow"), _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    handle = be.apply(handle, PruneSpec(scope="global", method="l1", amount=0.7), LAYERS, ctx)
    masks = {k: v.copy() for k, v in handle.masks.items()}
    before = be.state(handle)
    out = be.apply(handle, DistillSpec(T=2, alpha=0.5, batch=32, lr=0.05), LAYERS, ctx)
    assert out is handle and len(out.losses) == 4
    assert set(out.masks) == set(masks)
    views = out.view_map()
    for k, keep in masks.items():
        np.testing.assert_array_equal(out.masks[k], keep)
        assert np.all(views[k].weight.variable.numpy()[~keep] == 0)
    after = be.state(out)
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert "cached" in ctx.notes["teacher_cache"]


def test_student_replaces_the_model_and_later_steps_see_its_layers():
    be, ctx = get_backend("tensorflow"), _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    out = be.apply(handle, DistillSpec(T=2, alpha=0.5, student="seedcnn_student", batch=64), LAYERS, ctx)
    assert out is not handle and out.model.name == "seedcnn_student"
    widths = {i.name: i.shape[0] for i in be.layers(out)}
    assert widths == {"conv1": 6, "conv2": 10, "fc1": 25, "fc2": 10}
    out = be.apply(out, PruneSpec(method="l1", amount=0.5), ["fc1"], ctx)
    fc1 = [s for s in be.stats(out).layers if s.name == "fc1"][0]
    assert fc1.zeros == fc1.weights // 2


def test_teacher_list_averages_logits(tmp_path):
    be, ctx = get_backend("tensorflow"), _ctx()
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"t{i}.lwz")
        state = be.state(_model(be))
        save_weights(paths[-1], {k: v * (1.0 + i) for k, v in state.items()})
    handle = _model(be)
    spec = DistillSpec(teacher=tuple(str(p) for p in paths), epochs=0)
    ctx.backend = be  # as Backend.apply sets it
    teachers = load_teachers(dmod.PARTS, handle, spec, ctx)
    x = ctx.data.train_x
    each = [t.model(nhwc(x), training=False).numpy() for t in teachers]
    got = teacher_logits(dmod.PARTS, teachers, x, ctx)
    np.testing.assert_allclose(got, core.average_logits(each), rtol=1e-6, atol=1e-6)
    assert not np.allclose(each[0], each[1])
    out = be.apply(handle, spec, LAYERS, ctx)  # no original needed, nothing trained (epochs=0)
    assert out is handle and "2 teacher(s)" in ctx.notes["teacher_cache"]


def test_unknown_student_name_says_did_you_mean():
    be, ctx = get_backend("tensorflow"), _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    with pytest.raises(LwdslError, match="unknown model 'seedcnn_studnet'") as exc:
        be.apply(handle, DistillSpec(student="seedcnn_studnet"), LAYERS, ctx)
    assert "seedcnn_student" in exc.value.hint


def test_teacher_checkpoint_that_is_missing_or_does_not_fit(tmp_path):
    be, ctx = get_backend("tensorflow"), _ctx()
    handle = _model(be)
    with pytest.raises(LwdslError, match="teacher checkpoint .*nope.lwz.* does not exist"):
        be.apply(handle, DistillSpec(teacher=str(tmp_path / "nope.lwz")), LAYERS, ctx)
    save_weights(tmp_path / "other.lwz", be.state(_model(be, "lenet300")))
    with pytest.raises(LwdslError, match="teacher checkpoint .*other.lwz"):
        be.apply(handle, DistillSpec(teacher=str(tmp_path / "other.lwz")), LAYERS, ctx)
    with pytest.raises(LwdslError, match="original model, but none was kept"):
        be.apply(handle, DistillSpec(), LAYERS, ctx)


def test_output_classes_that_differ_are_refused_before_training(tmp_path):
    be, ctx = get_backend("tensorflow"), _ctx()
    handle = _model(be)
    ctx.original = _model(be, classes=5)
    with pytest.raises(LwdslError, match="teacher original has 5 output classes, the student 10"):
        be.apply(handle, DistillSpec(student="seedcnn_student"), LAYERS, ctx)
    path = tmp_path / "five.keras"
    be.save_native(_model(be, "seedcnn_student", classes=5), path)
    ctx.original = be.copy_model(handle)
    with pytest.raises(LwdslError, match="has 5 output classes, the data 10"):
        be.apply(handle, DistillSpec(student=str(path)), LAYERS, ctx)
    assert handle.losses == []


def test_feature_hints_train_a_projection_that_is_dropped():
    be, ctx = get_backend("tensorflow"), _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    spec = DistillSpec(student="seedcnn_student", features=(FeaturePair(teacher="fc1", student="fc1"),), beta=0.5, batch=64)
    out = be.apply(handle, spec, LAYERS, ctx)
    assert set(be.state(out)) == {f"{n}.{p}" for n in LAYERS for p in ("weight", "bias")}
    assert len(out.model.outputs) == 1
    assert "projection" in ctx.notes["feature_projections"]
    bad = DistillSpec(student="seedcnn_student", features=(FeaturePair(teacher="conv1", student="conv2"),))
    with pytest.raises(LwdslError, match="only the channels may differ"):
        be.apply(handle, bad, LAYERS, ctx)
    with pytest.raises(LwdslError, match="no layer 'conv9'"):
        be.apply(handle, DistillSpec(features=(FeaturePair(teacher="conv9", student="conv2"),)), LAYERS, ctx)


TRANSFER = "synthetic:1,28,28:3"  # a name the spec accepts; the test puts its own images under it


def _data(n_train: int, shape=SHAPE, classes: int = 3, seed: int = 5) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + 8, *shape), dtype=np.float32)
    y = rng.integers(0, classes, n_train + 8).astype(np.int64)
    return Dataset("transfer", x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes)


def test_transfer_set_trains_on_its_images_in_the_core_order():
    """The first recorded loss is the soft term on the transfer set's first batch of
    epoch_order(its size, run seed, 0), from the student's initial weights."""
    from lwdsl.semantics.order import epoch_order

    be, ctx = get_backend("tensorflow"), _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    transfer = _data(96)
    ctx.datasets[TRANSFER] = transfer
    spec = DistillSpec(T=2, alpha=1, data=TRANSFER, student="seedcnn_student", batch=32, lr=0.05)
    ctx.backend = be  # as Backend.apply sets it
    initial = dmod.PARTS.build_student("seedcnn_student", ctx).model
    first = nhwc(transfer.train_x[epoch_order(96, ctx.seed, 0)[:32]])
    ref = core.soft_target_loss(initial(first, training=False).numpy(), handle.model(first, training=False).numpy(), 2.0)
    out = be.apply(handle, spec, LAYERS, ctx)
    assert len(out.losses) == 3  # 96 transfer images in batches of 32 (the run's 128 would give 4)
    assert out.losses[0] == pytest.approx(ref, rel=1e-4)  # float32 KL of near-equal outputs
    assert ctx.notes["transfer_set"]["images"] == 96 and "for 96 training images" in ctx.notes["teacher_cache"]
    assert ctx.notes["student"] == {
        "name": "seedcnn_student", "replaces": "seedcnn", "params_before": 21840, "params_after": 5951,
        "nonzero_before": 21840, "nonzero_after": 5951,
    }


def test_transfer_set_of_another_shape_is_refused_before_training():
    from lwdsl.errors import RunError

    be, ctx = get_backend("tensorflow"), _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    ctx.datasets[TRANSFER] = _data(32, shape=(1, 14, 14))
    with pytest.raises(RunError, match=r"data=synthetic:1,28,28:3 has images of shape \(1, 14, 14\)"):
        be.apply(handle, DistillSpec(alpha=1, data=TRANSFER), LAYERS, ctx)
    assert handle.losses == []


@pytest.mark.parametrize("spec", [DistillSpec(T=4, alpha=0.5, batch=32), DistillSpec(T=2, alpha=1, relation="distance", batch=48)])
def test_cached_and_uncached_teacher_logits_give_the_same_losses(spec, monkeypatch):
    be, ctx = get_backend("tensorflow"), _ctx()
    state, runs = be.state(_model(be)), {}
    for cached in (True, False):
        monkeypatch.setattr(core, "CACHE_TEACHER_LOGITS", cached)
        ctx.notes = {}
        handle = _model(be)
        be.load_state(handle, state)
        ctx.original = be.copy_model(handle)
        runs[cached] = (np.asarray(be.apply(handle, spec, LAYERS, ctx).losses), "teacher_cache" in ctx.notes)
    assert runs[True][1] and not runs[False][1]
    np.testing.assert_allclose(runs[True][0], runs[False][0], rtol=1e-5)


# --- jitter= (lwdsl.semantics.jitter): Hinton's translated images ---------------------------------


def test_distill_and_finetune_jitter_train_on_the_core_translations(monkeypatch):
    from lwdsl.backend import fit as tmod  # the core's loop makes every batch's images (NCHW)
    from lwdsl.semantics.jitter import jitter_shifts, shift_images
    from lwdsl.specs import FinetuneSpec

    seen, real = [], tmod.batch_images

    def spy(x, idx, shifts):
        out = real(x, idx, shifts)
        if shifts is not None:
            seen.append((idx.copy(), np.array(out)))
        return out

    monkeypatch.setattr(tmod, "batch_images", spy)
    be, ctx = get_backend("tensorflow"), _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    spec = DistillSpec(T=20, alpha=0.9, student="seedcnn_student", jitter=2, epochs=2, batch=64)
    out = be.apply(handle, spec, LAYERS, ctx)
    assert len(seen) == len(out.losses) == 4 and "teacher_cache" not in ctx.notes
    x = ctx.data.train_x
    for b, (idx, images) in enumerate(seen):
        shifts = jitter_shifts(len(x), 2, ctx.seed, b // 2)
        np.testing.assert_array_equal(images, shift_images(x[idx], shifts[idx]))
        assert not np.array_equal(images, x[idx])
    be.apply(_model(be), FinetuneSpec(jitter=1, batch=64), LAYERS, _ctx())
    assert len(seen) == 6
