"""This backend's optimizer step (:class:`KerasTrainer`, ``tf.GradientTape``) for the core's
one training loop (:func:`lwdsl.backend.fit.fit`), written to PyTorch's update rules so its
numbers match the PyTorch backend's from identical weights and the same batches: the loss,
SGD and Adam equations, weight decay, masks, the straight-through estimator on quantized
kernels (a float master per kernel, snapped at fixed scales by :func:`snap_tf` /
:func:`snap_levels_tf`), non-finite steps and ``precision=bf16|fp16`` (Keras's mixed policies,
fp16's dynamic loss scale) are stated once, in docs/semantics.md ("TensorFlow backend",
"Training after quantize", "Mixed precision")."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from lwdsl.backend import StepContext
from lwdsl.backend.fit import Trainer
from lwdsl.backend.fit import evaluate_batches, fit as core_fit
from lwdsl.backend.steps import training_handlers
from lwdsl.semantics.cluster import codebook_levels
from lwdsl.semantics.quant import WeightQuant, code_bounds, requantize
from lwdsl.language.specs import TrainingOptions
from lwdsl.semantics.precision import AUTOCAST, BACKOFF_FACTOR, GROWTH_FACTOR, GROWTH_INTERVAL, INIT_SCALE, loss_scaled

from ._tf import tf
from .fakequant import quantized_forward
from .handle import KerasHandle
from .layers import every_layer

__all__ = ["nhwc", "mixed_policy", "KerasTrainer", "fit", "evaluate", "finetune", "regularize", "cross_entropy", "snap_tf", "snap_levels_tf"]

#: What a step's own loss gets: (model, images NHWC, labels, batch indices into the training
#: set), inside the gradient tape; it returns (loss to minimise, the cross-entropy part).
BatchLoss = Callable[[Any, Any, Any, Any], "tuple[Any, Any]"]


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


def cross_entropy(labels: Any, logits: Any) -> Any:
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


@contextlib.contextmanager
def mixed_policy(models: Sequence[Any], precision: str) -> Iterator[None]:
    """Inside the block, every float32 layer of ``models`` computes in the autocast dtype of
    ``precision`` (Keras's ``mixed_bfloat16``/``mixed_float16``: variables stay float32); each
    layer's own policy is put back after it. Nothing changes for ``fp32``."""
    if precision not in AUTOCAST:
        yield
        return
    seen: dict[int, Any] = {}
    for model in models:
        for layer in every_layer(model):
            policy = layer.dtype_policy
            if policy.variable_dtype == "float32" and policy.compute_dtype == "float32" and policy.quantization_mode is None:
                seen.setdefault(id(layer), (layer, policy))
    try:
        for layer, _ in seen.values():
            layer.dtype_policy = f"mixed_{AUTOCAST[precision]}"
        yield
    finally:
        for layer, policy in seen.values():
            layer.dtype_policy = policy


def _batch_loss(forward: Any, loss: Optional[BatchLoss], penalised: Sequence[Any], l1_t: Any, xb: Any, yb: Any,
                idx: Any) -> tuple[Any, Any]:
    """(loss to minimise, its cross-entropy part) of one batch, inside the gradient tape: the
    step's own loss or the cross-entropy, plus ``l1 * sum |w|`` over the penalised kernels."""
    if loss is not None:
        total, ce = loss(forward, xb, yb, idx)
    else:
        ce = total = cross_entropy(yb, forward(xb, training=True))
    if penalised:
        total = total + l1_t * tf.add_n([tf.reduce_sum(tf.abs(w)) for w in penalised])
    return total, ce


def _float32(forward: Any) -> Any:
    """``forward`` with its outputs cast to float32 (the loss and its gradient in float32)."""
    return lambda x, training=True: tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), forward(x, training=training))


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
            if isinstance(g, tf.IndexedSlices):  # an embedding's rows: dense, as torch's (sparse=False) gradient
                g = tf.convert_to_tensor(g)
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


