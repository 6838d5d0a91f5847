"""Training with PyTorch's update rules: fine-tuning, sparse (L1) training, gradual pruning.

One custom loop (``tf.GradientTape``) serves every step that trains, so its numbers match the
PyTorch backend's from identical weights and data order (:mod:`lwdsl.order`):

- loss: mean softmax cross-entropy over the batch, plus ``l1 * sum |w|`` over the selected
  layers' weights for ``regularize`` (d|w|/dw = sign(w), 0 at 0, as in PyTorch);
- SGD exactly as ``torch.optim.SGD`` (dampening 0, no Nesterov): ``g += wd * w``;
  ``v = m * v + g`` (``v = g`` on the first step); ``w -= lr * v`` (``w -= lr * g`` when m = 0);
- Adam exactly as ``torch.optim.Adam`` (betas 0.9/0.999, eps 1e-8, L2 weight decay added to
  the gradient, not AdamW): ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
  ``w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``;
- weight decay applies to every trainable variable (biases too), as a PyTorch optimizer
  given ``model.parameters()`` does;
- the learning rate is set before every optimizer step (:func:`lr_at`);
- data order: epoch ``e`` of the step visits ``lwdsl.order.epoch_order(N, run seed, e)`` in
  batches of ``batch`` (the last one smaller);
- masks: after every optimizer step each masked weight is set to ``where(keep, w, +0.0)``;
- a non-finite loss or gradient stops training, restores the weights the epoch began with (as
  the torch backend does) and raises :class:`~lwdsl.errors.RunError`.

Gradual pruning (:class:`GradualPlan`) updates the masks between optimizer steps.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import numpy as np

from lwdsl.backend import StepContext
from lwdsl.errors import RunError
from lwdsl.order import batches, steps_per_epoch
from lwdsl.specs import TrainingOptions

from ._tf import tf
from .handle import KerasHandle

__all__ = ["nhwc", "lr_at", "fit", "cross_entropy"]

_NHWC: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def nhwc(x: np.ndarray) -> np.ndarray:
    """NCHW images as contiguous NHWC (cached for the last few arrays converted)."""
    hit = _NHWC.get(id(x))
    if hit is not None and hit[0] is x:
        return hit[1]
    out = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if x.ndim == 4 else x
    if len(_NHWC) >= 4:
        _NHWC.pop(next(iter(_NHWC)))
    _NHWC[id(x)] = (x, out)
    return out


def lr_at(schedule: str, lr: float, t: int, total: int) -> float:
    """The learning rate at optimizer step ``t`` (0-based) of ``total`` (as the torch backend).

    constant: ``lr``; cosine: ``lr * (1 + cos(pi * t / total)) / 2``; step: ``lr`` divided by
    10 at ``t >= total / 2`` and again at ``t >= 3 * total / 4``.
    """
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * t / total))
    if schedule == "step":
        return lr * 0.1 ** ((t >= total / 2) + (t >= total * 3 / 4))
    return lr


def cross_entropy(labels: Any, logits: Any) -> Any:
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


class _Optimizer:
    """PyTorch's SGD or Adam update over a list of variables, as TensorFlow ops."""

    def __init__(self, variables: Sequence[Any], options: TrainingOptions) -> None:
        self.vars = list(variables)
        self.kind = options.optimizer
        self.momentum = float(options.momentum)
        self.wd = float(options.weight_decay)
        self.t = tf.Variable(0.0, dtype=tf.float32, trainable=False)
        self.slots = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.vars]
        if self.kind == "adam":
            self.slots2 = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.vars]

    def apply(self, grads: Sequence[Any], lr: Any) -> None:
        self.t.assign_add(1.0)
        for i, (w, g) in enumerate(zip(self.vars, grads)):
            if g is None:
                continue
            if self.wd:
                g = g + self.wd * w
            if self.kind == "adam":
                m, v = self.slots[i], self.slots2[i]
                m.assign(0.9 * m + 0.1 * g)
                v.assign(0.999 * v + 0.001 * g * g)
                bc1 = 1.0 - tf.pow(0.9, self.t)
                bc2 = 1.0 - tf.pow(0.999, self.t)
                w.assign_sub(lr / bc1 * m / (tf.sqrt(v) / tf.sqrt(bc2) + 1e-8))
            elif self.momentum:
                buf = self.slots[i]
                buf.assign(self.momentum * buf + g)
                w.assign_sub(lr * buf)
            else:
                w.assign_sub(lr * g)


