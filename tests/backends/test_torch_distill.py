"""distill on the torch backend: self-distillation keeps masks, student= replaces the model,
teachers' logits are averaged, bad inputs fail before training (mirrors test_tf_distill.py)."""

from __future__ import annotations

import pytest

from torch_helpers import make_ctx, make_data, torch_backend  # first: skips unless torch is selected and installed

import numpy as np
import torch

from lwdsl.backends.torch_backend import distill as dmod
from lwdsl.errors import LwdslError
from lwdsl.backend.distill import load_teachers, teacher_logits
from lwdsl.semantics import distill as core
from lwdsl.specs import DistillSpec, PruneSpec
from lwdsl.weights import save_weights

pytestmark = pytest.mark.torch

SHAPE, LAYERS = (1, 28, 28), ["conv1", "conv2", "fc1", "fc2"]


def _ctx(classes: int = 10):
    return make_ctx(make_data(classes=classes, n_train=128, n_test=32))


def _model(be, ref="seedcnn", classes=10):
    return be.load_model(ref, SHAPE, classes)


def test_self_distillation_keeps_the_masks():
    be, ctx = torch_backend(), _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    handle = be.apply(handle, PruneSpec(scope="global", method="l1", amount=0.7), LAYERS, ctx)
    masks = {k: v.clone() for k, v in handle.masks.items()}
    before = be.state(handle)
    out = be.apply(handle, DistillSpec(T=2, alpha=0.5, batch=32, lr=0.05), LAYERS, ctx)
    assert out is handle and len(out.losses) == 4
    assert set(out.masks) == set(masks)
    for k, keep in masks.items():
        assert torch.equal(out.masks[k], keep)
        assert torch.all(out.module.get_submodule(k).weight[~keep] == 0)
    after = be.state(out)
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert "cached" in ctx.notes["teacher_cache"]


def test_student_replaces_the_model_and_later_steps_see_its_layers():
    be, ctx = torch_backend(), _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    out = be.apply(handle, DistillSpec(T=2, alpha=0.5, student="seedcnn_student", batch=64), LAYERS, ctx)
    assert out is not handle and out.ref == "seedcnn_student"
    widths = {i.name: i.shape[0] for i in be.layers(out)}
    assert widths == {"conv1": 6, "conv2": 10, "fc1": 25, "fc2": 10}
    out = be.apply(out, PruneSpec(method="l1", amount=0.5), ["fc1"], ctx)
    assert be.stats(out).layers[2].zeros == out.module.fc1.weight.numel() // 2


def test_teacher_list_averages_logits(tmp_path):
    be, ctx = torch_backend(), _ctx()
    paths = []
    for i in range(2):
        torch.manual_seed(i)
        paths.append(tmp_path / f"t{i}.lwz")
        save_weights(paths[-1], be.state(_model(be)))
    handle = _model(be)
    spec = DistillSpec(teacher=tuple(str(p) for p in paths), epochs=0)
    ctx.backend = be  # as Backend.apply sets it
    teachers = load_teachers(dmod.PARTS, handle, spec, ctx)
    x = ctx.data.train_x
    each = [t.module(torch.as_tensor(x)).detach().numpy() for t in teachers]
    got = teacher_logits(dmod.PARTS, teachers, x, ctx)
    np.testing.assert_allclose(got, core.average_logits(each), rtol=1e-6, atol=1e-6)
    assert not np.allclose(each[0], each[1])
    out = be.apply(handle, spec, LAYERS, ctx)  # no original needed, nothing trained (epochs=0)
    assert out is handle and "2 teacher(s)" in ctx.notes["teacher_cache"]


def test_unknown_student_name_says_did_you_mean():
    be, ctx = torch_backend(), _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    with pytest.raises(LwdslError, match="unknown model 'seedcnn_studnet'") as exc:
        be.apply(handle, DistillSpec(student="seedcnn_studnet"), LAYERS, ctx)
    assert "seedcnn_student" in exc.value.hint


def test_teacher_checkpoint_that_is_missing_or_does_not_fit(tmp_path):
    be, ctx = torch_backend(), _ctx()
    handle = _model(be)
    with pytest.raises(LwdslError, match="teacher checkpoint .*nope.lwz.* not found"):
        be.apply(handle, DistillSpec(teacher=str(tmp_path / "nope.lwz")), LAYERS, ctx)
    save_weights(tmp_path / "other.lwz", be.state(_model(be, "lenet300")))
    with pytest.raises(LwdslError, match="teacher checkpoint .*other.lwz.*does not fit"):
        be.apply(handle, DistillSpec(teacher=str(tmp_path / "other.lwz")), LAYERS, ctx)
    with pytest.raises(LwdslError, match="original model, but none was kept"):
        be.apply(handle, DistillSpec(), LAYERS, ctx)


