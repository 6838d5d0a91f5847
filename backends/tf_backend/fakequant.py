"""Fake-quantized inputs of statically quantized layers, while evaluating and training (as
``fakequant.py`` does on the torch backend with forward pre-hooks): :func:`quantized_forward`
is the handle's model with each calibrated layer's input passed through
:class:`FakeQuantInput` first."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._tf import keras, tf
from .handle import KerasHandle

__all__ = ["FakeQuantInput", "quantized_forward"]


@keras.saving.register_keras_serializable(package="lwdsl")
class FakeQuantInput(keras.layers.Layer):
    """Fake-quantizes its input as :func:`lwdsl.semantics.quant.fake_quantize` does, then calls
    ``inner`` (the quantized layer, shared): ``(clip(round(x / scale) + zp, qmin, qmax) - zp) *
    scale`` in float32 (``tf.round`` rounds half to even, as ``np.rint``). Gradients pass
    straight through."""

    def __init__(self, inner: Any, scale: float, zero_point: int, qmin: int = 0, qmax: int = 255, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = inner
        self.scale, self.zero_point, self.qmin, self.qmax = float(scale), int(zero_point), int(qmin), int(qmax)

    def build(self, input_shape: Any) -> None:
        # variables, not constants: in a graph TensorFlow turns ``x / constant`` into a multiply
        # by the reciprocal, which rounds differently from the core's float32 division
        self._scale = self.add_weight(name="act_scale", shape=(), initializer=keras.initializers.Constant(np.float32(self.scale)), trainable=False)
        self._zp = self.add_weight(name="act_zero_point", shape=(), initializer=keras.initializers.Constant(np.float32(self.zero_point)), trainable=False)
        super().build(input_shape)

    def fake(self, x: Any) -> Any:
        """The fake-quantized input (float32)."""
        if not self.built:
            self.build(x.shape)
        s, zp = self._scale, self._zp
        q = tf.clip_by_value(tf.round(x / s) + zp, np.float32(self.qmin), np.float32(self.qmax))
        return (q - zp) * s

    def call(self, x: Any) -> Any:
        @tf.custom_gradient
        def straight_through(t: Any) -> Any:  # exactly fake(t) forward (t + (fake - t) is not)
            return self.fake(t), lambda g: g

        return self.inner(straight_through(x))

    def get_config(self) -> dict:  # pragma: no cover - never saved: evaluation only
        raise NotImplementedError("the fake-quantized forward model is not saved")


_FORWARD: dict[int, tuple[Any, Any, tuple]] = {}


def quantized_forward(handle: KerasHandle) -> Any:
    """The handle's model with every statically quantized layer's input fake-quantized (its
    layers and weights shared with ``handle.model``); the model itself when ``act`` is empty."""
    if not handle.act:
        return handle.model
    key = tuple(sorted((k, a.scale, a.zero_point) for k, a in handle.act.items()))
    hit = _FORWARD.get(id(handle))
    if hit is not None and hit[0] is handle.model and hit[2] == key:
        return hit[1]
    act = handle.act

    def clone(layer: Any) -> Any:
        a = act.get(layer.name)
        if a is None:
            return layer
        return FakeQuantInput(layer, a.scale, a.zero_point, a.qmin, a.qmax, name=f"{layer.name}_fq")

    model = keras.models.clone_model(handle.model, clone_function=clone)
    _FORWARD.clear()
    _FORWARD[id(handle)] = (handle.model, model, key)
    return model
