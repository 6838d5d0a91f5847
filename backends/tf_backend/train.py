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
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from lwdsl.backend import StepContext
from lwdsl.backend.fit import evaluate_batches, fit as core_fit
from lwdsl.backend.trainer import OptimizerSettings, Trainer, grid_codes, grid_scale, snap_to_grid
from lwdsl.semantics.quant import WeightQuant
from lwdsl.language.specs import TrainingOptions
from lwdsl.semantics.precision import AUTOCAST, BACKOFF_FACTOR, GROWTH_FACTOR, GROWTH_INTERVAL, INIT_SCALE

from ._tf import tf
from .fakequant import quantized_forward
from .handle import KerasHandle
from .layers import every_layer, nhwc

__all__ = ["nhwc", "mixed_policy", "KerasTrainer", "fit", "evaluate", "cross_entropy", "snap_tf", "snap_levels_tf"]

#: What a step's own loss gets: (model, images NHWC, labels, batch indices into the training
#: set), inside the gradient tape; it returns (loss to minimise, the cross-entropy part).
BatchLoss = Callable[[Any, Any, Any, Any], "tuple[Any, Any]"]


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


def _float32(forward: Any, cast: bool) -> Any:
    """``forward`` in training mode unless told otherwise, its outputs cast to float32 where
    ``cast`` (mixed precision: the loss and its gradient in float32)."""
    if not cast:
        return lambda x, training=True: forward(x, training=training)
    return lambda x, training=True: tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), forward(x, training=training))


class _Optimizer:
    """PyTorch's SGD or Adam update over a list of variables, as TensorFlow ops, with the core's
    settings (:func:`lwdsl.backend.trainer.optimizer_settings`)."""

    def __init__(self, variables: Sequence[Any], settings: OptimizerSettings) -> None:
        self.vars, self.s = list(variables), settings
        self.t = tf.Variable(0.0, dtype=tf.float32, trainable=False)
        self.slots = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.vars]
        self.slots2 = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.vars] if settings.kind == "adam" else []

    def state(self) -> dict[str, Any]:
        """The state in the checkpoint's names (PyTorch's: ``"I:KEY"``)."""
        if self.s.kind == "sgd":
            return {f"{i}:momentum_buffer": m for i, m in enumerate(self.slots)} if self.s.momentum else {}
        return {f"{i}:{key}": v for i in range(len(self.vars))
                for key, v in (("step", self.t), ("exp_avg", self.slots[i]), ("exp_avg_sq", self.slots2[i]))}

    def apply(self, grads: Sequence[Any], lr: Any) -> None:
        s = self.s
        self.t.assign_add(1.0)
        for i, (w, g) in enumerate(zip(self.vars, grads)):
            if g is None:
                continue
            if isinstance(g, tf.IndexedSlices):  # an embedding's rows: dense, as torch's (sparse=False) gradient
                g = tf.convert_to_tensor(g)
            if s.weight_decay:
                g = g + s.weight_decay * w
            if s.kind == "adam":
                (b1, b2), m, v = s.betas, self.slots[i], self.slots2[i]
                m.assign(b1 * m + (1 - b1) * g)
                v.assign(b2 * v + (1 - b2) * g * g)
                bc1 = 1.0 - tf.pow(b1, self.t)
                bc2 = 1.0 - tf.pow(b2, self.t)
                w.assign_sub(lr / bc1 * m / (tf.sqrt(v) / tf.sqrt(bc2) + s.eps))
            elif s.momentum:
                buf = self.slots[i]
                buf.assign(s.momentum * buf + g)
                w.assign_sub(lr * buf)
            else:
                w.assign_sub(lr * g)