class KerasTrainer(Trainer):
    """This backend's optimizer step for the core's :func:`lwdsl.backend.fit.fit`: one
    ``tf.function`` (``GradientTape``) step per batch, PyTorch's update rules (module
    docstring), quantized kernels snapped to their grid, masks re-applied."""

    def __init__(self, handle: KerasHandle, options: TrainingOptions, ctx: StepContext, *, l1: float = 0.0,
                 l1_layers: Sequence[str] = (), loss: Optional[BatchLoss] = None, extra: Sequence[Any] = (),
                 masters: Optional[dict[str, np.ndarray]] = None, mask_layers: Sequence[str] = ()) -> None:
        self.handle = handle
        model = handle.model
        variables = list(model.trainable_variables) + list(extra)
        opt = _Optimizer(variables, options)
        views = self.views = handle.view_map()
        self.masked = masked = sorted(set(handle.masks) | set(mask_layers))
        kernels = [views[name].weight.variable for name in masked]
        self.mask_vars = mask_vars = [
            tf.Variable(handle.masks.get(name, np.ones(k.shape, dtype=bool)), trainable=False, dtype=tf.bool)
            for name, k in zip(masked, kernels)
        ]
        penalised = [views[name].weight.variable for name in l1_layers]
        l1_t = tf.constant(l1, dtype=tf.float32)
        self.quantized = quantized = sorted(handle.quant)
        q_kernels = [views[name].weight.variable for name in quantized]
        start = masters or {}
        q_masters = [
            tf.Variable(
                np.ascontiguousarray(views[name].weight.from_canon(np.asarray(start[name], np.float32)), dtype=np.float32)
                if name in start else k.numpy(),
                trainable=False,
            )
            for name, k in zip(quantized, q_kernels)
        ]
        # variables, not constants: a graph turns ``x / constant`` into a multiply by the reciprocal
        # a clustered layer's "scale" is its codebook's levels (_keras_scale), and its bits None
        q_scales = [tf.Variable(_keras_scale(views[name], handle.quant[name]), trainable=False) for name in quantized]
        q_bits = [None if handle.quant[name].codebook is not None else (handle.quant[name].bits, handle.quant[name].bounds())
                  for name in quantized]  # (bits, the core's (qmin, qmax) of the layer's grid)

        # statically quantized layers see their inputs fake-quantized (straight through), as on torch
        forward = quantized_forward(handle)
        self.scope = contextlib.ExitStack()
        self.scope.enter_context(mixed_policy([model, forward], options.precision))
        if options.precision in AUTOCAST:
            forward = _float32(forward)
        scaled = loss_scaled(options.precision)  # fp16: dynamic loss scaling (lwdsl.semantics.precision)
        loss_scale = tf.Variable(INIT_SCALE, dtype=tf.float32, trainable=False)
        good_steps = tf.Variable(0, dtype=tf.int64, trainable=False)

        @tf.function(reduce_retracing=True)
        def train_step(xb: Any, yb: Any, idx: Any, lr: Any) -> Any:
            with tf.GradientTape() as tape:
                total, ce = _batch_loss(forward, loss, penalised, l1_t, xb, yb, idx)
                target = total * loss_scale if scaled else total
            grads = tape.gradient(target, variables)
            if scaled:
                grads = [None if g is None else g / loss_scale for g in grads]
            finite = tf.constant(True)
            for g in grads:
                if g is not None:
                    finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))
            take = tf.logical_and(tf.math.is_finite(total), finite)
            ok = tf.math.is_finite(total) if scaled else take  # scaled: overflowing gradients skip the step
            if scaled:  # lwdsl.semantics.precision.next_loss_scale
                good = tf.where(finite, good_steps + 1, tf.zeros_like(good_steps))
                grow = good >= GROWTH_INTERVAL
                loss_scale.assign(tf.where(finite, tf.where(grow, loss_scale * GROWTH_FACTOR, loss_scale), loss_scale * BACKOFF_FACTOR))
                good_steps.assign(tf.where(grow, tf.zeros_like(good), good))
            if take:
                apply_grads(grads, lr)
            return ce, total, ok

        def apply_grads(grads: Sequence[Any], lr: Any) -> None:  # the optimizer's step, then the grid and the masks
            snapped = [tf.identity(k.value) for k in q_kernels]
            opt.apply(grads, lr)
            for k, master, before, scale, bits in zip(q_kernels, q_masters, snapped, q_scales, q_bits):
                master.assign_add(k - before)  # the optimizer's step, onto the float master
                k.assign(snap_levels_tf(master, scale) if bits is None else snap_tf(master, scale, *bits))
            for k, m in zip(kernels, mask_vars):
                k.assign(tf.where(m, k, tf.zeros_like(k)))

        self.train_step = train_step
        self._sharded(model, variables, forward, loss, penalised, l1_t, apply_grads, ctx)
        self.penalty = (lambda: l1_t * tf.add_n([tf.reduce_sum(tf.abs(w)) for w in penalised])) if penalised else None
        self.loss, self.forward = loss, forward
        last = [tf.Variable(k, trainable=False) for k in q_kernels]  # the kernels after the last snap

        @tf.function(reduce_retracing=True)
        def hold() -> None:  # after an optimizer step made outside train_step (lwdsl.attach's callback)
            for k, master, before, scale, bits in zip(q_kernels, q_masters, last, q_scales, q_bits):
                master.assign_add(k - before)
                k.assign(snap_levels_tf(master, scale) if bits is None else snap_tf(master, scale, *bits))
                before.assign(k)
            for k, m in zip(kernels, mask_vars):
                k.assign(tf.where(m, k, tf.zeros_like(k)))

        self.hold_step = hold
        self.loss_scale = loss_scale
        # what an epoch checkpoint holds besides the model's variables (checkpoint/resume)
        self.held = {"extra": list(extra), "slot": opt.slots, "slot2": getattr(opt, "slots2", []), "master": q_masters,
                     "last": last, "opt_t": [opt.t], "scale": [loss_scale, good_steps]}

    def step(self, images: np.ndarray, labels: np.ndarray, idx: np.ndarray, lr: float) -> tuple[float, float, bool]:
        ce, whole, ok = self.train_step(tf.constant(nhwc(images)), tf.constant(labels), tf.constant(idx), tf.constant(lr, dtype=tf.float32))
        return float(ce), float(whole), bool(ok)

    def _sharded(self, model: Any, variables: list[Any], forward: Any, loss: Optional[BatchLoss], penalised: list[Any],
                 l1_t: Any, apply_grads: Callable[[Sequence[Any], Any], None], ctx: StepContext) -> None:
        """The optimizer step in three parts, for several ranks (:meth:`backward`, :meth:`sync`,
        :meth:`update`): each shard's weighted gradients added into accumulators (float32, one
        per trained variable, plus a 0/1 per variable saying a shard gave it a gradient), summed
        over the workers in one collective, then the same update as :meth:`step`'s."""
        self.ranks, self.variables, self.model = ctx.ranks, variables, model
        self._acc: list[Any] = []
        self._had: Any = None
        self._flat: Any = None

        @tf.function(reduce_retracing=True)
        def grad_step(xb: Any, yb: Any, idx: Any, weight: Any) -> Any:
            with tf.GradientTape() as tape:
                total, ce = _batch_loss(forward, loss, penalised, l1_t, xb, yb, idx)
                target = total * weight
            grads = tape.gradient(target, variables)
            ok = tf.math.is_finite(total)
            if ok:  # a shard whose loss is not finite adds nothing
                for a, g in zip(self._acc, grads):
                    if g is not None:
                        a.assign_add(g)
                self._had.assign(tf.maximum(self._had, tf.constant([0.0 if g is None else 1.0 for g in grads])))
            return ce, total, ok

        @tf.function(reduce_retracing=True)
        def apply_acc(lr: Any, present: tuple[bool, ...]) -> None:
            apply_grads([a if p else None for a, p in zip(self._acc, present)], lr)

        self.grad_step, self.apply_acc = grad_step, apply_acc

    def _accumulators(self) -> None:
        if not self._acc:
            self._acc = [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False) for v in self.variables]
            self._had = tf.Variable(tf.zeros(len(self.variables), tf.float32), trainable=False)

    def backward(self, images: np.ndarray, labels: np.ndarray, idx: np.ndarray, weight: float,
                 seed: int) -> tuple[float, float, bool]:
        """Dropout draws from the layers' own Keras generators here (``seed`` is not used): a
        model with dropout is not bit-identical across worker counts on tensorflow."""
        self._accumulators()
        if len(labels) == 0:  # no example of this batch here: nothing added (the rank still syncs)
            return 0.0, 0.0, True
        ce, whole, ok = self.grad_step(tf.constant(nhwc(images)), tf.constant(labels), tf.constant(idx),
                                       tf.constant(weight, dtype=tf.float32))
        if not bool(ok):
            return float("nan"), float(whole), False
        return float(ce) * weight, float(whole) * weight, True

    def sync(self) -> None:
        self._accumulators()
        if self.ranks is None or self.ranks.processes <= 1:
            return
        flat = tf.concat([tf.reshape(a, [-1]) for a in self._acc] + [self._had.read_value()], 0)
        if self._flat is None:
            self._flat = tf.Variable(flat, trainable=False)
        else:
            self._flat.assign(flat)
        self.ranks.all_sum_native(self._flat)  # one collective, every rank, examples or not
        summed, start = self._flat.read_value(), 0
        for a in self._acc:
            size = int(np.prod(a.shape))
            a.assign(tf.reshape(summed[start : start + size], a.shape))
            start += size
        self._had.assign(summed[start:])

    def update(self, lr: float) -> None:
        self._accumulators()
        present = tuple(bool(h > 0) for h in self._had.numpy())
        self.apply_acc(tf.constant(lr, dtype=tf.float32), present)
        for a in self._acc:
            a.assign(tf.zeros_like(a))
        self._had.assign(tf.zeros_like(self._had))

    def broadcast_buffers(self) -> None:
        if self.ranks is not None and self.ranks.processes > 1:
            self.ranks.broadcast_native(list(self.model.non_trainable_variables))

    def hold(self) -> None:
        self.hold_step()

    def loss_terms(self, inputs: Any, outputs: Any, labels: Any) -> Any:
        extra = tf.zeros((), tf.float32)
        if self.loss is not None:  # the step's own loss on the user's outputs (teachers label the batch)
            whole, _ = self.loss(lambda _x, training=True: outputs, inputs, labels, None)
            extra = whole - cross_entropy(labels, outputs)
        if self.penalty is not None:
            extra = extra + self.penalty()
        return extra

    def snapshot(self) -> list[np.ndarray]:
        return self.handle.model.get_weights()

    def restore(self, snapshot: list[np.ndarray]) -> None:
        self.handle.model.set_weights(snapshot)

    def checkpoint(self) -> dict[str, np.ndarray]:
        out = {f"var:{i}": np.array(v.numpy()) for i, v in enumerate(self.handle.model.variables)}
        out.update({f"{kind}:{i}": np.array(v.numpy()) for kind, held in self.held.items() for i, v in enumerate(held)})
        out.update({f"mask:{name}": np.asarray(self.handle.masks[name], dtype=bool) for name in self.handle.masks})
        return out

    def resume(self, state: dict[str, np.ndarray]) -> None:
        for i, v in enumerate(self.handle.model.variables):
            v.assign(state[f"var:{i}"])
        for kind, held in self.held.items():
            for i, v in enumerate(held):
                v.assign(state[f"{kind}:{i}"])
        for name in [k[5:] for k in state if k.startswith("mask:")]:  # gradual pruning may have added some
            self.handle.masks[name] = np.array(state[f"mask:{name}"], dtype=bool)
        self.masks_changed()

    def masks_changed(self) -> None:
        for name, m in zip(self.masked, self.mask_vars):
            m.assign(self.handle.masks[name])

    def close(self) -> None:
        self.scope.close()  # the layers' own dtype policies back
        for name in self.quantized:  # the codes the kernels hold now (scales fixed)
            view, q = self.views[name], self.handle.quant[name]
            self.handle.quant[name] = requantize(view.weight.canonical(), q)


