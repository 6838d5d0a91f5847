"""Physical removal of pruned filters (``prune ... structured=filters remove=true``) per
dependency group (:mod:`lwdsl.semantics.groups` over the graph of :mod:`.graph`): the flow and
the channels are the core's (:mod:`lwdsl.backend.prune`), so both backends remove the same ones;
what is sliced, what the smaller model computes and what is refused: docs/semantics.md
("Pruning", `remove=true`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from lwdsl.semantics.groups import Group

from .handle import TorchModel

__all__ = ["slice_layer", "FilterRemoval"]


def slice_layer(m: nn.Module, dim: int, index: torch.Tensor) -> None:
    """Keep only the entries ``index`` of a layer's output (dim 0) or input (dim 1), in place.

    Works on Conv*/Linear (weight, bias, in/out sizes) and BatchNorm (dim 0: every
    per-channel parameter and running statistic)."""
    with torch.no_grad():
        for pname in ("weight", "bias"):
            p = m._parameters.get(pname)
            if p is not None and (dim == 0 or p.dim() > 1):
                setattr(m, pname, nn.Parameter(p.index_select(dim, index).clone(), requires_grad=p.requires_grad))
        if isinstance(m, nn.modules.batchnorm._NormBase):
            for bname in ("running_mean", "running_var"):
                if getattr(m, bname, None) is not None:
                    setattr(m, bname, getattr(m, bname).index_select(0, index).clone())
            m.num_features = index.numel()
            return
    n = index.numel()
    if isinstance(m, nn.Linear):
        if dim == 0:
            m.out_features = n
        else:
            m.in_features = n
    elif isinstance(m, nn.modules.conv._ConvNd):
        if dim == 0:
            m.out_channels = n
        else:
            m.in_channels = n


class FilterRemoval:
    """The filter-removal primitives of :class:`.prune.TorchPruneParts` (the flow is the core's
    :meth:`lwdsl.backend.prune.PruneParts.remove_filters`): the groups of a ``torch.fx`` trace,
    layers sliced in place."""

    def groups(self, handle: TorchModel) -> list[Group]:
        """Raises LwdslError for a model torch.fx cannot trace (:func:`.graph.trace`)."""
        from .graph import find_groups

        return find_groups(handle)

    def axis_size(self, handle: TorchModel, layer: str, axis: int) -> int:  # a norm may have no weight
        m = handle.module.get_submodule(layer)
        return int(m.weight.shape[axis]) if getattr(m, "weight", None) is not None else int(m.num_features)

    def cut_channels(self, handle: TorchModel, kept: dict[tuple[str, int], np.ndarray], groups: Sequence[Group]) -> TorchModel:
        depthwise = {m.layer for g in groups for m in g.members if m.role == "depthwise"}
        for (layer, axis), idx in kept.items():
            index = torch.from_numpy(idx)
            m = handle.module.get_submodule(layer)
            slice_layer(m, axis, index)
            if layer in depthwise:
                m.in_channels = m.groups = index.numel()
            if layer in handle.masks:
                handle.masks[layer] = handle.masks[layer].index_select(axis, index)
        return handle