def test_output_classes_that_differ_are_refused_before_training():
    be, ctx = torch_backend(), _ctx()
    handle = _model(be)
    ctx.original = _model(be, classes=5)
    with pytest.raises(LwdslError, match="teacher original has 5 output classes, the student 10"):
        be.apply(handle, DistillSpec(student="seedcnn_student"), LAYERS, ctx)
    assert handle.losses == []


def test_feature_hints_train_a_projection_that_is_dropped():
    from lwdsl.specs.base import FeaturePair

    be, ctx = torch_backend(), _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    spec = DistillSpec(student="seedcnn_student", features=(FeaturePair(teacher="conv2", student="conv2"),), beta=0.5, batch=64)
    out = be.apply(handle, spec, LAYERS, ctx)
    assert set(out.module.state_dict()) == {f"{n}.{p}" for n in LAYERS for p in ("weight", "bias")}
    assert not out.module._forward_hooks and not out.module.conv2._forward_hooks
    assert "projection" in ctx.notes["feature_projections"]
    bad = DistillSpec(student="seedcnn_student", features=(FeaturePair(teacher="conv1", student="conv2"),))
    with pytest.raises(LwdslError, match="only the channels may differ"):
        be.apply(handle, bad, LAYERS, ctx)
    with pytest.raises(LwdslError, match="no layer 'conv9'"):
        be.apply(handle, DistillSpec(features=(FeaturePair(teacher="conv9", student="conv2"),)), LAYERS, ctx)


TRANSFER = "synthetic:1,28,28:3"  # a name the spec accepts; the test puts its own images under it


def test_transfer_set_trains_on_its_images_in_the_core_order():
    """The first recorded loss is the soft term on the transfer set's first batch of
    epoch_order(its size, run seed, 0), from the student's initial weights."""
    from lwdsl.semantics.order import epoch_order

    be, ctx = torch_backend(), _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    transfer = make_data(classes=3, n_train=96, n_test=8, seed=5)
    ctx.datasets[TRANSFER] = transfer
    spec = DistillSpec(T=2, alpha=1, data=TRANSFER, student="seedcnn_student", batch=32, lr=0.05)
    ctx.backend = be  # as Backend.apply sets it
    initial = dmod.PARTS.build_student("seedcnn_student", ctx).module.eval()
    first = torch.as_tensor(transfer.train_x[epoch_order(96, ctx.seed, 0)[:32]])
    with torch.no_grad():
        ref = core.soft_target_loss(initial(first).numpy(), handle.module.eval()(first).numpy(), 2.0)
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

    be, ctx = torch_backend(), _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    ctx.datasets[TRANSFER] = make_data(shape=(1, 14, 14), n_train=32, n_test=8)
    with pytest.raises(RunError, match=r"data=synthetic:1,28,28:3 has images of shape \(1, 14, 14\)"):
        be.apply(handle, DistillSpec(alpha=1, data=TRANSFER), LAYERS, ctx)
    assert handle.losses == []


def test_the_runner_refuses_a_transfer_set_of_another_shape_before_reading_data(monkeypatch):
    import lwdsl
    import lwdsl.data
    from lwdsl.errors import RunError

    def no_reading(name, **kw):
        raise AssertionError(f"data {name} was read")

    monkeypatch.setattr(lwdsl.data, "load_data", no_reading)
    with pytest.raises(RunError) as exc:
        lwdsl.run('distill student=seedcnn_student data="synthetic:3,28,28:10" alpha=1', "seedcnn", data="mnist", quiet=True)
    assert exc.value.exit_code == 1
    assert "step 1 `distill" in exc.value.message and "has images of shape (3, 28, 28)" in exc.value.message
    assert "the model takes the run's (1, 28, 28) (mnist)" in exc.value.message


@pytest.mark.parametrize("spec", [DistillSpec(T=4, alpha=0.5, batch=32), DistillSpec(T=2, alpha=1, relation="distance", batch=48)])
def test_cached_and_uncached_teacher_logits_give_the_same_losses(spec, monkeypatch):
    be, ctx = torch_backend(), _ctx()
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


