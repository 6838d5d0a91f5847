"""``quantize`` on TensorFlow: the core's flow (:mod:`lwdsl.backend.quantize`: forms, codes,
casts, ``auto``, QAT, calibration, notes, warnings) over this backend's parts
(:class:`KerasQuantizeParts`).

What is TensorFlow's own: a layer's kernel is converted to the canonical (PyTorch) layout to be
read and back to be written (``codes * scale`` in the Keras variable; a Dense kernel ``[in, out]``
is the canonical ``[out, in]`` transposed, so rows, groups of a row's inputs and the keep mask
of ``method=gptq`` are the core's), so identical weights give bit-identical codes and scales on
both frameworks; the inputs of layers are read from a probe
model whose outputs are those inputs; evaluation fake-quantizes the inputs of calibrated layers
exactly as :func:`~lwdsl.semantics.quant.fake_quantize` does (:func:`quantized_forward`,
:class:`FakeQuantInput`); the core keeps how the model was quantized in the handle's record
(:class:`lwdsl.backend.handle.QuantState`: modes, casts, the int8 step's settings and
calibration images) for the TFLite exporter and engine (the core writes and measures its int8
file after an int8 step: ``int8_artifact``).
Conv1D/2D/3D, DepthwiseConv2D and Dense layers are quantized; separable and transposed
convolutions, embeddings and norms stay float32, named in a warning.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from lwdsl.backend import StepContext
from lwdsl.backend.engines import Engine
from lwdsl.backend.quantize import ONLY_CONV_AND_LINEAR, QuantizeParts, quantize_handler
from lwdsl.backend.smoothquant import smoothquant_handler

from ._tf import tf
from .fakequant import FakeQuantInput, quantized_forward
from .fold import fold_batchnorms
from .handle import KerasHandle, KerasWeights
from .layers import LayerView, _classes, nhwc
from .tflite_engine import LITERT

__all__ = ["quantize", "smoothquant", "KerasQuantizeParts", "quantizable", "quantized_forward", "FakeQuantInput"]


def quantizable(view: LayerView) -> Optional[str]:
    """Why ``view``'s layer cannot be quantized here (None when it can)."""
    classes = _classes(view.layer)
    if classes & {"SeparableConv1D", "SeparableConv2D"}:  # two kernels in one layer
        return f"{type(view.layer).__name__} is not quantized by the tensorflow backend yet"
    if "Transpose" in type(view.layer).__name__:
        return f"{type(view.layer).__name__} is not quantized by the tensorflow backend yet"
    if not (classes & {"Conv", "Dense"}) or view.weight.name != f"{view.name}.weight":
        return ONLY_CONV_AND_LINEAR
    return None


class KerasQuantizeParts(KerasWeights, QuantizeParts):
    """TensorFlow's parts of the core's ``quantize`` flow."""

    def __init__(self) -> None:
        self._compiled: dict[Any, tuple[Any, Any]] = {}  # (model, what) -> (model, tf.function), last few

    def _function(self, key: Any, model: Any, build: Any) -> Any:
        hit = self._compiled.get(key)
        if hit is not None and hit[0] is model:
            return hit[1]
        if len(self._compiled) >= 4:
            self._compiled.pop(next(iter(self._compiled)))
        fn = build()
        self._compiled[key] = (model, fn)
        return fn

    def candidates(self, handle: KerasHandle, layers: Sequence[str]) -> tuple[list[str], dict[str, tuple[str, str]]]:
        wanted = set(layers)
        chosen, left = [], {}
        for view in handle.views():
            if view.name not in wanted:
                continue
            why = quantizable(view)
            if why is None:
                chosen.append(view.name)
            else:
                left[view.name] = (view.kind, why)
        return chosen, left

    def fold(self, handle: KerasHandle, names: Sequence[str], ctx: StepContext) -> None:
        fold_batchnorms(handle, names, ctx)  # the model may be replaced by its folded clone

    def drop_mask(self, handle: KerasHandle, name: str) -> bool:
        return handle.masks.pop(name, None) is not None

    def logits(self, handle: KerasHandle, x: np.ndarray) -> np.ndarray:
        keras_model = quantized_forward(handle)
        forward = self._function(("logits", id(keras_model)), keras_model,
                                 lambda: tf.function(lambda t: keras_model(t, training=False), reduce_retracing=True))
        return forward(tf.constant(nhwc(x))).numpy()

    def engine(self) -> Engine:
        return LITERT


#: The ``quantize`` handler: the core's flow over this backend's parts.
quantize = quantize_handler(KerasQuantizeParts())

#: The ``smoothquant`` handler: the core's flow over the same parts (weights of norms and linears, layer inputs).
smoothquant = smoothquant_handler(KerasQuantizeParts())
