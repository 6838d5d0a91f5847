"""Distillation means the same on both backends: each loss term equals the numpy reference
(lwdsl.semantics.distill) on fixed logits, and 20 distillation steps from identical weights and
data order agree as fine-tuning does (tests/conformance/cases.py), on the run's data or on a
transfer set (``data=``)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from lwdsl.backend import losses
from lwdsl.semantics import distill as core
from lwdsl.language.specs import DistillSpec, PruneSpec
from lwdsl.language.specs.base import FeaturePair

from .cases import BACKENDS, FLOOR_FACTOR, SHAPE, STEPS, TOLERANCE, backend, context, dataset, planted_state

pytestmark = [pytest.mark.torch, pytest.mark.tensorflow]

RTOL = 1e-6


def _module(name: str):
    package = "torch_backend" if name == "torch" else "tf_backend"
    return importlib.import_module(f"lwdsl.backends.{package}.distill")


def _fixed(seed: int = 0, b: int = 16, k: int = 10):
    rng = np.random.default_rng(seed)
    s = (rng.standard_normal((b, k)) * 3).astype(np.float32)
    t = (rng.standard_normal((b, k)) * 3).astype(np.float32)
    y = rng.integers(0, k, b).astype(np.int64)
    ft = rng.standard_normal((b, 4, 3, 3)).astype(np.float32)
    fs = rng.standard_normal((b, 4, 3, 3)).astype(np.float32)
    return s, t, y, ft, fs


def _tensors(name: str, *arrays):
    if name == "torch":
        import torch

        return [torch.from_numpy(a) for a in arrays]
    from lwdsl.backends.tf_backend._tf import tf

    return [tf.constant(a) for a in arrays]


def _num(x) -> float:
    return float(x.detach()) if hasattr(x, "detach") else float(x)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("T", [1.0, 4.0])
def test_each_term_and_the_sum_equal_the_numpy_reference(name, T):
    ops = _module(name).OPS  # the one text of lwdsl.backend.losses over each framework's ops
    s, t, y, ft, fs = _fixed()
    S, Tt, Y, FT, FS = _tensors(name, s, t, y, ft, fs)
    assert _num(ops.cross_entropy(S, Y)) == pytest.approx(core.cross_entropy(s, y), rel=RTOL)
    assert _num(losses.kl_batchmean(ops, S, Tt, T)) == pytest.approx(core.kl_batchmean(s, t, T), rel=RTOL)
    assert _num(losses.soft_target_loss(ops, S, Tt, T)) == pytest.approx(core.soft_target_loss(s, t, T), rel=RTOL)
    assert _num(losses.feature_loss(ops, [FT], [FS])) == pytest.approx(core.feature_loss([ft], [fs]), rel=RTOL)
    assert _num(losses.rkd_distance_loss(ops, S, Tt)) == pytest.approx(core.rkd_distance_loss(s, t), rel=RTOL)
    assert _num(losses.rkd_angle_loss(ops, S, Tt)) == pytest.approx(core.rkd_angle_loss(s, t), rel=RTOL)
    for relation in ("distance", "angle"):
        spec = DistillSpec(T=T, alpha=0.3, features=(FeaturePair(teacher="a", student="b"),), beta=0.7, relation=relation, gamma=2.0)
        terms = _module(name).distill_loss(spec, S, Y, Tt, [FT], [FS])
        ref = core.distill_terms(
            s, y, t, T=T, alpha=0.3, teacher_feats=[ft], projected_student_feats=[fs], beta=0.7, relation=relation, gamma=2.0
        )
        assert _num(terms["total"]) == pytest.approx(ref.total, rel=RTOL)
        assert _num(terms["ce"]) == pytest.approx(ref.ce, rel=RTOL)
        assert _num(terms["soft"]) == pytest.approx(ref.soft, rel=RTOL)
        assert _num(terms["feature"]) == pytest.approx(ref.feature, rel=RTOL)
        assert _num(terms["relation"]) == pytest.approx(ref.relation, rel=RTOL)


# --- 20 steps of training from identical weights ----------------------------------------------------

CASES = {
    "soft-after-prune": ("lenet5", None, DistillSpec(T=4, alpha=0.5, epochs=1, lr=0.01, batch=32)),
    "student-angle": ("seedcnn", "seedcnn_student", DistillSpec(T=2, alpha=0.7, student="seedcnn_student", relation="angle", gamma=0.5, batch=32)),
    "student-features-adam": (
        "seedcnn",
        "seedcnn_student",
        DistillSpec(
            T=2, alpha=0.5, student="seedcnn_student", features=(FeaturePair(teacher="conv2", student="conv2"), FeaturePair(teacher="fc1", student="fc1")),
            beta=0.5, relation="distance", optimizer="adam", lr=1e-3, batch=32,
        ),
    ),
    # a transfer set of 704 other images (22 steps): both backends visit it in the core's order
    "student-transfer": ("seedcnn", "seedcnn_student", DistillSpec(T=2, alpha=1, student="seedcnn_student", data="synthetic:1,28,28:10", batch=32)),
    # jitter=2: both backends translate the same images (the core's shifts) and the teacher labels each batch
    "student-jitter-cosine": (
        "seedcnn", "seedcnn_student", DistillSpec(T=20, alpha=0.9, student="seedcnn_student", jitter=2, schedule="cosine", batch=32)
    ),
}


def _run(name: str, case: str, monkeypatch, direction: float = 0.0) -> dict:
    teacher_ref, student_ref, spec = CASES[case]
    be = backend(name)
    ctx = context(dataset())
    if spec.data is not None:
        ctx.datasets[spec.data] = dataset(n_train=704, n_test=8, seed=11)
    nudge = (lambda st: {k: np.nextafter(v, np.float32(direction)).astype(v.dtype) for k, v in st.items()}) if direction else (lambda st: st)
    handle = be.load_model(teacher_ref, SHAPE, 10)
    be.load_state(handle, planted_state(teacher_ref, seed=1, trainable=True))
    ctx.original = be.copy_model(handle)
    if student_ref is None:
        be.load_state(handle, nudge(be.state(handle)))
        layers = [i.name for i in be.layers(handle) if i.kind in ("conv", "linear")]
        handle = be.apply(handle, PruneSpec(scope="global", method="l1", amount=0.5), layers, ctx)
    else:
        parts = _module(name).PARTS
        build = parts.build_student

        def planted_student(ref, c):
            student = build(ref, c)
            be.load_state(student, nudge(planted_state(student_ref, seed=2, trainable=True)))
            return student

        monkeypatch.setattr(parts, "build_student", planted_student)
    out = be.apply(handle, spec, [], ctx)
    monkeypatch.undo()
    return {"losses": np.asarray(out.losses), "state": be.state(be.finalize(out))}


@pytest.mark.parametrize("case", list(CASES))
def test_distillation_steps_agree_across_backends(case, monkeypatch):
    spec = CASES[case][2]
    runs = {name: _run(name, case, monkeypatch) for name in BACKENDS}
    floor = _run("torch", case, monkeypatch, direction=np.inf)
    lt, lk = runs["torch"]["losses"], runs["tensorflow"]["losses"]
    assert lt.shape == lk.shape and lt.size >= STEPS
    n = STEPS
    loss_rel = float(np.max(np.abs(lt[:n] - lk[:n]) / np.abs(lt[:n])))
    floor_rel = float(np.max(np.abs(lt[:n] - floor["losses"][:n]) / np.abs(lt[:n])))
    limit = max(TOLERANCE["loss_rtol"], FLOOR_FACTOR * floor_rel)
    assert limit <= 1e-3, f"rounding alone moves distillation too far to compare ({floor_rel:.1e})"
    assert loss_rel <= limit, f"loss rel. diff {loss_rel:.1e} > {limit:.1e}"
    st, sk, sf = runs["torch"]["state"], runs["tensorflow"]["state"], floor["state"]
    weight_abs = max(float(np.max(np.abs(st[k] - sk[k]))) for k in st)
    floor_weight = max(float(np.max(np.abs(st[k] - sf[k]))) for k in st)
    base = spec.lr * STEPS if spec.optimizer == "adam" else TOLERANCE["weight_atol"]
    assert weight_abs <= max(base, FLOOR_FACTOR * floor_weight), f"weights differ by {weight_abs:.1e}"
    assert all(np.array_equal(st[k] == 0, sk[k] == 0) for k in st if k.endswith(".weight"))
