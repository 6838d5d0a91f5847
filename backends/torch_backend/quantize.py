"""``quantize`` on PyTorch: the core's flow (:mod:`lwdsl.backend.quantize`: forms, codes,
casts, ``auto``, QAT, calibration, notes, warnings) over this backend's parts
(:class:`TorchQuantizeParts`).

What is PyTorch's own: a selected layer's weight is read and written in place (the canonical
layout is PyTorch's); pruned weights are zeroed first (their codes are 0); the inputs of layers
are captured with forward pre-hooks while the model runs in eval mode with float activations;
the model evaluates with calibrated inputs fake-quantized (fakequant.py). The core keeps the
step in the handle's record (:class:`lwdsl.backend.handle.QuantState`: each layer's mode, the
calibration images) for the int8 ONNX file (int8_engine.py; the core writes and measures it:
``int8_artifact``) and the torch.ao bench peer (bench/torch_ao_peer.py). Conv and linear layers
are quantized; other kinds (norms, embeddings) stay float32, named in a warning.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from lwdsl.backend import StepContext
from lwdsl.backend.engines import Engine
from lwdsl.backend.quantize import ONLY_CONV_AND_LINEAR, QuantizeParts, quantize_handler
from lwdsl.backend.smoothquant import smoothquant_handler

from .fakequant import act_hooks
from .fold import fold_batchnorms
from .handle import TorchModel, TorchWeights
from .layers import layer_kind, weighted_layers

__all__ = ["quantize", "smoothquant", "TorchQuantizeParts", "QUANTIZABLE"]

#: Layer kinds this backend quantizes.
QUANTIZABLE = ("conv", "linear")


class TorchQuantizeParts(TorchWeights, QuantizeParts):
    """PyTorch's parts of the core's ``quantize`` flow."""

    def candidates(self, handle: TorchModel, layers: Sequence[str]) -> tuple[list[str], dict[str, tuple[str, str]]]:
        kinds = {name: layer_kind(m) for name, m in weighted_layers(handle.module)}
        chosen = set(layers)
        ordered = [name for name in kinds if name in chosen]
        left = {name: (kinds[name], ONLY_CONV_AND_LINEAR) for name in ordered if kinds[name] not in QUANTIZABLE}
        return [name for name in ordered if name not in left], left

    def fold(self, handle: TorchModel, names: Sequence[str], ctx: StepContext) -> None:
        fold_batchnorms(handle, names, ctx)

    def drop_mask(self, handle: TorchModel, name: str) -> bool:
        return handle.masks.pop(name, None) is not None

    def logits(self, handle: TorchModel, x: np.ndarray) -> np.ndarray:
        model = handle.module
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode(), act_hooks(handle):
                return model(torch.from_numpy(x)).numpy()
        finally:
            model.train(was_training)

    def engine(self) -> Engine:
        from .int8_engine import ONNX

        return ONNX


#: The ``quantize`` handler: the core's flow over this backend's parts.
quantize = quantize_handler(TorchQuantizeParts())

#: The ``smoothquant`` handler: the core's flow over the same parts (weights of norms and linears, layer inputs).
smoothquant = smoothquant_handler(TorchQuantizeParts())