def fit(handle: KerasHandle, options: TrainingOptions, ctx: StepContext, **kwargs: Any) -> list[float]:
    """The core's training loop (:func:`lwdsl.backend.fit.fit`) with this backend's
    :class:`KerasTrainer`; ``loss`` is a :data:`BatchLoss` (called inside the gradient tape
    with NHWC images), ``extra`` Keras variables."""
    return core_fit(KerasTrainer, handle, options, ctx, **kwargs)


def snap_tf(w: Any, scale: Any, bits: int, bounds: Optional[tuple[int, int]] = None) -> Any:
    """:func:`lwdsl.semantics.quant.snap` in float32 TensorFlow (``scale`` broadcast to ``w``, a
    variable: a graph turns ``x / constant`` into a multiply by the reciprocal); ``bounds``: the
    core's ``(qmin, qmax)`` of the layer's grid (``WeightQuant.bounds()``; None: the narrow one)."""
    if bits == 1:
        return tf.where((w >= 0) | (scale == 0), np.float32(1), np.float32(-1)) * scale
    qmin, qmax = code_bounds(bits) if bounds is None else bounds
    codes = tf.clip_by_value(tf.round(w / scale), np.float32(qmin), np.float32(qmax))
    return tf.where(tf.equal(codes, 0), tf.zeros_like(codes), codes) * scale  # code -0 is +0 (a graph drops ``+ 0``)


