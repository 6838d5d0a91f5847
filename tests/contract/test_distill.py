"""``distill`` on every backend: self-distillation keeps masks, student= replaces the model,
teachers' logits are averaged, bad inputs fail before training, transfer sets, the teacher-logit
cache and jitter (merged from test_torch_distill.py and test_tf_distill.py)."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.errors import LwdslError, RunError
from lwdsl.semantics import distill as core
from lwdsl.language.specs import DistillSpec, FinetuneSpec, PruneSpec
from lwdsl.language.specs.base import FeaturePair
from lwdsl.backend.weights import save_weights

from .helpers import make_ctx, make_data

SHAPE, LAYERS = (1, 28, 28), ["conv1", "conv2", "fc1", "fc2"]
TRANSFER = "synthetic:1,28,28:3"  # a name the spec accepts; the tests put their own images under it


def _ctx(classes: int = 10):
    return make_ctx(make_data(classes=classes, n_train=128, n_test=32))


def _model(be, ref="seedcnn", classes=10):
    return be.load_model(ref, SHAPE, classes)


def _parts(backend_name):
    import importlib

    return importlib.import_module(f"lwdsl.backends.{'torch_backend' if backend_name == 'torch' else 'tf_backend'}.distill").PARTS


def test_self_distillation_keeps_the_masks(backend, kit):
    be, ctx = backend, _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    handle = be.apply(handle, PruneSpec(scope="global", method="l1", amount=0.7), LAYERS, ctx)
    masks = kit.masks(handle)
    before = be.state(handle)
    out = be.apply(handle, DistillSpec(T=2, alpha=0.5, batch=32, lr=0.05), LAYERS, ctx)
    assert out is handle and len(out.losses) == 4
    assert set(out.masks) == set(masks)
    for k, keep in masks.items():
        np.testing.assert_array_equal(kit.mask(out, k), keep)
        assert np.all(kit.weight(out, k)[~keep] == 0)
    after = be.state(out)
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert "cached" in ctx.notes["teacher_cache"]


def test_student_replaces_the_model_and_later_steps_see_its_layers(backend, kit):
    be, ctx = backend, _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    out = be.apply(handle, DistillSpec(T=2, alpha=0.5, student="seedcnn_student", batch=64), LAYERS, ctx)
    assert out is not handle and kit.model_name(out) == "seedcnn_student"
    widths = {i.name: i.shape[0] for i in be.layers(out)}
    assert widths == {"conv1": 6, "conv2": 10, "fc1": 25, "fc2": 10}
    out = be.apply(out, PruneSpec(method="l1", amount=0.5), ["fc1"], ctx)
    fc1 = be.stats(out).layers[2]
    assert fc1.name == "fc1" and fc1.zeros == fc1.weights // 2 == kit.weight(out, "fc1").size // 2


def test_teacher_list_averages_logits(backend, backend_name, kit, tmp_path):
    from lwdsl.backend.distill import load_teachers, teacher_logits

    be, ctx = backend, _ctx()
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"t{i}.lwz")
        state = be.state(_model(be))
        save_weights(paths[-1], {k: v * (1.0 + i) for k, v in state.items()})
    handle = _model(be)
    spec = DistillSpec(teacher=tuple(str(p) for p in paths), epochs=0)
    ctx.backend = be  # as Backend.apply sets it
    parts = _parts(backend_name)
    teachers = load_teachers(parts, handle, spec, ctx)
    x = ctx.data.train_x
    each = [kit.logits(t, x) for t in teachers]
    got = teacher_logits(parts, teachers, x, ctx)
    np.testing.assert_allclose(got, core.average_logits(each), rtol=1e-6, atol=1e-6)
    assert not np.allclose(each[0], each[1])
    out = be.apply(handle, spec, LAYERS, ctx)  # no original needed, nothing trained (epochs=0)
    assert out is handle and "2 teacher(s)" in ctx.notes["teacher_cache"]


def test_unknown_student_name_says_did_you_mean(backend):
    be, ctx = backend, _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    with pytest.raises(LwdslError, match="unknown model 'seedcnn_studnet'") as exc:
        be.apply(handle, DistillSpec(student="seedcnn_studnet"), LAYERS, ctx)
    assert "seedcnn_student" in exc.value.hint




def test_teacher_checkpoint_that_is_missing_or_does_not_fit(backend, backend_name, tmp_path):
    be, ctx = backend, _ctx()
    handle = _model(be)
    with pytest.raises(LwdslError, match="teacher checkpoint .*nope.lwz: checkpoint .*nope.lwz not found"):
        be.apply(handle, DistillSpec(teacher=str(tmp_path / "nope.lwz")), LAYERS, ctx)
    save_weights(tmp_path / "other.lwz", be.state(_model(be, "lenet300")))
    with pytest.raises(LwdslError, match="teacher checkpoint .*other.lwz.*does not fit.*'conv1.weight'"):
        be.apply(handle, DistillSpec(teacher=str(tmp_path / "other.lwz")), LAYERS, ctx)
    with pytest.raises(LwdslError, match="original model, but none was kept"):
        be.apply(handle, DistillSpec(), LAYERS, ctx)
    assert handle.losses == []


def _checkpoint_errors(be, tmp_path) -> tuple[str, str]:
    handle = _model(be)
    said = []
    save_weights(tmp_path / "other.lwz", be.state(_model(be, "lenet300")))
    for path in (tmp_path / "nope.lwz", tmp_path / "other.lwz"):
        with pytest.raises(LwdslError) as err:
            be.apply(handle, DistillSpec(teacher=str(path)), LAYERS, _ctx())
        said.append(err.value.message.replace(str(tmp_path), "DIR"))
    return tuple(said)


def test_teacher_checkpoint_errors_are_the_same_words_on_every_backend(tmp_path):
    from lwdsl.backend import get_backend
    from tests.conftest import selected_backends

    backends = [b for b in selected_backends() if b in ("torch", "tensorflow")]
    if len(backends) < 2:
        pytest.skip("compares two backends")
    said = {}
    for b in backends:
        (tmp_path / b).mkdir()
        said[b] = _checkpoint_errors(get_backend(b), tmp_path / b)
    assert said[backends[0]] == said[backends[1]], said


def test_output_classes_that_differ_are_refused_before_training(backend):
    be, ctx = backend, _ctx()
    handle = _model(be)
    ctx.original = _model(be, classes=5)
    with pytest.raises(LwdslError, match="teacher original has 5 output classes, the student 10"):
        be.apply(handle, DistillSpec(student="seedcnn_student"), LAYERS, ctx)
    assert handle.losses == []


@pytest.mark.parametrize("pair", ["conv2", "fc1"])
def test_feature_hints_train_a_projection_that_is_dropped(backend, kit, pair):
    be, ctx = backend, _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    spec = DistillSpec(student="seedcnn_student", features=(FeaturePair(teacher=pair, student=pair),), beta=0.5, batch=64)
    out = be.apply(handle, spec, LAYERS, ctx)
    assert set(be.state(out)) == {f"{n}.{p}" for n in LAYERS for p in ("weight", "bias")}
    assert kit.forward_hooks(out) == 0  # no taps left on the student
    assert "projection" in ctx.notes["feature_projections"]
    bad = DistillSpec(student="seedcnn_student", features=(FeaturePair(teacher="conv1", student="conv2"),))
    with pytest.raises(LwdslError, match="only the channels may differ"):
        be.apply(handle, bad, LAYERS, ctx)
    with pytest.raises(LwdslError, match="no layer 'conv9'"):
        be.apply(handle, DistillSpec(features=(FeaturePair(teacher="conv9", student="conv2"),)), LAYERS, ctx)
    assert kit.forward_hooks(handle) == 0  # the student's taps, made before the teacher's failed, are gone


def test_transfer_set_trains_on_its_images_in_the_core_order(backend, backend_name, kit):
    """The first recorded loss is the soft term on the transfer set's first batch of
    epoch_order(its size, run seed, 0), from the student's initial weights."""
    from lwdsl.semantics.order import epoch_order

    be, ctx = backend, _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    transfer = make_data(classes=3, n_train=96, n_test=8, seed=5)
    ctx.datasets[TRANSFER] = transfer
    spec = DistillSpec(T=2, alpha=1, data=TRANSFER, student="seedcnn_student", batch=32, lr=0.05)
    ctx.backend = be  # as Backend.apply sets it
    initial = _parts(backend_name).build_student("seedcnn_student", ctx)
    first = transfer.train_x[epoch_order(96, ctx.seed, 0)[:32]]
    ref = core.soft_target_loss(kit.logits(initial, first), kit.logits(handle, first), 2.0)
    out = be.apply(handle, spec, LAYERS, ctx)
    assert len(out.losses) == 3  # 96 transfer images in batches of 32 (the run's 128 would give 4)
    assert out.losses[0] == pytest.approx(ref, rel=1e-4)  # float32 KL of near-equal outputs
    assert ctx.notes["transfer_set"]["images"] == 96 and "for 96 training images" in ctx.notes["teacher_cache"]
    assert ctx.notes["student"] == {
        "name": "seedcnn_student", "replaces": "seedcnn", "params_before": 21840, "params_after": 5951,
        "nonzero_before": 21840, "nonzero_after": 5951,
    }


