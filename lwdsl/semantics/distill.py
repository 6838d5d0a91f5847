"""Distillation numbers: the one definition of every loss term of ``distill`` (numpy only).

Both backends compute exactly these formulas with their own tensors (``tests/conformance``
checks them against this module to 1e-6 relative on fixed logits). Per batch of size ``B``:

    L = (1 - alpha) * CE(z_s, y)
        + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))    (soft targets)
        + beta  * feature loss                                      (features=[t->s, ...])
        + gamma * relation loss                                     (relation=distance|angle)

- **CE**: mean softmax cross-entropy over the batch (log-softmax with the max subtracted).
- **KL, 'batchmean'**: ``sum_i sum_k p_t[i,k] (log p_t[i,k] - log p_s[i,k]) / B``: summed over
  the classes and divided by the batch size, *never* by the number of classes (a plain mean
  over all elements, as ``reduction='mean'`` does, shrinks the term ``K`` times). Terms where
  ``p_t`` is 0 contribute 0. Log-probabilities come from a stable log-softmax.
- **T^2**: the soft term's gradient scales as ``1/T^2`` (Hinton et al. 2015); multiplying by
  ``T^2`` keeps its weight relative to CE the same whatever ``T``.
- **Several teachers**: their *logits* are averaged (:func:`average_logits`), then softened
  once at ``T``. That is what the spec says ("z_t is the mean of their logits"); it keeps one
  meaning of the temperature (averaging probabilities would soften each teacher and then
  sharpen nothing back, and averaging at T=1 vs T differs), and it lets the whole ensemble be
  cached as one logits array.
- **Feature loss**: per ``teacher_layer->student_layer`` pair, the student's feature goes
  through a learned projection (a 1x1 convolution for images, a linear map otherwise,
  from the student's to the teacher's channels, initialised by :func:`projection_init`), then
  MSE, the mean over every element; the pairs' losses are averaged. The projection is trained
  with the student and dropped after the step.
- **Relation loss** (RKD, Park et al. 2019), on the flattened outputs (logits) of student and
  teacher: *distance*: pairwise Euclidean distances (``sqrt(max(d^2, 1e-12))``, 0 on the
  diagonal), each matrix divided by the mean of its ``B(B-1)`` off-diagonal entries, then
  smooth L1 (Huber, delta 1) between them, the mean over all ``B^2`` entries; *angle*: for
  every anchor ``a`` the unit vectors ``u = (e_b - e_a) / sqrt(max(|e_b - e_a|^2, 1e-24))`` and the
  cosines ``<u_ab, u_ac>`` over all ``B^3`` triplets, then smooth L1, the mean over them. A batch
  of one sample has no pairs: both relation losses are 0 there.
- **Transfer set** (``data=NAME``, :func:`training_set`): the student trains on NAME's training
  images, in the order :func:`lwdsl.semantics.order.epoch_order` gives for *their* count (the
  run seed, the epoch), on soft targets only (``alpha=1`` is required, so the transfer set's
  labels never weigh in; the cross-entropy the training records is replaced by the soft term).
  The teacher's logits are those of the transfer images; accuracy is the run's test set's.
- **Teacher logits cache** (:func:`cache_teacher_logits`): lwdsl never trains a teacher, so
  without ``jitter`` each teacher's logits for a training image never change; they are
  computed once before training (inference mode, batches of 1000) for every training image (of
  the transfer set with ``data=``), averaged over the teachers, and each batch gathers its rows
  by index. A batch's teacher logits are the same whether cached or not. With ``jitter=N``
  (:mod:`lwdsl.semantics.jitter`) the images move every epoch, so there is no cache: the
  teachers label each batch's translated images, the very images the student trains on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..data.dataset import Dataset

__all__ = [
    "training_set",
    "cache_teacher_logits",
    "EPS",
    "DistillTerms",
    "log_softmax",
    "cross_entropy",
    "kl_batchmean",
    "soft_target_loss",
    "average_logits",
    "mse",
    "feature_loss",
    "smooth_l1",
    "pairwise_distances",
    "rkd_distance_loss",
    "rkd_angle_loss",
    "relation_loss",
    "weighted_sum",
    "distill_terms",
    "projection_init",
]

#: the clamp under square roots and norms (distances of identical samples, the diagonal)
EPS = 1e-12


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """``z - logsumexp(z)``, computed with the maximum subtracted (never overflows)."""
    z = np.asarray(z, dtype=np.float64)
    shifted = z - np.max(z, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy over the batch."""
    logp = log_softmax(logits)
    labels = np.asarray(labels, dtype=np.int64)
    return float(-np.mean(logp[np.arange(len(labels)), labels]))


