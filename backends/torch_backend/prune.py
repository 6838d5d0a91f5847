"""``prune`` on PyTorch: the weights go to :mod:`lwdsl.semantics.masks` as zero-copy numpy views
(PyTorch's layout is the canonical one), so the masks are bit-identical to any backend's; a
global magnitude prune writes its masks and zeroes chunk by chunk (:mod:`lwdsl.semantics.cut`).
One-shot or gradual is the core's flow (:mod:`lwdsl.backend.prune`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from lwdsl.backend.prune import PruneParts, prune_handler
from lwdsl.semantics import masks as lm
from lwdsl.semantics.cut import apply_cut, magnitude_cut

from .handle import TorchModel, TorchWeights, weight_of
from .layers import weighted_layers
from .structured import FilterRemoval

__all__ = ["prune", "TorchPruneParts"]

def _is_view(w: torch.Tensor) -> bool:
    return w.dtype == torch.float32 and w.is_contiguous() and w.device.type == "cpu"


def _view(w: torch.Tensor) -> np.ndarray:
    """A numpy float32 view of ``w`` sharing its memory (a copy if it cannot)."""
    return w.detach().numpy() if _is_view(w) else w.detach().float().contiguous().cpu().numpy()


class TorchPruneParts(TorchWeights, FilterRemoval, PruneParts):
    """PyTorch's parts of the core's ``prune`` flow (the removal's: :class:`.structured.FilterRemoval`)."""

    def in_model_order(self, handle: TorchModel, layers: Sequence[str]) -> list[str]:
        chosen = set(layers)
        return [name for name, _ in weighted_layers(handle.module) if name in chosen]

    def magnitude_prune(self, handle: TorchModel, layers: Sequence[str], amount: float) -> None:
        """The exact cut in place, in one read of the weights (zero-copy views), without concatenating."""
        weights = [weight_of(handle.module, name) for name in layers]
        views = [_view(w) for w in weights]
        cut = magnitude_cut(views, lm.count_to_prune(amount, sum(v.size for v in views)))
        for i, (name, w, v) in enumerate(zip(layers, weights, views)):
            keep = torch.empty(w.shape, dtype=torch.bool)
            apply_cut(cut, i, v, keep.numpy())  # zeroes w itself when v is a view of it
            handle.add_mask(name, keep, zeroed=_is_view(w))

    def canonical_weights(self, handle: TorchModel, layers: Sequence[str]) -> list[np.ndarray]:
        return [_view(weight_of(handle.module, name)) for name in layers]




#: The ``prune`` handler: the core's flow over this backend's parts.
prune = prune_handler(TorchPruneParts())