def test_transfer_set_of_another_shape_is_refused_before_training(backend):
    be, ctx = backend, _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    ctx.datasets[TRANSFER] = make_data(shape=(1, 14, 14), n_train=32, n_test=8)
    with pytest.raises(RunError, match=r"data=synthetic:1,28,28:3 has images of shape \(1, 14, 14\)"):
        be.apply(handle, DistillSpec(alpha=1, data=TRANSFER), LAYERS, ctx)
    assert handle.losses == []


@pytest.mark.parametrize("spec", [DistillSpec(T=4, alpha=0.5, batch=32), DistillSpec(T=2, alpha=1, relation="distance", batch=48)])
def test_cached_and_uncached_teacher_logits_give_the_same_losses(backend, spec, monkeypatch):
    be, ctx = backend, _ctx()
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


def _spy_batches(monkeypatch) -> list:
    from lwdsl.backend import fit as tmod  # the core's loop makes every batch's images (NCHW)

    seen, real = [], tmod.batch_images

    def spy(x, idx, shifts):
        out = real(x, idx, shifts)
        if shifts is not None:
            seen.append((idx.copy(), np.array(out)))
        return out

    monkeypatch.setattr(tmod, "batch_images", spy)
    return seen


def test_distill_jitter_trains_on_the_core_translations(backend, monkeypatch):
    from lwdsl.semantics.jitter import jitter_shifts, shift_images

    be, ctx = backend, _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    seen = _spy_batches(monkeypatch)
    spec = DistillSpec(T=20, alpha=0.9, student="seedcnn_student", jitter=2, epochs=2, batch=64)
    out = be.apply(handle, spec, LAYERS, ctx)
    assert len(seen) == len(out.losses) == 4 and "teacher_cache" not in ctx.notes  # no cache: images move
    x = ctx.data.train_x
    for b, (idx, images) in enumerate(seen):
        shifts = jitter_shifts(len(x), 2, ctx.seed, b // 2)
        np.testing.assert_array_equal(images, shift_images(x[idx], shifts[idx]))
        assert not np.array_equal(images, x[idx])


def test_finetune_jitter_moves_the_images_and_a_jitter_too_large_fails_before_training(backend, monkeypatch):
    be, ctx = backend, _ctx()
    seen = _spy_batches(monkeypatch)
    handle = be.apply(_model(be), FinetuneSpec(jitter=1, batch=64), LAYERS, ctx)
    assert len(seen) == 2 and len(handle.losses) == 2
    plain = be.apply(_model(be), FinetuneSpec(batch=64), LAYERS, _ctx())
    assert len(seen) == 2 and not np.allclose(handle.losses, plain.losses)  # no jitter: no calls, other losses
    tiny = make_ctx(make_data(shape=(1, 4, 4), n_train=32, n_test=8))
    small = be.load_model("mlp800", (1, 4, 4), 10)
    with pytest.raises(RunError, match=r"jitter=2 moves images by up to 2 px, too far for 4x4 images \(at most 1\)"):
        be.apply(small, FinetuneSpec(jitter=2), ["fc1"], tiny)
    assert len(seen) == 2  # refused before the first batch