def kl_batchmean(student_logits: np.ndarray, teacher_logits: np.ndarray, T: float) -> float:
    """``KL(softmax(z_t/T) || softmax(z_s/T))``, summed over classes, divided by the batch size."""
    logp_s = log_softmax(np.asarray(student_logits, dtype=np.float64) / T)
    logp_t = log_softmax(np.asarray(teacher_logits, dtype=np.float64) / T)
    p_t = np.exp(logp_t)
    terms = np.where(p_t > 0, p_t * (logp_t - logp_s), 0.0)
    return float(np.sum(terms) / logp_s.shape[0])


def soft_target_loss(student_logits: np.ndarray, teacher_logits: np.ndarray, T: float) -> float:
    """The soft-target term before ``alpha``: ``T^2 * KL`` ('batchmean')."""
    return float(T) ** 2 * kl_batchmean(student_logits, teacher_logits, T)


def average_logits(teacher_logits: Sequence[np.ndarray]) -> np.ndarray:
    """The ensemble's logits: the mean of the teachers' logits (float32, as backends cache it).

    Averaging logits (not probabilities) is what the spec says and keeps a single meaning of
    ``T``: the ensemble is softened once, like one teacher."""
    if len(teacher_logits) == 0:
        raise ValueError("no teacher logits to average")
    stack = np.stack([np.asarray(t, dtype=np.float64) for t in teacher_logits])
    return np.mean(stack, axis=0).astype(np.float32)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error over every element."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"feature shapes differ: {a.shape} vs {b.shape}")
    return float(np.mean((a - b) ** 2))


def feature_loss(teacher_feats: Sequence[np.ndarray], projected_student_feats: Sequence[np.ndarray]) -> float:
    """The mean over hint pairs of the MSE between the teacher's feature and the student's
    feature after its projection (0 without pairs)."""
    pairs = list(zip(teacher_feats, projected_student_feats))
    if not pairs:
        return 0.0
    return float(np.mean([mse(t, s) for t, s in pairs]))


def smooth_l1(a: np.ndarray, b: np.ndarray) -> float:
    """Huber loss with delta 1 (PyTorch's smooth L1, beta 1): mean of 0.5 x^2 (|x| < 1) or |x| - 0.5."""
    x = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    return float(np.mean(np.where(x < 1.0, 0.5 * x * x, x - 0.5)))


def _flat(e: np.ndarray) -> np.ndarray:
    e = np.asarray(e, dtype=np.float64)
    return e.reshape(e.shape[0], -1)