def test_a_run_loads_the_transfer_set_and_its_report_marks_the_student(tmp_path):
    import lwdsl
    from lwdsl.data import load_data

    recipe = f'distill student=seedcnn_student data="{TRANSFER}" alpha=1 T=2 epochs=1 batch=256\nprune l1 0.5 on "fc1"'
    result = lwdsl.run(recipe, "seedcnn", data="synthetic:1,28,28:10", baseline_epochs=0, out=tmp_path / "run", quiet=True, latency=False)
    row = result.report["steps"][1]
    assert row["transfer_set"] == {"data": TRANSFER, "images": 2048, "sha256": load_data(TRANSFER).sha256}
    assert load_data(TRANSFER).sha256 != load_data("synthetic:1,28,28:10").sha256
    assert row["student"]["params_after"] == result.report["steps"][2]["metrics"]["params"] == 5951
    text = (tmp_path / "run" / "report.md").read_text()
    section = text.split("## Model replaced", 1)[1]
    assert "`seedcnn` (21,840 params) replaced by the student `seedcnn_student` (5,951 params, 3.67x fewer)" in section
    assert section.count("replaced by") == 1  # the prune step after it replaces nothing
    import json

    lock = json.loads((tmp_path / "run" / "lwdsl.lock.json").read_text())
    assert lock["other_data_sha256"] == {TRANSFER: load_data(TRANSFER).sha256}


def test_a_users_own_student_module_through_the_python_api(tmp_path):
    import lwdsl

    small = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    before = {k: v.clone() for k, v in small.state_dict().items()}
    result = lwdsl.run("distill student=small T=2 alpha=0.5 epochs=1 batch=256", "seedcnn", data="synthetic:1,28,28:10",
                       baseline_epochs=0, quiet=True, latency=False, models={"small": small})
    row = result.report["steps"][1]
    assert row["student"]["name"] == "small" and row["student"]["params_after"] == 784 * 16 + 16 + 16 * 10 + 10
    assert result.report["steps"][1]["metrics"]["params"] == row["student"]["params_after"]
    assert all(torch.equal(before[k], v) for k, v in small.state_dict().items())  # the user's module is untouched


def test_an_unknown_student_fails_before_any_data_is_read(monkeypatch):
    import lwdsl
    import lwdsl.data

    def no_reading(*args, **kwargs):
        raise AssertionError("data was read before the student name was checked")

    monkeypatch.setattr(lwdsl.data, "load_data", no_reading)
    with pytest.raises(LwdslError) as err:
        lwdsl.run("distill student=seedcnn_studnt", "seedcnn", data="mnist", baseline_epochs=0, quiet=True, latency=False)
    assert "step 1 `distill student=seedcnn_studnt`" in err.value.message and "seedcnn_student" in str(err.value.hint or err.value.message)


# --- jitter= (lwdsl.semantics.jitter): Hinton's translated images ---------------------------------


def _spy_batches(monkeypatch) -> list:
    from lwdsl.backend import fit as tmod  # the core's loop makes every batch's images

    seen, real = [], tmod.batch_images

    def spy(x, idx, shifts):
        out = real(x, idx, shifts)
        if shifts is not None:
            seen.append((idx.copy(), torch.from_numpy(out.copy())))
        return out

    monkeypatch.setattr(tmod, "batch_images", spy)
    return seen


def test_distill_jitter_trains_on_the_core_translations_and_the_teacher_labels_them(monkeypatch):
    from lwdsl.semantics.jitter import jitter_shifts, shift_images

    be, ctx = torch_backend(), _ctx()
    handle = _model(be)
    ctx.original = be.copy_model(handle)
    seen = _spy_batches(monkeypatch)
    teacher_seen, real_loss = [], dmod.distill_loss

    def loss_spy(spec, logits, yb, t_logits, *rest):
        teacher_seen.append(t_logits.clone())
        return real_loss(spec, logits, yb, t_logits, *rest)

    monkeypatch.setattr(dmod, "distill_loss", loss_spy)
    spec = DistillSpec(T=20, alpha=0.9, student="seedcnn_student", jitter=2, epochs=2, batch=64)
    out = be.apply(handle, spec, LAYERS, ctx)
    assert len(seen) == len(out.losses) == 4 and "teacher_cache" not in ctx.notes  # no cache: images move
    x = ctx.data.train_x
    for b, (idx, images) in enumerate(seen):
        shifts = jitter_shifts(len(x), 2, ctx.seed, b // 2)
        np.testing.assert_array_equal(images.numpy(), shift_images(x[idx], shifts[idx]))
        assert not np.array_equal(images.numpy(), x[idx])
    with torch.inference_mode():
        want = ctx.original.module.eval()(seen[0][1])
    torch.testing.assert_close(teacher_seen[0], want, rtol=1e-6, atol=1e-6)  # the teacher saw the moved images


def test_finetune_jitter_moves_the_images_and_a_jitter_too_large_fails_before_training(monkeypatch):
    from lwdsl.errors import RunError
    from lwdsl.specs import FinetuneSpec

    be, ctx = torch_backend(), _ctx()
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