class KerasTrainer(Trainer):
    """This backend's primitives for the core's :class:`~lwdsl.backend.trainer.Trainer`:
    one ``tf.function`` (``GradientTape``) step per batch, PyTorch's update rules (module
    docstring), quantized kernels snapped to their grid, masks re-applied."""

    def __init__(self, handle: KerasHandle, options: TrainingOptions, ctx: StepContext, *, l1: float = 0.0,
                 l1_layers: Sequence[str] = (), loss: Optional[BatchLoss] = None, extra: Sequence[Any] = (),
                 masters: Optional[dict[str, np.ndarray]] = None, mask_layers: Sequence[str] = ()) -> None:
        super().__init__(handle, options, ctx, l1=l1, l1_layers=l1_layers, loss=loss, masters=masters, mask_layers=mask_layers)
        self.model = model = handle.model
        self.variables = variables = list(model.trainable_variables) + list(extra)
        self.opt = opt = _Optimizer(variables, self.optimizer_settings)
        views = self.views = handle.view_map()
        kernels = [views[name].weight.variable for name in self.masked]
        self.mask_vars = mask_vars = [
            tf.Variable(handle.masks.get(name, np.ones(k.shape, dtype=bool)), trainable=False, dtype=tf.bool)
            for name, k in zip(self.masked, kernels)
        ]
        self.penalised_w = [views[name].weight.variable for name in l1_layers]
        self.l1_t = tf.constant(l1, dtype=tf.float32)
        self.q_kernels = q_kernels = [views[name].weight.variable for name in self.quantized]
        starts = [self.master_start(name) for name in self.quantized]
        self.q_masters = q_masters = [
            tf.Variable(k.numpy() if start is None else np.ascontiguousarray(views[name].weight.from_canon(start), np.float32),
                        trainable=False)
            for name, k, start in zip(self.quantized, q_kernels, starts)
        ]
        # variables, not constants: a graph turns ``x / constant`` into a multiply by the reciprocal
        # a clustered layer's "scale" is its codebook's levels (_keras_scale), and its bits None
        q_scales = [tf.Variable(_keras_scale(views[name], handle.quant[name]), trainable=False) for name in self.quantized]
        q_bits = [(None, None) if q.codebook is not None else (q.bits, q.bounds())  # (bits, the core's (qmin, qmax) of its grid)
                  for q in (handle.quant[name] for name in self.quantized)]

        # statically quantized layers see their inputs fake-quantized (straight through), as on torch
        keras_forward = quantized_forward(handle)
        self.scope = contextlib.ExitStack()
        self.scope.enter_context(mixed_policy([model, keras_forward], options.precision))
        forward = _float32(keras_forward, options.precision in AUTOCAST)
        scaled = self.scaled  # fp16: dynamic loss scaling (lwdsl.semantics.precision)
        self.loss_scale = loss_scale = tf.Variable(INIT_SCALE, dtype=tf.float32, trainable=False)
        self.good_steps = good_steps = tf.Variable(0, dtype=tf.int64, trainable=False)

        def gradients(xb: Any, yb: Any, idx: Any, factor: Any) -> Any:  # (the whole loss, its cross-entropy, gradients)
            with tf.GradientTape() as tape:
                total, ce = self.batch_loss(forward, xb, yb, idx)
                target = total if factor is None else total * factor
            return total, ce, tape.gradient(target, variables)

        @tf.function(reduce_retracing=True)
        def train_step(xb: Any, yb: Any, idx: Any, lr: Any) -> Any:
            total, ce, grads = gradients(xb, yb, idx, loss_scale if scaled else None)
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

        def settle(before: Sequence[Any], keep: bool) -> None:
            """Each quantized kernel's master moved by the step taken since ``before``, the
            kernel put back on its grid (``keep``: ``before`` holds it then), masks re-applied."""
            for k, master, b, scale, bits in zip(q_kernels, q_masters, before, q_scales, q_bits):
                master.assign_add(k - b)  # the optimizer's step, onto the float master
                k.assign(snap_to_grid(_OPS, master, scale, *bits))
                if keep:
                    b.assign(k)
            for k, m in zip(kernels, mask_vars):
                k.assign(tf.where(m, k, tf.zeros_like(k)))

        def apply_grads(grads: Sequence[Any], lr: Any) -> None:  # the optimizer's step, then the grid and the masks
            snapped = [tf.identity(k.value) for k in q_kernels]
            opt.apply(grads, lr)
            settle(snapped, False)

        # the optimizer step in three parts, for several ranks: each shard's weighted gradients
        # added into accumulators (float32, one per trained variable, plus a 0/1 per variable
        # saying a shard gave it a gradient), summed over the workers, then apply_grads
        self._acc: list[Any] = []  # made by the first shard (_accumulators)
        self._had: Any = None
        self._flat: Any = None

        @tf.function(reduce_retracing=True)
        def grad_step(xb: Any, yb: Any, idx: Any, weight: Any) -> Any:
            total, ce, grads = gradients(xb, yb, idx, weight)
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

        self.last = last = [tf.Variable(k, trainable=False) for k in q_kernels]  # the kernels after the last snap
        # after an optimizer step made outside train_step (lwdsl.attach's callback)
        self.hold = tf.function(lambda: settle(last, True), reduce_retracing=True)
        self.train_step, self.grad_step, self.apply_acc = train_step, grad_step, apply_acc
        self.forward = forward

    def step(self, images: np.ndarray, labels: np.ndarray, idx: np.ndarray, lr: float) -> tuple[float, float, bool]:
        ce, whole, ok = self.train_step(tf.constant(nhwc(images)), tf.constant(labels), tf.constant(idx), tf.constant(lr, dtype=tf.float32))
        return float(ce), float(whole), bool(ok)

    def _accumulators(self) -> None:
        if not self._acc:
            self._acc = [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False) for v in self.variables]
            self._had = tf.Variable(tf.zeros(len(self.variables), tf.float32), trainable=False)

    def _accumulate(self, images: np.ndarray, labels: np.ndarray, idx: np.ndarray, weight: float,
                    seed: int) -> tuple[float, float, bool]:
        """Dropout draws from the layers' own Keras generators here (``seed`` is not used): a
        model with dropout is not bit-identical across worker counts on tensorflow."""
        self._accumulators()
        ce, whole, ok = self.grad_step(tf.constant(nhwc(images)), tf.constant(labels), tf.constant(idx),
                                       tf.constant(weight, dtype=tf.float32))
        return float(ce), float(whole), bool(ok)

    def _pack_grads(self) -> Any:
        self._accumulators()
        flat = tf.concat([tf.reshape(a, [-1]) for a in self._acc] + [self._had.read_value()], 0)
        if self._flat is None:
            self._flat = tf.Variable(flat, trainable=False)
        else:
            self._flat.assign(flat)
        return self._flat

    def _unpack_grads(self, flat: Any) -> None:
        summed, start = flat.read_value(), 0
        for a in self._acc:
            size = int(np.prod(a.shape))
            a.assign(tf.reshape(summed[start : start + size], a.shape))
            start += size
        self._had.assign(summed[start:])

    def _apply(self, lr: float) -> None:
        self._accumulators()
        present = tuple(bool(h > 0) for h in self._had.numpy())
        self.apply_acc(tf.constant(lr, dtype=tf.float32), present)
        for a in self._acc:
            a.assign(tf.zeros_like(a))
        self._had.assign(tf.zeros_like(self._had))

    def _zero(self, outputs: Any) -> Any:
        return tf.zeros((), tf.float32)

    def _cross_entropy(self, outputs: Any, labels: Any) -> Any:
        return cross_entropy(labels, outputs)

    def _penalty(self) -> Any:
        return self.l1_t * tf.add_n([tf.reduce_sum(tf.abs(w)) for w in self.penalised_w]) if self.penalised_w else None

    def snapshot(self) -> list[np.ndarray]:
        return self.handle.model.get_weights()

    def restore(self, snapshot: list[np.ndarray]) -> None:
        self.handle.model.set_weights(snapshot)

    # the primitives of checkpoint/resume (Trainer)
    def _tensors(self) -> dict[str, dict[str, Any]]:
        return {"param": {str(i): v for i, v in enumerate(self.variables)},
                "buffer": {str(i): v for i, v in enumerate(self.model.non_trainable_variables)},
                "master": dict(zip(self.quantized, self.q_masters)), "opt": self.opt.state()}

    def _read(self, v: Any) -> np.ndarray:
        return np.array(v.numpy())

    def _write(self, v: Any, value: np.ndarray) -> None:
        v.assign(value)

    def _set_mask(self, layer: str, keep: np.ndarray) -> None:
        self.handle.masks[layer] = keep

    def _loss_scale(self) -> tuple[float, int]:
        return float(self.loss_scale.numpy()), int(self.good_steps.numpy())

    def _load_loss_scale(self, scale: float, good: int) -> None:
        self.loss_scale.assign(scale)
        self.good_steps.assign(good)

    def _resumed(self) -> None:
        for last, k in zip(self.last, self.q_kernels):
            last.assign(k)
        self.masks_changed()

    def masks_changed(self) -> None:
        for name, m in zip(self.masked, self.mask_vars):
            m.assign(self.handle.masks[name])

    def close(self) -> None:
        self.scope.close()  # the layers' own dtype policies back
        for name in self.quantized:  # the codes the kernels hold now (scales fixed)
            self.handle.quant[name] = grid_codes(self.handle.quant[name], self.views[name].weight.canonical(), None)