def pairwise_distances(e: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of the flattened ``e``: ``sqrt(max(d^2, EPS))``
    off the diagonal, 0 on it (``d^2`` from the differences, not from ``|a|^2 + |b|^2 - 2ab``)."""
    e = _flat(e)
    diff = e[:, None, :] - e[None, :, :]
    d = np.sqrt(np.maximum(np.sum(diff * diff, axis=-1), EPS))
    np.fill_diagonal(d, 0.0)
    return d


def _normalised_distances(e: np.ndarray) -> np.ndarray:
    d = pairwise_distances(e)
    b = d.shape[0]
    return d / (np.sum(d) / (b * (b - 1)))


def rkd_distance_loss(student_emb: np.ndarray, teacher_emb: np.ndarray) -> float:
    """RKD distance loss: smooth L1 between the mean-normalised distance matrices."""
    if _flat(student_emb).shape[0] < 2:
        return 0.0
    return smooth_l1(_normalised_distances(student_emb), _normalised_distances(teacher_emb))


def _angles(e: np.ndarray) -> np.ndarray:
    e = _flat(e)
    v = e[None, :, :] - e[:, None, :]  # v[a, b] = e_b - e_a
    u = v / np.sqrt(np.maximum(np.sum(v * v, axis=-1, keepdims=True), EPS * EPS))
    return np.einsum("abd,acd->abc", u, u)


def rkd_angle_loss(student_emb: np.ndarray, teacher_emb: np.ndarray) -> float:
    """RKD angle loss: smooth L1 between the cosines of all triplets' angles."""
    if _flat(student_emb).shape[0] < 2:
        return 0.0
    return smooth_l1(_angles(student_emb), _angles(teacher_emb))


def relation_loss(kind: Optional[str], student_emb: np.ndarray, teacher_emb: np.ndarray) -> float:
    """``distance`` or ``angle`` RKD loss (0 for None)."""
    if kind is None:
        return 0.0
    if kind == "distance":
        return rkd_distance_loss(student_emb, teacher_emb)
    if kind == "angle":
        return rkd_angle_loss(student_emb, teacher_emb)
    raise ValueError(f"unknown relation loss {kind!r}")


def weighted_sum(
    ce: float, soft: float, alpha: float, feature: float = 0.0, beta: float = 0.0, relation: float = 0.0, gamma: float = 0.0
) -> float:
    """``(1 - alpha) * ce + alpha * soft + beta * feature + gamma * relation``."""
    return (1.0 - alpha) * ce + alpha * soft + beta * feature + gamma * relation


@dataclass(frozen=True)
class DistillTerms:
    """Every term of one batch's loss (``soft`` already includes T^2) and their weighted sum."""

    ce: float
    soft: float
    feature: float
    relation: float
    total: float


def distill_terms(
    student_logits: np.ndarray,
    labels: np.ndarray,
    teacher_logits: np.ndarray,
    *,
    T: float,
    alpha: float,
    teacher_feats: Sequence[np.ndarray] = (),
    projected_student_feats: Sequence[np.ndarray] = (),
    beta: float = 0.0,
    relation: Optional[str] = None,
    gamma: float = 0.0,
) -> DistillTerms:
    """All terms of the loss of one batch and the total (relation terms use the logits)."""
    ce = cross_entropy(student_logits, labels)
    soft = soft_target_loss(student_logits, teacher_logits, T)
    feat = feature_loss(teacher_feats, projected_student_feats)
    rel = relation_loss(relation, student_logits, teacher_logits)
    total = weighted_sum(ce, soft, alpha, feat, beta if teacher_feats else 0.0, rel, gamma if relation else 0.0)
    return DistillTerms(ce, soft, feat, rel, total)


def projection_init(c_in: int, c_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Initial weight ``[c_out, c_in]`` and bias ``[c_out]`` (float32) of a feature projection,
    ``U(-1/sqrt(c_in), 1/sqrt(c_in))`` as PyTorch initialises a Linear or 1x1 Conv, drawn from
    ``numpy.random.default_rng(seed)`` so both backends start from the same projection."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(c_in)
    w = rng.uniform(-bound, bound, size=(c_out, c_in)).astype(np.float32)
    b = rng.uniform(-bound, bound, size=(c_out,)).astype(np.float32)
    return w, b


#: Whether the backends cache the teachers' logits before training (see the module doc). The
#: rule holds for every run lwdsl makes; the switch exists for bench/distill_bench.py, which
#: measures what the cache saves, and for the test that the cached and uncached losses agree.
CACHE_TEACHER_LOGITS = True


#: The largest teacher-logit cache held in memory (float32 bytes): a language model's logits are
#: one distribution over the vocabulary per position (``--data pydoc``: 905 x 128 x 2048 floats,
#: 949 MB), so above this the teachers label each batch as it comes instead.
CACHE_LIMIT_BYTES = 256 * 2**20


def cache_teacher_logits(jitter: int = 0, nbytes: int = 0) -> bool:
    """Whether the teachers' logits are computed once before training rather than per batch:
    the teachers are fixed (always in lwdsl) and the images do not move (``jitter=0``); with
    ``jitter=N`` the teachers label each batch's translated images as the student sees them; a
    cache of more than :data:`CACHE_LIMIT_BYTES` (``nbytes``) is not held either."""
    return CACHE_TEACHER_LOGITS and not jitter and nbytes <= CACHE_LIMIT_BYTES


def training_set(spec, ctx) -> Dataset:
    """The data a ``distill`` step trains on: the run's, or with ``data=NAME`` a data set whose
    training images are the transfer set's and whose test split is still the run's.

    The transfer set comes from ``ctx.datasets`` (the runner loads it and checks its shape before
    any training); a handler called without the runner loads it here.

    Raises:
        RunError: the transfer set's images have another shape than the run's.
    """
    from ..errors import RunError

    if spec.data is None:
        return ctx.data
    other = ctx.datasets.get(spec.data)
    if other is None:
        from ..data.builtin import load_data

        other = load_data(spec.data)
    run = ctx.data
    if tuple(other.input_shape) != tuple(run.input_shape):
        raise RunError(
            f"step {ctx.index + 1} (distill): data={spec.data} has images of shape {tuple(other.input_shape)} (C,H,W), "
            f"the run's data {run.name} {tuple(run.input_shape)}",
            hint="a transfer set must have the run's image shape",
        )
    return Dataset(
        name=f"{other.name} (transfer set)",
        train_x=other.train_x,
        train_y=other.train_y,
        test_x=run.test_x,
        test_y=run.test_y,
        num_classes=run.num_classes,
        sha256=other.sha256,
    )
