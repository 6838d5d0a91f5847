"""``distill`` on Keras: the core's flow (:mod:`lwdsl.backend.distill`) over
:class:`KerasDistillParts` (teachers loaded into the original's architecture, features read
before any fused activation, a 1x1 projection on the channel axis, cached logits gathered by
index), and the loss terms of :mod:`lwdsl.backend.losses` over TensorFlow ops (:class:`TfOps`)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from lwdsl.backend import StepContext
from lwdsl.backend import losses
from lwdsl.backend.distill import DistillParts, distill_handler
from lwdsl.errors import LwdslError

from ._tf import keras, tf
from .handle import KerasHandle
from .layers import nhwc
from .train import cross_entropy

__all__ = [
    "distill",
    "distill_loss",
    "OPS",
    "KerasDistillParts",
    "PARTS",
]


# --- the loss terms: lwdsl.backend.losses over TensorFlow ops ---------------------------------


class TfOps:
    """:class:`lwdsl.backend.losses.TensorOps` on TensorFlow tensors (inside ``tf.function``)."""

    exp = staticmethod(tf.exp)
    where = staticmethod(tf.where)
    sqrt = staticmethod(tf.sqrt)
    mean = staticmethod(tf.reduce_mean)
    cast = staticmethod(tf.cast)
    take = staticmethod(tf.gather)

    cross_entropy = staticmethod(lambda logits, labels: cross_entropy(labels, logits))  # train.py's

    @staticmethod
    def log_softmax(x: Any) -> Any:
        return tf.nn.log_softmax(x, axis=-1)  # over the classes (the vocabulary for [B, L, V])

    @staticmethod
    def sum(x: Any, axis: Optional[int] = None, keepdims: bool = False) -> Any:
        return tf.reduce_sum(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def rows(x: Any) -> Any:
        return tf.cast(tf.shape(x)[0], x.dtype)

    @staticmethod
    def flat(x: Any) -> Any:
        return tf.reshape(x, [tf.shape(x)[0], -1])

    @staticmethod
    def zero_diagonal(d: Any) -> Any:
        return tf.where(tf.eye(tf.shape(d)[0], dtype=tf.bool), tf.zeros_like(d), d)

    @staticmethod
    def matmul_t(u: Any) -> Any:
        return tf.matmul(u, u, transpose_b=True)


OPS = TfOps()

#: Every term and the weighted sum (``total``): :func:`lwdsl.backend.losses.distill_loss` on TensorFlow.
distill_loss = partial(losses.distill_loss, OPS)


# --- features --------------------------------------------------------------------------------------


def _fused(layer: Any) -> bool:
    act = getattr(layer, "activation", None)
    return act is not None and act is not keras.activations.linear and getattr(act, "__name__", "") != "linear"


def _preact(layer: Any, inp: Any) -> Any:
    """The output of ``layer`` (Dense or Conv) before its fused activation."""
    if hasattr(layer, "convolution_op"):
        out = layer.convolution_op(inp, layer.kernel)
    else:
        out = tf.tensordot(inp, layer.kernel, [[inp.shape.rank - 1], [0]])
    if getattr(layer, "use_bias", False):
        out = tf.nn.bias_add(out, layer.bias)
    return out


class _Taps:
    """A model returning (logits, features): the named layers' outputs before fused activations
    (none named: the model itself)."""

    def __init__(self, model: Any, names: Sequence[str], role: str) -> None:
        known = {layer.name: layer for layer in model.layers}
        self.model, self.layers, tensors = model, [known[name] for name in names], []
        for name, layer in zip(names, self.layers):
            try:
                tensors.append(layer.input if _fused(layer) else layer.output)
            except AttributeError:
                raise LwdslError(
                    f"distill features: the {role}'s layer '{name}' has no single graph output (a subclassed model?)",
                    hint="use a Sequential or functional Keras model",
                ) from None
        if tensors:
            self.model = keras.Model(model.inputs, [model.output, *tensors])

    def __call__(self, x: Any, training: bool) -> tuple[Any, list[Any]]:
        if not self.layers:
            return self.model(x, training=training), []
        out = self.model(x, training=training)
        feats = [(_preact(layer, f) if _fused(layer) else f) for layer, f in zip(self.layers, out[1:])]
        return out[0], feats


class KerasDistillParts(DistillParts):
    """TensorFlow's parts of the core's ``distill`` flow."""

    ops, channels_last = OPS, True

    def __init__(self) -> None:
        self._forward: dict[int, tuple[Any, Any]] = {}  # id(model) -> (model, tf.function), last few

    def model_name(self, handle: KerasHandle) -> str:
        return handle.model.name

    def load_teacher(self, base: KerasHandle, ctx: StepContext, path: Path) -> KerasHandle:
        """The original's architecture, weights from ``path`` (``.lwz``, or ``.keras``/``.h5``
        read in safe mode)."""
        return ctx.backend.load_model(base.model, ctx.data.input_shape, ctx.data.num_classes, checkpoint=path)

    def build_student(self, name: str, ctx: StepContext) -> KerasHandle:
        """A zoo model initialised from the step seed (as torch's); the user's own model is copied as it is."""
        from .models import RUN_SEED

        run, RUN_SEED[0] = RUN_SEED[0], ctx.step_seed()
        try:
            return ctx.backend.load_model(ctx.models.get(name, name), ctx.data.input_shape, ctx.data.num_classes)
        finally:
            RUN_SEED[0] = run

    def outputs(self, handle: KerasHandle, x: np.ndarray) -> np.ndarray:
        model = handle.model
        hit = self._forward.get(id(model))
        if hit is None or hit[0] is not model:
            if len(self._forward) >= 4:
                self._forward.pop(next(iter(self._forward)))
            hit = (model, tf.function(lambda v, m=model: m(v, training=False), reduce_retracing=True))
            self._forward[id(model)] = hit
        return hit[1](tf.constant(nhwc(np.ascontiguousarray(x, dtype=np.float32)))).numpy().astype(np.float32)

    def layer_names(self, handle: KerasHandle) -> list[str]:
        return [layer.name for layer in handle.model.layers]

    def tap(self, handle: KerasHandle, names: Sequence[str], role: str) -> _Taps:
        return _Taps(handle.model, names, role)

    def start(self, student: KerasHandle, teachers: Sequence[KerasHandle], cache: Optional[np.ndarray]) -> Any:
        return tf.constant(cache) if cache is not None else None

    def images(self, x: np.ndarray) -> Any:
        return tf.constant(nhwc(x))

    def run(self, tapped: Optional[_Taps], x: Any, model: Any = None) -> tuple[Any, list[Any]]:
        if model is not None:  # the student: through its taps when features are asked for
            return tapped(x, training=True) if tapped is not None else (model(x, training=True), [])
        logits, feats = tapped(x, training=False)
        return tf.stop_gradient(logits), [tf.stop_gradient(f) for f in feats]

    def projection(self, weight: np.ndarray, bias: np.ndarray, rank: int) -> tuple[Any, list[Any]]:
        """A 1x1 map on the last axis (channels), its kernel ``[c_in, c_out]``."""
        kernel = tf.Variable(np.ascontiguousarray(weight.T), name="distill_projection_kernel")
        b = tf.Variable(bias, name="distill_projection_bias")
        return (lambda f: tf.tensordot(f, kernel, [[f.shape.rank - 1], [0]]) + b), [kernel, b]


#: This backend's parts, and the ``distill`` handler: the core's flow over them.
PARTS = KerasDistillParts()
distill = distill_handler(PARTS)
