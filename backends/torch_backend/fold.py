"""Fold each batch norm into the conv/linear layer before it, ahead of quantization: the pairs
from a ``torch.fx`` trace, the numbers the core's (:func:`lwdsl.semantics.fold.fold_batchnorm`),
the norm becomes ``nn.Identity``; a norm that cannot be folded is warned about
(docs/semantics.md, "Quantization: batch-norm folding, artifacts, latency")."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lwdsl.backend import StepContext
from lwdsl.semantics.fold import fold_batchnorm

from .handle import TorchModel

__all__ = ["fold_batchnorms", "drop_folded"]

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _pairs(module: nn.Module) -> list[tuple[str, str, bool]]:
    """(layer, norm, foldable) for every norm module whose input is a conv/linear module's output."""
    import torch.fx

    graph = torch.fx.symbolic_trace(module).graph
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    mods = dict(module.named_modules())
    found = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), _NORMS):
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or not isinstance(mods.get(src.target), _LAYERS):
            continue
        ok = len(src.users) == 1 and calls[src.target] == 1 and calls[node.target] == 1
        found.append((str(src.target), str(node.target), ok))
    return found


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def drop_folded(module: nn.Module, norms: Sequence[str]) -> dict[str, str]:
    """Make ``module`` the shape of a folded model: each of ``norms`` becomes ``nn.Identity`` and
    the layer before it gets a bias (zeros until a state is loaded). For loading a state saved
    after :func:`fold_batchnorms` (its ``<norm>.folded`` markers) into a freshly built model.
    Returns layer -> norm.

    Raises:
        LwdslError: a named norm is not in the model or follows no conv/linear layer.
    """
    from lwdsl.errors import LwdslError

    before = {norm: layer for layer, norm, _ in _pairs(module)}
    done = {}
    for norm in norms:
        if norm not in before:
            raise LwdslError(f"the state says batch norm '{norm}' was folded, but the model has no such norm after a conv/linear layer")
        lin = module.get_submodule(before[norm])
        if lin.bias is None:
            lin.bias = nn.Parameter(torch.zeros(lin.weight.shape[0], dtype=lin.weight.dtype))
        _set_module(module, norm, nn.Identity())
        done[before[norm]] = norm
    return done


def fold_batchnorms(handle: TorchModel, layers: Sequence[str], ctx: StepContext) -> dict[str, str]:
    """Fold the norms after ``layers`` into them; returns layer -> norm folded (also in
    ``ctx.notes["folded"]``)."""
    model = handle.module
    if not any(isinstance(m, _NORMS) for m in model.modules()):
        return {}
    chosen = set(layers)
    try:
        pairs = _pairs(model)
    except Exception as exc:  # user code fx cannot trace: say so, quantize unfolded
        ctx.warn(
            f"step {ctx.index + 1} (quantize): the model could not be traced ({type(exc).__name__}), so its batch norms "
            "are not folded into the layers before them: they run as float ops between int8 layers"
        )
        return {}
    folded: dict[str, str] = {}
    for layer, norm, ok in pairs:
        if layer not in chosen:
            continue
        bn = model.get_submodule(norm)
        if not ok or bn.running_mean is None:
            why = "has no running statistics" if bn.running_mean is None else f"'{layer}' output also feeds other ops"
            ctx.warn(f"step {ctx.index + 1} (quantize): batch norm '{norm}' is not folded into '{layer}' ({why}); it stays float")
            continue
        lin = model.get_submodule(layer)
        if layer in handle.masks:
            with handle.masks.unpacked():
                handle.apply_mask(layer)
        t = lambda p: None if p is None else p.detach().to(torch.float32).numpy()  # noqa: E731
        wf, bf = fold_batchnorm(t(lin.weight), t(lin.bias), t(bn.weight), t(bn.bias), t(bn.running_mean), t(bn.running_var), bn.eps)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(wf))
            if lin.bias is None:
                lin.bias = nn.Parameter(torch.from_numpy(bf).to(lin.weight.dtype))
            else:
                lin.bias.copy_(torch.from_numpy(bf))
        _set_module(model, norm, nn.Identity())
        folded[layer] = norm
    if folded:
        handle.folded.update(folded)
        ctx.notes["folded"] = dict(folded)
    return folded
