"""``distill`` on Keras: the core's flow (:mod:`lwdsl.backend.distill`) over
:class:`KerasDistillParts` (teachers loaded into the original's architecture, features read
before any fused activation, a 1x1 projection on the channel axis, cached logits gathered by
index), and the loss terms of :mod:`lwdsl.backend.losses` over TensorFlow ops (:class:`TfOps`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from lwdsl.backend import StepContext
from lwdsl.backend import losses
from lwdsl.backend.distill import DistillParts, DistillTraining, distill_handler, no_feature_layer, projection_channels
from lwdsl.errors import LwdslError
from lwdsl.semantics import distill as core
from lwdsl.language.specs import DistillSpec

from ._tf import keras, tf
from .handle import KerasHandle
from .train import cross_entropy, fit, nhwc

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
    zeros_like = staticmethod(tf.zeros_like)
    abs = staticmethod(tf.abs)
    sqrt = staticmethod(tf.sqrt)
    mean = staticmethod(tf.reduce_mean)
    maximum = staticmethod(tf.maximum)

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
    def static_rows(x: Any) -> Optional[int]:
        return x.shape[0]

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


def distill_loss(spec: DistillSpec, *tensors: Any) -> dict[str, Any]:
    """Every term and the weighted sum (``total``): :func:`lwdsl.backend.losses.distill_loss`."""
    return losses.distill_loss(OPS, spec, *tensors)


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
    """A model returning (logits, features): the named layers' outputs before fused activations."""

    def __init__(self, model: Any, names: Sequence[str], role: str) -> None:
        known = {layer.name: layer for layer in model.layers}
        self.layers = []
        tensors = []
        for name in names:
            if name not in known:
                raise no_feature_layer(name, list(known), role)
            layer = known[name]
            self.layers.append(layer)
            try:
                tensors.append(layer.input if _fused(layer) else layer.output)
            except AttributeError:
                raise LwdslError(
                    f"distill features: the {role}'s layer '{name}' has no single graph output (a subclassed model?)",
                    hint="use a Sequential or functional Keras model",
                ) from None
        self.model = keras.Model(model.inputs, [model.output, *tensors])

    def __call__(self, x: Any, training: bool) -> tuple[Any, list[Any]]:
        out = self.model(x, training=training)
        feats = [(_preact(layer, f) if _fused(layer) else f) for layer, f in zip(self.layers, out[1:])]
        return out[0], feats


class _Projection:
    """A learned 1x1 map from the student's channels (last axis) to the teacher's."""

    def __init__(self, shape_s: Any, shape_t: Any, seed: int, pair: str) -> None:
        w, b = core.projection_init(*projection_channels(shape_s, shape_t, pair, channels_last=True), seed)
        self.kernel = tf.Variable(np.ascontiguousarray(w.T), name="distill_projection_kernel")
        self.bias = tf.Variable(b, name="distill_projection_bias")
        self.variables = [self.kernel, self.bias]

    def __call__(self, f: Any) -> Any:
        return tf.tensordot(f, self.kernel, [[f.shape.rank - 1], [0]]) + self.bias


# --- the handler ---------------------------------------------------------------------------------


def _batch_teacher_logits(teachers: Sequence[KerasHandle], xb: Any) -> Any:
    """The teachers' mean logits for one batch (inference mode, as the cache computes them)."""
    per = [tf.cast(t.model(xb, training=False), tf.float64) for t in teachers]
    return tf.stop_gradient(tf.cast(tf.add_n(per) / len(per), tf.float32))


class KerasDistillParts(DistillParts):
    """TensorFlow's parts of the core's ``distill`` flow."""

    def __init__(self) -> None:
        self._forward: dict[int, tuple[Any, Any]] = {}  # id(model) -> (model, tf.function), last few

    def model_name(self, handle: KerasHandle) -> str:
        return handle.model.name

    def load_teacher(self, handle: KerasHandle, ctx: StepContext, path: Path) -> KerasHandle:
        """The original's architecture (the current model's when none was kept), weights from
        ``path`` (``.lwz``, or ``.keras``/``.h5`` read in safe mode)."""
        base = ctx.original if ctx.original is not None else handle
        return ctx.backend.load_model(base.model, ctx.data.input_shape, ctx.data.num_classes, checkpoint=path)

    def build_student(self, name: str, ctx: StepContext) -> KerasHandle:
        """Zoo models start from fixed seeds; the user's own model is copied as it is."""
        return ctx.backend.load_model(ctx.models.get(name, name), ctx.data.input_shape, ctx.data.num_classes)

    def outputs(self, handle: KerasHandle, x: np.ndarray) -> np.ndarray:
        model = handle.model
        hit = self._forward.get(id(model))
        if hit is None or hit[0] is not model:
            if len(self._forward) >= 4:
                self._forward.pop(next(iter(self._forward)))
            hit = (model, tf.function(lambda v, m=model: m(v, training=False), reduce_retracing=True))
            self._forward[id(model)] = hit
        return hit[1](tf.constant(nhwc(np.ascontiguousarray(x, dtype=np.float32)))).numpy().astype(np.float32)

    def training(self, student: KerasHandle, teachers: Sequence[KerasHandle], spec: DistillSpec,
                 cache: Optional[np.ndarray], ctx: StepContext) -> DistillTraining:
        table = tf.constant(cache) if cache is not None else None
        pairs = list(spec.features)
        projections: list[_Projection] = []
        s_taps: Optional[_Taps] = None
        t_taps: list[_Taps] = []
        if pairs:
            s_taps = _Taps(student.model, [p.student for p in pairs], "student")
            t_taps = [_Taps(t.model, [p.teacher for p in pairs], f"teacher {i + 1}") for i, t in enumerate(teachers)]
            probe = tf.constant(nhwc(ctx.data.train_x[:2]))
            _, fs = s_taps(probe, training=False)
            _, ft = t_taps[0](probe, training=False)
            projections = [_Projection(a.shape, b.shape, ctx.step_seed() + i, str(p)) for i, (a, b, p) in enumerate(zip(fs, ft, pairs))]

        def batch_loss(model: Any, xb: Any, yb: Any, idx: Any):
            t_logits = tf.gather(table, idx) if table is not None else _batch_teacher_logits(teachers, xb)
            t_feats, projected = [], []
            if pairs:
                logits, fs = s_taps(xb, training=True)
                logits, fs = tf.cast(logits, tf.float32), [tf.cast(f, tf.float32) for f in fs]  # precision=bf16|fp16
                per = [taps(xb, training=False)[1] for taps in t_taps]
                for i in range(len(pairs)):
                    t_feats.append(tf.stop_gradient(tf.add_n([p[i] for p in per]) / len(per)))
                    projected.append(projections[i](fs[i]))
            else:
                logits = model(xb, training=True)
            terms = distill_loss(spec, logits, yb, t_logits, t_feats, projected)
            return terms["total"], terms["soft" if spec.data is not None else "ce"]

        return DistillTraining(batch_loss, [v for proj in projections for v in proj.variables], len(projections))

    def fit(self, handle: KerasHandle, spec: DistillSpec, ctx: StepContext, **kwargs: Any) -> Any:
        return fit(handle, spec, ctx, **kwargs)


#: This backend's parts, and the ``distill`` handler: the core's flow over them.
PARTS = KerasDistillParts()
distill = distill_handler(PARTS)