def fit(
    handle: KerasHandle,
    options: TrainingOptions,
    ctx: StepContext,
    *,
    description: str,
    schedule: str = "constant",
    l1: float = 0.0,
    l1_layers: Sequence[str] = (),
    mask_layers: Sequence[str] = (),
    after_step: Optional[Callable[[int], bool]] = None,
) -> list[float]:
    """Train ``handle`` in place on ``ctx.data``; returns (and keeps in ``handle.losses``) the
    cross-entropy of every optimizer step's batch, before the step (the penalty left out).

    Args:
        schedule: learning-rate schedule (:func:`lr_at`).
        l1, l1_layers: the L1 penalty and the layers whose weights it covers.
        mask_layers: layers that may get masks during training (gradual pruning).
        after_step: called with the number of optimizer steps done after each step; returns
            True when it changed the masks (they are then reloaded into the training graph).

    Raises:
        RunError: the loss or a gradient became NaN or infinite.
    """
    model = handle.model
    data = ctx.data
    x, y = nhwc(data.train_x), data.train_y.astype(np.int64)
    n = len(x)
    spe = steps_per_epoch(n, options.batch)
    variables = model.trainable_variables
    opt = _Optimizer(variables, options)
    views = handle.view_map()
    masked = sorted(set(handle.masks) | set(mask_layers))
    kernels = [views[name].weight.variable for name in masked]
    mask_vars = [
        tf.Variable(handle.masks.get(name, np.ones(k.shape, dtype=bool)), trainable=False, dtype=tf.bool)
        for name, k in zip(masked, kernels)
    ]
    penalised = [views[name].weight.variable for name in l1_layers]
    l1_t = tf.constant(l1, dtype=tf.float32)

    @tf.function(reduce_retracing=True)
    def train_step(xb: Any, yb: Any, lr: Any) -> Any:
        with tf.GradientTape() as tape:
            ce = cross_entropy(yb, model(xb, training=True))
            loss = ce
            if penalised:
                loss = ce + l1_t * tf.add_n([tf.reduce_sum(tf.abs(w)) for w in penalised])
        grads = tape.gradient(loss, variables)
        ok = tf.math.is_finite(loss)
        for g in grads:
            if g is not None:
                ok = tf.logical_and(ok, tf.reduce_all(tf.math.is_finite(g)))
        if ok:
            opt.apply(grads, lr)
            for k, m in zip(kernels, mask_vars):
                k.assign(tf.where(m, k, tf.zeros_like(k)))
        return ce, loss, ok

    losses: list[float] = []
    handle.losses = losses
    total = options.epochs * spe
    bar = ctx.progress(total, description)
    try:
        t = 0
        for epoch in range(options.epochs):
            good = model.get_weights()  # restored when the loss goes bad, as the torch backend does
            for idx in batches(n, options.batch, ctx.seed, epoch):
                lr = tf.constant(lr_at(schedule, options.lr, t, total), dtype=tf.float32)
                ce, loss, ok = train_step(tf.constant(x[idx]), tf.constant(y[idx]), lr)
                if not bool(ok):
                    model.set_weights(good)
                    raise RunError(
                        f"{description}: the loss became {float(loss)} at epoch {epoch + 1}, step {t + 1}; "
                        f"training stopped and the weights are back to the start of epoch {epoch + 1}",
                        hint=f"lower the learning rate (lr={options.lr:g}), or check the data for NaN/inf",
                    )
                losses.append(float(ce))
                t += 1
                if after_step is not None and after_step(t):
                    for name, m in zip(masked, mask_vars):
                        m.assign(handle.masks[name])
                bar.update(1)
    finally:
        bar.close()
    return losses
