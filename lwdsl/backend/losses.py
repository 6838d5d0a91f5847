"""The distillation loss terms, written once over a backend's tensor ops (autodiff).

:mod:`lwdsl.semantics.distill` defines each term in NumPy (the reference the conformance suite
checks both backends against); this module is the same formulas on a framework's tensors, so
that the torch and TensorFlow training steps differentiate one text. A backend gives a
:class:`TensorOps`: a handful of its own functions (the fused softmax cross-entropy, a row-wise
log-softmax, reductions, a batched ``u @ u^T``, a cast, rows gathered by index). Arithmetic,
comparisons, ``x[:, None, :]`` indexing and ``x.shape`` are the tensors' own, the same in both
frameworks; what they give (``|x|``, a floor) is written here with them.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence

from lwdsl.semantics.distill import EPS

__all__ = [
    "TensorOps",
    "kl_batchmean",
    "soft_target_loss",
    "feature_loss",
    "smooth_l1",
    "rkd_distance_loss",
    "rkd_angle_loss",
    "relation_loss",
    "distill_loss",
]


class TensorOps(Protocol):
    """What the loss terms need from a framework (``x`` a tensor of rank >= 1, rows first)."""

    def cross_entropy(self, logits: Any, labels: Any) -> Any: ...  # mean over the batch (over tokens: [B, L, V])
    def log_softmax(self, x: Any) -> Any: ...  # over the last axis
    def exp(self, x: Any) -> Any: ...
    def where(self, cond: Any, x: Any, y: Any) -> Any: ...  # x or y may be a Python float
    def sum(self, x: Any, axis: Optional[int] = None, keepdims: bool = False) -> Any: ...
    def mean(self, x: Any) -> Any: ...
    def sqrt(self, x: Any) -> Any: ...
    def rows(self, x: Any) -> Any: ...  # the batch size as a scalar tensor of x's dtype (x.shape[0] unknown while tracing)
    def flat(self, x: Any) -> Any: ...  # (rows, -1)
    def zero_diagonal(self, d: Any) -> Any: ...  # a square matrix with 0 on its diagonal
    def matmul_t(self, u: Any) -> Any: ...  # batched u @ u^T
    def cast(self, x: Any, dtype: str) -> Any: ...  # "float32", "float64" (x itself when it has that dtype)
    def take(self, table: Any, idx: Any) -> Any: ...  # table's rows idx (the distill step's cached teacher logits)


def _rows(ops: TensorOps, x: Any) -> Any:
    """The batch size: a number where the shape is known (always on an eager framework), else the
    framework's scalar (:meth:`TensorOps.rows`, inside a traced function)."""
    n = x.shape[0]
    return int(n) if n is not None else ops.rows(x)


def kl_batchmean(ops: TensorOps, student_logits: Any, teacher_logits: Any, T: float) -> Any:
    """KL(softmax(t/T) || softmax(s/T)) summed over classes, divided by the batch size; for a
    language model's ``[B, L, V]`` logits, one distribution per position: divided by ``B * L``
    (the mean over tokens, as its cross-entropy)."""
    logp_s = ops.log_softmax(student_logits / T)
    logp_t = ops.log_softmax(teacher_logits / T)
    p_t = ops.exp(logp_t)
    terms = ops.where(p_t > 0, p_t * (logp_t - logp_s), 0.0)
    positions = 1
    for d in tuple(student_logits.shape)[1:-1]:  # fixed-length sequences: known while tracing
        positions *= int(d)
    return ops.sum(terms) / _rows(ops, student_logits) / float(positions)


def soft_target_loss(ops: TensorOps, student_logits: Any, teacher_logits: Any, T: float) -> Any:
    return float(T) ** 2 * kl_batchmean(ops, student_logits, teacher_logits, T)


def feature_loss(ops: TensorOps, teacher_feats: Sequence[Any], projected: Sequence[Any]) -> Any:
    """The mean over pairs of each pair's mean squared difference."""
    losses = [ops.mean((s - t) * (s - t)) for t, s in zip(teacher_feats, projected)]
    total = losses[0]
    for term in losses[1:]:
        total = total + term
    return total / len(losses)


def smooth_l1(ops: TensorOps, a: Any, b: Any) -> Any:
    """Huber with beta 1, averaged: 0.5 x^2 where |x| < 1, else |x| - 0.5."""
    d = a - b
    x = ops.where(d < 0.0, -d, d)
    return ops.mean(ops.where(x < 1.0, 0.5 * x * x, x - 0.5))


def _distances(ops: TensorOps, e: Any) -> Any:
    e = ops.flat(e)
    diff = e[:, None, :] - e[None, :, :]
    s = ops.sum(diff * diff, axis=-1)
    d = ops.zero_diagonal(ops.sqrt(ops.where(s < EPS, EPS, s)))  # max(s, EPS): the gradient flows where s >= EPS
    b = _rows(ops, e)
    return d / (ops.sum(d) / (b * (b - 1)))


def _angles(ops: TensorOps, e: Any) -> Any:
    e = ops.flat(e)
    v = e[None, :, :] - e[:, None, :]
    s = ops.sum(v * v, axis=-1, keepdims=True)
    u = v / ops.sqrt(ops.where(s < EPS * EPS, EPS * EPS, s))  # max(s, EPS^2): no inf gradient at 0
    return ops.matmul_t(u)


def _one_row(ops: TensorOps, x: Any) -> bool:
    n = x.shape[0]
    return n is not None and n < 2


def rkd_distance_loss(ops: TensorOps, student: Any, teacher: Any) -> Any:
    if _one_row(ops, student):
        return ops.sum(student) * 0.0
    return smooth_l1(ops, _distances(ops, student), _distances(ops, teacher))


def rkd_angle_loss(ops: TensorOps, student: Any, teacher: Any) -> Any:
    if _one_row(ops, student):
        return ops.sum(student) * 0.0
    return smooth_l1(ops, _angles(ops, student), _angles(ops, teacher))


def relation_loss(ops: TensorOps, kind: Optional[str], student: Any, teacher: Any) -> Any:
    if kind == "distance":
        return rkd_distance_loss(ops, student, teacher)
    if kind == "angle":
        return rkd_angle_loss(ops, student, teacher)
    return ops.sum(student) * 0.0


def distill_loss(
    ops: TensorOps,
    spec: Any,
    student_logits: Any,
    labels: Any,
    teacher: Any,
    teacher_feats: Sequence[Any] = (),
    projected: Sequence[Any] = (),
) -> dict[str, Any]:
    """Every term and the weighted sum (``total``), as :func:`lwdsl.semantics.distill.distill_terms`."""
    ce = ops.cross_entropy(student_logits, labels)
    soft = soft_target_loss(ops, student_logits, teacher, spec.T)
    total = (1.0 - spec.alpha) * ce + spec.alpha * soft
    out = {"ce": ce, "soft": soft}
    if teacher_feats:
        out["feature"] = feature_loss(ops, teacher_feats, projected)
        total = total + spec.beta * out["feature"]
    if spec.relation is not None:
        out["relation"] = relation_loss(ops, spec.relation, student_logits, teacher)
        total = total + spec.gamma * out["relation"]
    out["total"] = total
    return out