def fit(handle: KerasHandle, options: TrainingOptions, ctx: StepContext, **kwargs: Any) -> list[float]:
    """The core's training loop (:func:`lwdsl.backend.fit.fit`) with this backend's
    :class:`KerasTrainer`; ``loss`` is a :data:`BatchLoss` (called inside the gradient tape
    with NHWC images), ``extra`` Keras variables."""
    return core_fit(KerasTrainer, handle, options, ctx, **kwargs)


#: TensorFlow's float32 ops for the core's snap (:func:`lwdsl.backend.trainer.snap_to_grid`)
_OPS = SimpleNamespace(where=tf.where, round=tf.round, clip=tf.clip_by_value, abs=tf.abs, take=tf.gather,
               searchsorted=lambda values, x: tf.searchsorted(values, x, side="left"),
               flat=lambda x: tf.reshape(x, [-1]), like=lambda x, w: tf.reshape(x, tf.shape(w)))


def snap_tf(w: Any, scale: Any, bits: int, bounds: Optional[tuple[int, int]] = None) -> Any:
    """The core's snap (:func:`lwdsl.backend.trainer.snap_to_grid`) at fixed scales in float32
    TensorFlow (``scale`` a variable broadcast to ``w``; ``bounds``: ``WeightQuant.bounds()``)."""
    return snap_to_grid(_OPS, w, scale, bits, bounds)


def snap_levels_tf(w: Any, levels: Any) -> Any:
    """The core's snap onto a clustered layer's (2, n) codebook levels in float32 TensorFlow."""
    return snap_to_grid(_OPS, w, levels, None)


def _keras_scale(view: Any, q: WeightQuant) -> np.ndarray:
    """The core's grid of the layer (:func:`lwdsl.backend.trainer.grid_scale`) in the Keras
    layout: its scales broadcast to its kernel (one elementwise divide per step, whatever the
    layout conversion), or a clustered layer's codebook levels (:func:`snap_levels_tf`)."""
    grid = grid_scale(q)
    if q.codebook is not None:
        return grid
    full = np.ascontiguousarray(np.broadcast_to(grid, q.codes.shape))
    return np.ascontiguousarray(view.weight.from_canon(full), dtype=np.float32)


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