"""Layers (modules owning a ``weight`` parameter, by qualified name, in model order) with their
portable kinds (:class:`lwdsl.backend.LayerInfo`), parameter counts, and the canonical state:
the ``state_dict`` as numpy copies without ``num_batches_tracked`` (PyTorch's layout is the
canonical one; docs/semantics.md, "The canonical state")."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lwdsl.backend import LayerInfo, LayerStats, ModelStats
from lwdsl.backend.weights import pack_canonical

from .handle import TorchModel
from .hf import takes_tokens

__all__ = ["layer_kind", "weighted_layers", "list_layers", "canonical_state", "model_stats", "output_positions", "SKIPPED_BUFFERS"]

#: Buffer names left out of the canonical state.
SKIPPED_BUFFERS = ("num_batches_tracked",)

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def layer_kind(module: nn.Module) -> str:
    """The portable kind of a module with a weight."""
    if isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if isinstance(module, _NORMS) or type(module).__name__.endswith(("RMSNorm", "LayerNorm")):  # LlamaRMSNorm, ...
        return "norm"
    return "other"


def weighted_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every sub-module owning a ``weight`` parameter, in model order."""
    return [
        (name, m)
        for name, m in module.named_modules()
        if name and isinstance(m._parameters.get("weight"), nn.Parameter)
    ]


def list_layers(handle: TorchModel) -> list[LayerInfo]:
    return [
        LayerInfo(
            name=name,
            kind=layer_kind(m),
            shape=tuple(m.weight.shape),
            params=sum(p.numel() for p in m.parameters(recurse=False)),
        )
        for name, m in weighted_layers(handle.module)
    ]


def canonical_state(handle: TorchModel) -> dict[str, np.ndarray]:
    """Canonical weights as numpy copies (safe to keep while the model trains on); quantized
    layers' weights as codes (packed below 8 bits, in the N:M layout where their masks are
    N:M), scales and bits, statically quantized
    layers' input scale and zero point, and fp16/bf16 layers' weights as their 16 bits
    (:func:`lwdsl.semantics.quant.pack_state`)."""
    state = {
        key: t.detach().cpu().numpy().copy()
        for key, t in handle.module.state_dict().items()
        if key.rsplit(".", 1)[-1] not in SKIPPED_BUFFERS
    }
    keep = {layer: handle.masks[layer].numpy() for layer in handle.quant if layer in handle.masks}  # N:M layout (state.py)
    return pack_canonical(state, handle.folded, handle.quant, handle.act, handle.qstate.casts, keep)


def model_stats(handle: TorchModel) -> ModelStats:
    params = list(handle.module.parameters())
    layers = []
    with torch.no_grad():
        for name, m in weighted_layers(handle.module):
            w = m.weight
            layers.append(LayerStats(name, layer_kind(m), w.numel(), w.numel() - int(torch.count_nonzero(w))))
        nonzero = sum(int(torch.count_nonzero(p)) for p in params)
    return ModelStats(params=sum(p.numel() for p in params), nonzero_params=nonzero, layers=tuple(layers))


def output_positions(handle: TorchModel, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Output positions of every conv and linear layer for one input of ``input_shape`` (one
    forward pass of zeros with hooks: its output's elements over its channels)."""
    module = handle.module
    found: dict[str, int] = {}
    hooks = []
    for name, m in weighted_layers(module):
        kind = layer_kind(m)
        if kind not in ("conv", "linear"):
            continue

        def hook(_m: nn.Module, _inputs: object, output: object, name: str = name, kind: str = kind) -> None:
            out = output[0] if isinstance(output, tuple) else output
            channels = int(out.shape[1] if kind == "conv" else out.shape[-1])
            found.setdefault(name, int(out.numel()) // max(channels, 1))

        hooks.append(m.register_forward_hook(hook))
    training = module.training
    device = next(module.parameters()).device
    try:
        module.eval()
        with torch.no_grad():
            dtype = torch.long if takes_tokens(module) else torch.float32
            module(torch.zeros((1, *input_shape), dtype=dtype, device=device))
    finally:
        for h in hooks:
            h.remove()
        module.train(training)
    return found
