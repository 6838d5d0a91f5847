"""distill on the torch backend: self-distillation keeps masks, student= replaces the model,
teachers' logits are averaged, bad inputs fail before training (mirrors test_tf_distill.py)."""

from __future__ import annotations

import pytest

from torch_helpers import make_ctx, make_data, torch_backend  # first: skips unless torch is selected and installed

import numpy as np
import torch

from lwdsl.backends.torch_backend import distill as dmod
from lwdsl.errors import LwdslError
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
    teachers = dmod.load_teachers(handle, spec, ctx)
    x = ctx.data.train_x
    each = [t.module(torch.as_tensor(x)).detach().numpy() for t in teachers]
    got = dmod.teacher_logits(teachers, x, ctx).numpy()
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
