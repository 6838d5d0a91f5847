"""The model handle the runner passes back to the backend: a module plus its pruning masks.

Masks live here, never in the module: no ``torch.nn.utils.prune`` reparametrisation, no
``weight_orig``, no forward hooks, so the module is always a plain network whose state dict
is plain weights. A mask is a ``torch.bool`` *keep* tensor (True where the weight stays) of
the layer's weight shape, keyed by the layer's module name. The invariant, kept by every
function that touches weights: a pruned weight is exactly +0.0 at all times (masks are
re-applied after every optimizer step and after every load).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["TorchModel", "weight_of"]


def weight_of(module: nn.Module, layer: str) -> torch.Tensor:
    """The ``weight`` parameter of the sub-module called ``layer``."""
    return module.get_submodule(layer).weight


@dataclass
class TorchModel:
    """A model being compressed.

    Attributes:
        module: the network (plain ``nn.Module``).
        ref: the name it was built from (``lenet5``, ``torchvision:resnet18``).
        input_shape: (C, H, W) of one input.
        num_classes: outputs of the classifier.
        masks: layer name -> bool keep mask of that layer's weight (fixed until the next prune).
    """

    module: nn.Module
    ref: str
    input_shape: tuple[int, ...]
    num_classes: int
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

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
            weight_of(self.module, layer).masked_fill_(~self.masks[layer], 0.0)

    def apply_masks(self) -> None:
        for layer in self.masks:
            self.apply_mask(layer)

    def mask_grads(self) -> None:
        """Zero the gradients of pruned weights, so optimizer state (momentum, Adam moments)
        never builds up on them."""
        for layer, keep in self.masks.items():
            grad = weight_of(self.module, layer).grad
            if grad is not None:
                grad.masked_fill_(~keep, 0.0)
