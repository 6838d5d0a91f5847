"""distill on the torch backend, through the runner and torch's own loss: transfer sets and
students checked before data is read, a user's own student module, and the teacher labelling
jittered images. What every backend does is in tests/contract/test_distill.py."""

from __future__ import annotations

import pytest

from torch_helpers import make_ctx, make_data, torch_backend  # first: skips unless torch is selected and installed

import numpy as np
import torch

from lwdsl.backend import losses
from lwdsl.errors import LwdslError
from lwdsl.language.specs import DistillSpec

pytestmark = pytest.mark.torch

SHAPE, LAYERS = (1, 28, 28), ["conv1", "conv2", "fc1", "fc2"]


def _ctx(classes: int = 10):
    return make_ctx(make_data(classes=classes, n_train=128, n_test=32))


def _model(be, ref="seedcnn", classes=10):
    return be.load_model(ref, SHAPE, classes)


TRANSFER = "synthetic:1,28,28:3"  # a name the spec accepts; the test puts its own images under it


def test_the_runner_refuses_a_transfer_set_of_another_shape_before_reading_data(monkeypatch):
    import lwdsl
    import lwdsl.data.builtin
    from lwdsl.errors import RunError

    def no_reading(name, **kw):
        raise AssertionError(f"data {name} was read")

    monkeypatch.setattr(lwdsl.data.builtin, "load_data", no_reading)
    with pytest.raises(RunError) as exc:
        lwdsl.run('distill student=seedcnn_student data="synthetic:3,28,28:10" alpha=1', "seedcnn", data="mnist", quiet=True)
    assert exc.value.exit_code == 1
    assert "step 1 `distill" in exc.value.message and "has images of shape (3, 28, 28)" in exc.value.message
    assert "the model takes the run's (1, 28, 28) (mnist)" in exc.value.message


def test_a_run_loads_the_transfer_set_and_its_report_marks_the_student(tmp_path):
    import lwdsl
    from lwdsl.data.builtin import load_data

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
    import lwdsl.data.builtin

    def no_reading(*args, **kwargs):
        raise AssertionError("data was read before the student name was checked")

    monkeypatch.setattr(lwdsl.data.builtin, "load_data", no_reading)
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
    teacher_seen, real_loss = [], losses.distill_loss  # the core's batch loss calls it with the teachers' logits

    def loss_spy(ops, spec, logits, yb, t_logits, *rest):
        teacher_seen.append(t_logits.clone())
        return real_loss(ops, spec, logits, yb, t_logits, *rest)

    monkeypatch.setattr(losses, "distill_loss", loss_spy)
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

