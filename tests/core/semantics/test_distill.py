"""The numpy reference of the distillation loss terms (lwdsl.semantics.distill)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lwdsl.semantics import distill as D

_floats = st.floats(-20, 20, allow_nan=False, width=32)


def _logits(b: int = 4, k: int = 5):
    return arrays(np.float32, (b, k), elements=_floats)


@settings(max_examples=50, deadline=None)
@given(_logits(), _logits(), st.floats(0.5, 10))
def test_kl_is_non_negative_and_zero_for_identical_logits(s, t, T):
    assert D.kl_batchmean(s, t, T) >= -1e-12
    assert D.kl_batchmean(t, t, T) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(_logits(), _logits(), st.lists(st.integers(0, 4), min_size=4, max_size=4))
def test_alpha_zero_is_cross_entropy(s, t, y):
    terms = D.distill_terms(s, np.array(y), t, T=3.0, alpha=0.0)
    assert terms.total == pytest.approx(D.cross_entropy(s, np.array(y)), rel=1e-12, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(_logits(), _logits(), st.floats(0.5, 10))
def test_soft_term_is_t_squared_times_kl(s, t, T):
    assert D.soft_target_loss(s, t, T) == pytest.approx(T * T * D.kl_batchmean(s, t, T), rel=1e-12, abs=1e-15)


def test_batchmean_divides_by_the_batch_not_the_classes():
    s = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = np.array([[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]])
    T = 2.0
    by_hand = 0.0
    for i in range(2):
        ps = [math.exp(v / T) for v in s[i]]
        pt = [math.exp(v / T) for v in t[i]]
        ps = [p / sum(ps) for p in ps]
        pt = [p / sum(pt) for p in pt]
        by_hand += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    by_hand /= 2  # the batch size, not 2 * 3 elements
    assert D.kl_batchmean(s, t, T) == pytest.approx(by_hand, rel=1e-12)
    assert D.soft_target_loss(s, t, T) == pytest.approx(4 * by_hand, rel=1e-12)
    assert not math.isclose(D.kl_batchmean(s, t, T), by_hand / 3)


def test_cross_entropy_and_log_softmax_are_stable():
    z = np.array([[1000.0, 0.0, -1000.0]])
    assert np.all(np.isfinite(D.log_softmax(z)))
    assert D.cross_entropy(z, np.array([0])) == pytest.approx(0.0, abs=1e-12)
    assert D.cross_entropy(z, np.array([1])) == pytest.approx(1000.0)
    assert D.kl_batchmean(z, z[:, ::-1], 1.0) == pytest.approx(2000.0)


def test_weighted_sum_and_terms():
    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    y = rng.integers(0, 4, 6)
    ft, fs = [rng.standard_normal((6, 3, 2, 2))], [rng.standard_normal((6, 3, 2, 2))]
    terms = D.distill_terms(s, y, t, T=2.0, alpha=0.3, teacher_feats=ft, projected_student_feats=fs, beta=0.5, relation="angle", gamma=2.0)
    expect = 0.7 * D.cross_entropy(s, y) + 0.3 * D.soft_target_loss(s, t, 2.0) + 0.5 * D.mse(ft[0], fs[0]) + 2.0 * D.rkd_angle_loss(s, t)
    assert terms.total == pytest.approx(expect, rel=1e-12)
    assert terms.feature == pytest.approx(D.mse(ft[0], fs[0]))


def test_teachers_average_their_logits():
    a, b = np.array([[1.0, 2.0]], np.float32), np.array([[3.0, -2.0]], np.float32)
    np.testing.assert_array_equal(D.average_logits([a, b]), np.array([[2.0, 0.0]], np.float32))
    np.testing.assert_array_equal(D.average_logits([a]), a)
    # the ensemble is softened once: not the mean of the teachers' probabilities
    s = np.zeros((1, 2))
    assert D.kl_batchmean(s, D.average_logits([a, b]), 1.0) != pytest.approx(
        0.5 * (D.kl_batchmean(s, a, 1.0) + D.kl_batchmean(s, b, 1.0))
    )
    with pytest.raises(ValueError):
        D.average_logits([])


def test_feature_loss_is_mse_mean_over_elements_and_pairs():
    t = [np.ones((2, 3)), np.zeros((2, 1, 2, 2))]
    s = [np.zeros((2, 3)), np.full((2, 1, 2, 2), 2.0)]
    assert D.feature_loss(t, s) == pytest.approx((1.0 + 4.0) / 2)
    assert D.feature_loss([], []) == 0.0
    with pytest.raises(ValueError):
        D.mse(np.zeros((2, 3)), np.zeros((2, 4)))


def test_smooth_l1_is_huber_delta_one():
    assert D.smooth_l1(np.array([0.5, 2.0, -3.0]), np.zeros(3)) == pytest.approx((0.125 + 1.5 + 2.5) / 3)


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, (5, 3), elements=st.floats(-5, 5)), st.floats(0.1, 100))
def test_rkd_distance_is_invariant_to_scaling_the_embeddings(e, c):
    d = D.pairwise_distances(e)
    if np.min(d + np.eye(5)) < 1e-3:  # near-identical samples: the EPS clamp shows
        return
    assert D.rkd_distance_loss(e * c, e) == pytest.approx(0.0, abs=1e-9)
    assert D.rkd_angle_loss(e * c, e) == pytest.approx(0.0, abs=1e-9)


def test_rkd_distance_matches_a_hand_computation():
    s = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    t = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    ds = np.array([[0, 5, 1], [5, 0, math.sqrt(9 + 9)], [1, math.sqrt(18), 0]])
    dt = np.array([[0, 1, 2], [1, 0, math.sqrt(5)], [2, math.sqrt(5), 0]])
    ds, dt = ds / (ds.sum() / 6), dt / (dt.sum() / 6)
    x = np.abs(ds - dt)
    expect = np.mean(np.where(x < 1, 0.5 * x * x, x - 0.5))
    assert D.rkd_distance_loss(s, t) == pytest.approx(expect, rel=1e-9)


def test_rkd_angle_matches_a_hand_computation():
    # a right angle at sample 0 for the teacher, a straight line for the student
    t = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    s = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    ang_t, ang_s = D._angles(t), D._angles(s)
    assert ang_t[0, 1, 2] == pytest.approx(0.0, abs=1e-12)
    assert ang_s[0, 1, 2] == pytest.approx(-1.0)
    assert ang_s[0, 1, 1] == pytest.approx(1.0) and ang_s[0, 0, 1] == 0.0
    assert D.rkd_angle_loss(s, t) == pytest.approx(D.smooth_l1(ang_s, ang_t))
    assert D.rkd_angle_loss(s, s) == 0.0


def test_relation_of_a_single_sample_is_zero_and_unknown_kind_fails():
    assert D.rkd_distance_loss(np.ones((1, 3)), np.zeros((1, 3))) == 0.0
    assert D.relation_loss(None, np.ones((2, 3)), np.zeros((2, 3))) == 0.0
    with pytest.raises(ValueError):
        D.relation_loss("cosine", np.ones((2, 3)), np.zeros((2, 3)))


def test_projection_init_is_deterministic_and_bounded():
    w, b = D.projection_init(4, 6, seed=3)
    w2, b2 = D.projection_init(4, 6, seed=3)
    assert w.shape == (6, 4) and b.shape == (6,) and w.dtype == np.float32
    np.testing.assert_array_equal(w, w2)
    np.testing.assert_array_equal(b, b2)
    assert np.all(np.abs(w) <= 0.5)


def _dataset(name: str, n: int, shape=(1, 4, 4), seed: int = 0):
    from lwdsl.data.dataset import Dataset

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 4, *shape)).astype(np.float32)
    return Dataset(name, x[:n], np.zeros(n, np.int64), x[n:], np.ones(4, np.int64), 10, sha256=f"sha-{name}")


def test_training_set_takes_the_transfer_images_and_keeps_the_run_test_split():
    from lwdsl.backend import StepContext
    from lwdsl.errors import RunError
    from lwdsl.language.specs import DistillSpec

    run, other = _dataset("run", 12), _dataset("other", 7, seed=1)
    ctx = StepContext(data=run, seed=0, index=2, progress=lambda t, d: None, datasets={"fashion_mnist": other})
    assert D.training_set(DistillSpec(), ctx) is run
    got = D.training_set(DistillSpec(data="fashion_mnist", alpha=1), ctx)
    assert got.train_x is other.train_x and got.test_x is run.test_x and got.test_y is run.test_y
    assert got.num_classes == run.num_classes and got.sha256 == "sha-other" and "transfer" in got.name
    ctx.datasets["fashion_mnist"] = _dataset("other", 7, shape=(3, 4, 4))
    with pytest.raises(RunError, match=r"step 3 \(distill\): data=fashion_mnist has images of shape \(3, 4, 4\)"):
        D.training_set(DistillSpec(data="fashion_mnist", alpha=1), ctx)
