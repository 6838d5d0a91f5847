"""The distill step's batch loss, written once (lwdsl.backend.distill.distill_training): which
teachers run, the feature pairs' taps, each projection's weights and seed, the averaging, and
the taps removed after a failure. Numpy stands in for a backend (the flow is framework-free), so
the loss equals the numpy reference (lwdsl.semantics.distill.distill_terms) to float64 rounding."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.backend.distill import DistillParts, distill_training
from lwdsl.errors import LwdslError
from lwdsl.language.specs import DistillSpec
from lwdsl.language.specs.base import FeaturePair
from lwdsl.semantics import distill as core

from tests.contract.helpers import make_ctx, make_data


class NumpyOps:
    """:class:`lwdsl.backend.losses.TensorOps` on numpy arrays (no autodiff: the values only)."""

    cross_entropy = staticmethod(core.cross_entropy)
    log_softmax = staticmethod(core.log_softmax)
    exp, where, mean, sqrt = (staticmethod(f) for f in (np.exp, np.where, np.mean, np.sqrt))

    @staticmethod
    def sum(x, axis=None, keepdims=False):
        return np.sum(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def flat(x):
        return x.reshape(len(x), -1)

    @staticmethod
    def zero_diagonal(d):
        return np.where(np.eye(len(d), dtype=bool), 0.0, d)

    @staticmethod
    def matmul_t(u):
        return u @ u.transpose(0, 2, 1)

    @staticmethod
    def cast(x, dtype):
        return np.asarray(x, dtype=dtype)

    @staticmethod
    def take(table, idx):
        return table[idx]


class Linear(DistillParts):
    """A model is a dict: ``w`` (784 -> 10 logits) and layers ``h`` (784 -> width); a tapped
    layer's output is ``x @ w[name]``. Records the taps, projections and stops."""

    ops = NumpyOps()

    def __init__(self) -> None:
        self.tapped, self.made, self.stopped = [], [], []

    def model_name(self, handle):
        return handle["name"]

    def load_teacher(self, base, ctx, path):
        raise AssertionError("no checkpoints here")

    def build_student(self, name, ctx):
        raise AssertionError("no students built here")

    def outputs(self, handle, x):
        return x.reshape(len(x), -1) @ handle["w"]

    def fit(self, handle, spec, ctx, **kwargs):
        raise AssertionError("no training here")

    def layer_names(self, handle):
        return [n for n in handle if n not in ("w", "name")]

    def tap(self, handle, names, role):
        self.tapped.append((handle["name"], tuple(names), role))
        return handle, list(names)

    def start(self, student, teachers, cache):
        return cache

    def stop(self, tapped, teachers):
        self.stopped.append(len(tapped))

    def images(self, x):
        return np.asarray(x, np.float64)

    def run(self, tapped, x, model=None):
        handle, names = tapped if tapped is not None else (None, [])
        flat = x.reshape(len(x), -1)
        logits = model(x) if model is not None else self.outputs(handle, x)
        return logits, [flat @ handle[n] for n in names]

    def projection(self, weight, bias, rank):
        self.made.append((weight, bias, rank))
        return (lambda f: f @ weight.T + bias), [weight, bias]


def _model(name: str, seed: int, widths: dict) -> dict:
    rng = np.random.default_rng(seed)
    return {"name": name, "w": rng.standard_normal((784, 10)) * 0.1, **{n: rng.standard_normal((784, c)) * 0.1 for n, c in widths.items()}}


PAIRS = (FeaturePair(teacher="t1", student="s1"), FeaturePair(teacher="t2", student="s2"))


def test_the_batch_loss_is_the_reference_on_averaged_teachers_and_seeded_projections():
    ctx = make_ctx(make_data(n_train=32, n_test=8), seed=3, index=2)
    parts = Linear()
    student = _model("student", 0, {"s1": 4, "s2": 6})
    teachers = [_model(f"teacher{i}", i + 1, {"t1": 5, "t2": 3}) for i in range(2)]
    spec = DistillSpec(T=2, alpha=0.4, features=PAIRS, beta=0.5, relation="distance", gamma=0.3)
    training = distill_training(parts, student, teachers, spec, None, ctx)
    assert parts.tapped == [("student", ("s1", "s2"), "student"), ("teacher0", ("t1", "t2"), "teacher 1"),
                            ("teacher1", ("t1", "t2"), "teacher 2")]
    assert training.projections == 2 and len(training.extra) == 4
    for i, ((w, b, rank), (c_in, c_out)) in enumerate(zip(parts.made, [(4, 5), (6, 3)])):
        ref_w, ref_b = core.projection_init(c_in, c_out, ctx.step_seed() + i)  # pair i: the step seed + i
        assert rank == 2 and np.array_equal(w, ref_w) and np.array_equal(b, ref_b)

    x, y = ctx.data.train_x[:8].astype(np.float64), ctx.data.train_y[:8]
    total, recorded = training.loss(lambda v: parts.outputs(student, v), x, y, None)
    flat = x.reshape(8, -1)
    t_logits = core.average_logits([parts.outputs(t, x) for t in teachers])
    t_feats = [(flat @ teachers[0][n] + flat @ teachers[1][n]) / 2 for n in ("t1", "t2")]
    projected = [(flat @ student[n]) @ w.T + b for n, (w, b, _) in zip(("s1", "s2"), parts.made)]
    ref = core.distill_terms(parts.outputs(student, x), y, t_logits, T=2, alpha=0.4, teacher_feats=t_feats,
                             projected_student_feats=projected, beta=0.5, relation="distance", gamma=0.3)
    assert float(total) == pytest.approx(ref.total, rel=1e-6) and float(recorded) == pytest.approx(ref.ce, rel=1e-6)
    training.close()
    assert parts.stopped == [3]


def test_cached_teacher_logits_are_gathered_by_index_and_no_teacher_runs():
    ctx = make_ctx(make_data(n_train=32, n_test=8))
    parts = Linear()
    student, teacher = _model("student", 0, {}), _model("teacher", 1, {})
    cache = np.random.default_rng(5).standard_normal((32, 10)).astype(np.float32)
    training = distill_training(parts, student, [teacher], DistillSpec(T=4, alpha=1.0), cache, ctx)
    parts.run = lambda tapped, x, model=None: (model(x), []) if model is not None else pytest.fail("a teacher ran")
    idx = np.array([3, 30, 7])
    x = ctx.data.train_x[idx].astype(np.float64)
    total, _ = training.loss(lambda v: parts.outputs(student, v), x, ctx.data.train_y[idx], idx)
    assert float(total) == pytest.approx(core.soft_target_loss(parts.outputs(student, x), cache[idx], 4.0), rel=1e-6)


def test_a_layer_the_teacher_lacks_is_named_and_the_taps_made_are_stopped():
    ctx = make_ctx(make_data(n_train=32, n_test=8))
    parts = Linear()
    student, teacher = _model("student", 0, {"s1": 4, "s2": 6}), _model("teacher", 1, {"t1": 5})
    with pytest.raises(LwdslError, match="the teacher 1 has no layer 't2'") as err:
        distill_training(parts, student, [teacher], DistillSpec(features=PAIRS), None, ctx)
    assert err.value.hint == "its layers: t1"  # too far from 't2' for a did-you-mean
    assert parts.stopped == [1]  # the student's taps, made before the failure
