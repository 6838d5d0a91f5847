"""The model handle: a plain module plus its pruning masks (bool *keep* tensors by layer name,
stored bit-packed, unpacked for a training's duration) and the core's fields of every handle
(:class:`lwdsl.backend.handle.ModelHandle`: losses, folded norms, the quantization record); a
pruned weight is +0.0 at all times (docs/semantics.md, "Fine-tuning and masks")."""

from __future__ import annotations

import contextlib
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from lwdsl.backend.calibrated import WeightParts
from lwdsl.backend.handle import ModelHandle

__all__ = ["Masks", "TorchModel", "TorchWeights", "weight_of"]


class Masks(MutableMapping):
    """Layer name -> bool keep mask, stored bit-packed; reading unpacks a fresh tensor (or the
    cached one inside :meth:`unpacked`), writing packs it."""

    def __init__(self) -> None:
        self._packed: dict[str, tuple[np.ndarray, torch.Size]] = {}
        self._cache: dict[str, torch.Tensor] | None = None

    def __getitem__(self, layer: str) -> torch.Tensor:
        if self._cache is not None and layer in self._cache:
            return self._cache[layer]
        bits, shape = self._packed[layer]
        keep = torch.from_numpy(np.unpackbits(bits, count=shape.numel()).view(np.bool_)).reshape(shape)
        if self._cache is not None:
            self._cache[layer] = keep
        return keep

    def on(self, layer: str, device: torch.device) -> torch.Tensor:
        """The mask on ``device`` (where the weights train; cached inside :meth:`unpacked`)."""
        keep = self[layer]
        if keep.device == device:
            return keep
        if self._cache is not None:
            key = f"{layer}@{device}"
            if key not in self._cache:
                self._cache[key] = keep.to(device)
            return self._cache[key]
        return keep.to(device)

    def __setitem__(self, layer: str, keep: torch.Tensor) -> None:
        keep = keep.detach().to(torch.bool).cpu().contiguous()
        self._packed[layer] = (np.packbits(keep.numpy().reshape(-1)), keep.shape)
        if self._cache is not None:
            for key in [k for k in self._cache if k.startswith(layer + "@")]:
                del self._cache[key]
            self._cache[layer] = keep

    def __delitem__(self, layer: str) -> None:
        del self._packed[layer]
        if self._cache is not None:
            self._cache.pop(layer, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, dict) and not other:
            return not self._packed
        return NotImplemented

    @contextlib.contextmanager
    def unpacked(self) -> Iterator[None]:
        """Keep the bool tensors unpacked inside the block (training reads them every step)."""
        outer = self._cache is not None
        if not outer:
            self._cache = {}
        try:
            yield
        finally:
            if not outer:
                self._cache = None


def weight_of(module: nn.Module, layer: str) -> torch.Tensor:
    """The ``weight`` parameter of the sub-module called ``layer``."""
    return module.get_submodule(layer).weight


@dataclass
class TorchModel(ModelHandle):
    """A model being compressed (and :class:`~lwdsl.backend.handle.ModelHandle`'s fields: the
    quantization record, whose codes the module's weights hold exactly and training keeps on
    their grid, and whose input quantization forward pre-hooks apply while evaluating or
    training, fakequant.py).

    Attributes:
        module: the network (plain ``nn.Module``).
        ref: the name it was built from (``lenet5``, ``torchvision:resnet18``).
        input_shape: (C, H, W) of one input.
        num_classes: outputs of the classifier.
        masks: layer name -> bool keep mask of that layer's weight (fixed until the next prune).
        device: where it trains and is evaluated (``Backend.set_device``; the device a user's
            own model came on, for ``lwdsl.attach``); between those the module is on the CPU,
            where masks, codes, exports and engines read it.
        home: the device a user's own model (``lwdsl.attach``) lives on outside lwdsl's work:
            it goes back there when the session ends (``Backend.release``); None for lwdsl's models.
    """

    module: nn.Module
    ref: str
    input_shape: tuple[int, ...]
    num_classes: int
    masks: Masks = field(default_factory=Masks)
    device: str = "cpu"
    home: Optional[str] = None

    def add_mask(self, layer: str, keep: torch.Tensor, *, zeroed: bool = False) -> None:
        """AND ``keep`` (a fresh tensor, updated in place) into the layer's mask, so a second
        prune never revives a weight, and zero the weights it prunes (unless the caller did:
        ``zeroed``; weights an older mask prunes are zero already)."""
        old = self.masks.get(layer)
        if old is not None:
            torch.logical_and(keep, old, out=keep)
        self.masks[layer] = keep
        if not zeroed:
            self.apply_mask(layer)

    def apply_mask(self, layer: str) -> None:
        """Set the pruned weights of ``layer`` to +0.0 (not -0.0: ``masked_fill``, not ``mul``)."""
        with torch.no_grad():
            w = weight_of(self.module, layer)
            w.masked_fill_(~self.masks.on(layer, w.device), 0.0)

    def apply_masks(self) -> None:
        for layer in self.masks:
            self.apply_mask(layer)

    def mask_grads(self) -> None:
        """Zero the gradients of pruned weights, so optimizer state (momentum, Adam moments)
        never builds up on them."""
        for layer in self.masks:
            grad = weight_of(self.module, layer).grad
            if grad is not None:
                grad.masked_fill_(~self.masks.on(layer, grad.device), 0.0)