def snap_levels_tf(w: Any, levels: Any) -> Any:
    """``codebook[nearest_codes(w, codebook)]`` in float32 TensorFlow. ``levels`` is (2, n):
    the core's :func:`~lwdsl.semantics.cluster.codebook_levels`, values ascending over the codes
    (as float32, exact below 2^24): the same searchsorted, exact distances and tie rule, so the
    same bits."""
    values, codes = levels[0], levels[1]
    flat = tf.reshape(w, [-1])
    i = tf.searchsorted(values, flat, side="left")
    n = tf.shape(values, out_type=i.dtype)[0]
    lo, hi = tf.maximum(i - 1, 0), tf.minimum(i, n - 1)
    v_lo, v_hi = tf.gather(values, lo), tf.gather(values, hi)
    d_lo, d_hi = tf.abs(flat - v_lo), tf.abs(flat - v_hi)
    take_lo = (d_lo < d_hi) | ((d_lo == d_hi) & (tf.gather(codes, lo) < tf.gather(codes, hi)))
    return tf.reshape(tf.where(take_lo, v_lo, v_hi), tf.shape(w))


def _keras_scale(view: Any, q: WeightQuant) -> np.ndarray:
    """The layer's scales broadcast to its kernel, in the Keras layout (so one elementwise
    divide per step, whatever the layout conversion); a clustered layer's codebook levels
    (:func:`snap_levels_tf`)."""
    if q.codebook is not None:
        return np.stack(codebook_levels(q.codebook)).astype(np.float32)
    canon = np.broadcast_to(q.full_scale(), q.codes.shape)  # per channel, per tensor, or each group's scale repeated
    return np.ascontiguousarray(view.weight.from_canon(np.ascontiguousarray(canon, dtype=np.float32)), dtype=np.float32)


def evaluate(handle: KerasHandle, ctx: StepContext, batch: int = 1000) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over the test set in inference mode (the core's
    :func:`lwdsl.backend.fit.evaluate_batches`), static layers' inputs fake-quantized
    (:func:`.fakequant.quantized_forward`)."""
    keras_model = quantized_forward(handle)
    forward = tf.function(lambda t: keras_model(t, training=False), reduce_retracing=True)

    def score(xb: np.ndarray, yb: np.ndarray) -> tuple[int, float]:
        logits, y = forward(tf.constant(nhwc(xb))), tf.constant(yb)
        correct = int(tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == y, tf.int64)))
        return correct, float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)))

    return evaluate_batches(ctx, score, batch)


#: The step handlers that only train (written once, over this backend's fit).
finetune, regularize = training_handlers(fit)
