"""``prune`` on PyTorch: the weights go to :mod:`lwdsl.semantics.masks` as zero-copy numpy views
(PyTorch's layout is the canonical one), so the masks are bit-identical to any backend's; a
global magnitude prune writes its masks and zeroes chunk by chunk (:mod:`lwdsl.semantics.cut`).
One-shot or gradual is the core's flow (:mod:`lwdsl.backend.prune`)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from lwdsl.backend import StepContext
from lwdsl.backend.prune import PruneParts, prune_handler
from lwdsl.semantics import masks as lm
from lwdsl.semantics.cut import apply_cut, magnitude_cut
from lwdsl.semantics.pruning import MaskRule, keep_masks
from lwdsl.language.specs import PruneSpec

from .handle import TorchModel, layer_inputs, weight_of
from .layers import weighted_layers
from .structured import plan_removal, remove_filters
from .train import fit

__all__ = ["prune", "TorchPruneParts", "global_magnitude_prune"]

def _is_view(w: torch.Tensor) -> bool:
    return w.dtype == torch.float32 and w.is_contiguous() and w.device.type == "cpu"


def _view(w: torch.Tensor) -> np.ndarray:
    """A numpy float32 view of ``w`` sharing its memory (a copy if it cannot)."""
    return w.detach().numpy() if _is_view(w) else w.detach().float().contiguous().cpu().numpy()


def global_magnitude_prune(handle: TorchModel, layers: Sequence[str], amount: float) -> None:
    """Prune ``amount`` of the weights of ``layers`` together (one layer: per layer) by
    magnitude, exactly as :func:`lwdsl.semantics.masks.magnitude_keep_masks`, without concatenating."""
    weights = [weight_of(handle.module, name) for name in layers]
    views = [_view(w) for w in weights]
    k = lm.count_to_prune(amount, sum(v.size for v in views))
    cut = magnitude_cut(views, k)
    for i, (name, w, v) in enumerate(zip(layers, weights, views)):
        keep = torch.empty(w.shape, dtype=torch.bool)
        apply_cut(cut, i, v, keep.numpy())  # zeroes w itself when v is a view of it
        handle.add_mask(name, keep, zeroed=_is_view(w))


class TorchPruneParts(PruneParts):
    """PyTorch's parts of the core's ``prune`` flow."""

    def in_model_order(self, handle: TorchModel, layers: Sequence[str]) -> list[str]:
        chosen = set(layers)
        return [name for name, _ in weighted_layers(handle.module) if name in chosen]

    def prune_once(self, handle: TorchModel, rule: MaskRule, layers: Sequence[str], remove: bool, ctx: StepContext) -> TorchModel:
        if rule.kind == "magnitude":  # the same cut as masks.magnitude_cut, in place, in one read
            for group in ([list(layers)] if rule.scope == "global" else [[name] for name in layers]):
                global_magnitude_prune(handle, group, rule.amount)
        elif rule.kind == "structured" and remove:  # per dependency group: see structured.py
            remove_filters(handle, rule, layers, ctx)
        else:
            weights = [_view(weight_of(handle.module, name)) for name in layers]
            for name, keep in zip(layers, keep_masks(rule, weights)):
                handle.add_mask(name, torch.from_numpy(np.ascontiguousarray(keep)))
        return handle

    def layer_inputs(self, handle: TorchModel, layers: Sequence[str], x: np.ndarray) -> list[np.ndarray]:
        return layer_inputs(handle, layers, x)

    def weight(self, handle: TorchModel, layer: str) -> np.ndarray:
        return weight_of(handle.module, layer).detach().to(torch.float32).cpu().numpy().copy()

    def set_pruned(self, handle: TorchModel, layer: str, keep: np.ndarray, w: np.ndarray) -> None:
        with torch.no_grad():
            weight_of(handle.module, layer).copy_(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)))
        handle.add_mask(layer, torch.from_numpy(np.ascontiguousarray(keep, dtype=bool)))

    def plan_removal(self, handle: TorchModel, layers: Sequence[str]) -> None:
        plan_removal(handle, layers)

    def fit(self, handle: TorchModel, spec: PruneSpec, ctx: StepContext, **kwargs: Any) -> Any:
        return fit(handle, spec, ctx, **kwargs)


#: The ``prune`` handler: the core's flow over this backend's parts.
prune = prune_handler(TorchPruneParts())