@contextlib.contextmanager
def on_device(handle: TorchModel, *others: nn.Module) -> Iterator[torch.device]:
    """The model (and ``others``: teachers, projections) on ``handle.device`` inside the block,
    back on the CPU after it; yields the device. A no-op on the CPU."""
    device = torch.device(handle.device)
    if device.type == "cpu":
        yield device
        return
    modules = [handle.module, *others]
    for m in modules:
        m.to(device)
    try:
        yield device
    finally:
        for m in modules:
            m.to("cpu")


def layer_inputs(handle: TorchModel, layers: Sequence[str], x: np.ndarray) -> list[np.ndarray]:
    """Forward pre-hooks on ``layers`` during one pass over ``x`` in inference mode (on the
    run's device), each input as float32 ``[rows, last axis]`` (pruning's and calibration's taps)."""
    model = handle.module
    seen: dict[str, np.ndarray] = {}

    def keep(name: str) -> Any:
        def hook(module: nn.Module, args: tuple) -> None:
            seen[name] = args[0].detach().to(torch.float32).reshape(-1, args[0].shape[-1]).cpu().numpy()

        return hook

    was_training = model.training
    model.eval()
    hooks = [model.get_submodule(name).register_forward_pre_hook(keep(name)) for name in layers]
    try:
        with torch.inference_mode(), on_device(handle) as device:
            model(torch.from_numpy(x).to(device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [seen[name] for name in layers]


class TorchWeights(WeightParts):
    """Single layers in and out for the core's flows (quantize, prune, the calibrated methods,
    smoothquant): PyTorch's layout is the canonical one."""

    def layer_inputs(self, handle: TorchModel, layers: Sequence[str], x: np.ndarray) -> list[np.ndarray]:
        return layer_inputs(handle, layers, x)

    def weight(self, handle: TorchModel, layer: str) -> np.ndarray:
        if layer in handle.masks:
            handle.apply_mask(layer)
        return weight_of(handle.module, layer).detach().float().numpy().copy()

    def set_weight(self, handle: TorchModel, layer: str, w: np.ndarray) -> None:
        with torch.no_grad():
            weight_of(handle.module, layer).copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)))

    def norm_bias(self, handle: TorchModel, layer: str) -> Optional[np.ndarray]:
        b = getattr(handle.module.get_submodule(layer), "bias", None)
        return None if b is None else b.detach().numpy().copy()

    def set_norm_bias(self, handle: TorchModel, layer: str, b: np.ndarray) -> None:
        with torch.no_grad():
            handle.module.get_submodule(layer).bias.copy_(torch.from_numpy(np.asarray(b, dtype=np.float32)))

    def keep_mask(self, handle: TorchModel, layer: str) -> Optional[np.ndarray]:
        keep = handle.masks.get(layer)
        return None if keep is None else keep.numpy().copy()

    def add_keep(self, handle: TorchModel, layer: str, keep: np.ndarray) -> None:
        handle.add_mask(layer, torch.from_numpy(np.ascontiguousarray(keep, dtype=bool)))
