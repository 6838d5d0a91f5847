"""Physical removal of pruned filters (``prune ... structured=filters remove=true``) per
dependency group (:mod:`lwdsl.semantics.groups` over the graph of :mod:`.graph`): the channels
are the core's, so both backends remove the same ones; what is sliced, what the smaller model
computes and what is refused: docs/semantics.md ("Pruning", `remove=true`)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from lwdsl.backend import StepContext
from lwdsl.semantics.groups import AXIS, Group, axis_keeps, group_keep, select_groups
from lwdsl.semantics.pruning import MaskRule

from .handle import TorchModel

__all__ = ["slice_layer", "plan_removal", "remove_filters"]



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


def plan_removal(handle: TorchModel, layers: Sequence[str]) -> list[Group]:
    """The dependency groups that removing filters of ``layers`` prunes, checked.

    Raises:
        LwdslError: naming the first layer that cannot lose filters and why (the model's
            output, a coupled layer left out of the selection, an untraceable model, ...).
    """
    from .graph import find_groups

    return select_groups(find_groups(handle), layers)


def _weight(module: nn.Module, name: str) -> np.ndarray:
    w = module.get_submodule(name).weight.detach()
    return w.numpy() if w.dtype == torch.float32 and w.device.type == "cpu" else w.float().cpu().numpy()


def _axis_size(m: nn.Module, axis: int) -> int:
    return int(m.weight.shape[axis]) if getattr(m, "weight", None) is not None else int(m.num_features)


def remove_filters(handle: TorchModel, rule: MaskRule, layers: Sequence[str], ctx: Optional[StepContext] = None) -> list[Group]:
    """Remove the filters ``rule`` prunes from every dependency group ``layers`` produce, with
    every layer each group touches; the groups pruned. Everything is checked before anything
    changes; masks of touched layers are sliced alike.

    Raises:
        LwdslError: a group that cannot lose filters (see :func:`plan_removal`), or would
            lose all of them.
    """
    module, masks = handle.module, handle.masks
    chosen = plan_removal(handle, layers)
    keeps = [group_keep(g, lambda n: _weight(module, n), rule.amount, rule.method, rule.p, rule.seed) for g in chosen]
    sizes = {
        (m.layer, AXIS[m.role]): _axis_size(module.get_submodule(m.layer), AXIS[m.role]) for g in chosen for m in g.members
    }
    depthwise = {m.layer for g in chosen for m in g.members if m.role == "depthwise"}
    for (layer, axis), kept in axis_keeps(chosen, keeps, sizes).items():
        index = torch.from_numpy(kept)
        m = module.get_submodule(layer)
        slice_layer(m, axis, index)
        if layer in depthwise:
            m.in_channels = m.groups = index.numel()
        if layer in masks:
            masks[layer] = masks[layer].index_select(axis, index)
    if ctx is not None:
        ctx.notes["groups"] = [f"{g.name}: {g.channels} -> {int(k.sum())} channels" for g, k in zip(chosen, keeps)]
    return chosen
