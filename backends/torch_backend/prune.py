"""``prune``: every form of :class:`~lwdsl.specs.PruneSpec`, with masks from :mod:`lwdsl.masks`.

Weights are handed to :mod:`lwdsl.masks` as zero-copy numpy views of the torch tensors
(PyTorch's layout is the canonical one), so the masks are bit-identical to any other backend's
on the same weights. Magnitude pruning (per layer or global) finds the exact cut of
:func:`lwdsl.masks.magnitude_cut` (in one read of the weights, see magnitude.py) and then
writes the keep mask and zeroes the weights chunk by chunk, so a global prune of 1B parameters
needs the masks (bit-packed: 1 bit a weight) and a few MB more.

Only ``weight`` tensors are pruned, never biases. A new mask is ANDed with the layer's
earlier one. Gradual pruning trains (see train.py) and recomputes the masks every
``frequency`` optimizer steps at the cubic schedule's sparsity, ending with a mask at
exactly AMOUNT.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from lwdsl import masks as lm
from lwdsl.backend import StepContext
from lwdsl.order import steps_per_epoch
from lwdsl.specs import PruneSpec

from .handle import TorchModel, weight_of
from .layers import weighted_layers
from .magnitude import apply_cut, magnitude_cut
from .structured import plan_removal, remove_filters
from .train import fit

__all__ = ["prune", "prune_once", "global_magnitude_prune"]

def _is_view(w: torch.Tensor) -> bool:
    return w.dtype == torch.float32 and w.is_contiguous() and w.device.type == "cpu"


def _view(w: torch.Tensor) -> np.ndarray:
    """A numpy float32 view of ``w`` sharing its memory (a copy if it cannot)."""
    return w.detach().numpy() if _is_view(w) else w.detach().float().contiguous().cpu().numpy()


def global_magnitude_prune(handle: TorchModel, layers: Sequence[str], amount: float) -> None:
    """Prune ``amount`` of the weights of ``layers`` together (one layer: per layer) by
    magnitude, exactly as :func:`lwdsl.masks.magnitude_keep_masks`, without concatenating."""
    weights = [weight_of(handle.module, name) for name in layers]
    views = [_view(w) for w in weights]
    k = lm.count_to_prune(amount, sum(v.size for v in views))
    cut = magnitude_cut(views, k)
    for i, (name, w, v) in enumerate(zip(layers, weights, views)):
        keep = torch.empty(w.shape, dtype=torch.bool)
        apply_cut(cut, i, v, keep.numpy())  # zeroes w itself when v is a view of it
        handle.add_mask(name, keep, zeroed=_is_view(w))


def _structured_keep(w: np.ndarray, spec: PruneSpec, amount: float, seed: int) -> torch.Tensor:
    """Bool per slice (filter: axis 0, channel: axis 1)."""
    p = {"l1": 1.0, "l2": 2.0}.get(spec.method, spec.n or 1.0)
    axis = 0 if spec.structured == "filters" else 1
    return torch.from_numpy(lm.structured_keep(w, amount, axis=axis, method=spec.method, p=p, seed=seed))


def _broadcast(keep: torch.Tensor, shape: torch.Size, axis: int) -> torch.Tensor:
    view = [1] * len(shape)
    view[axis] = keep.numel()
    return keep.reshape(view).expand(shape).clone()


def prune_once(handle: TorchModel, spec: PruneSpec, layers: Sequence[str], amount: float, seed: int, remove: bool) -> None:
    """One mask update of ``layers`` at ``amount`` (the spec's AMOUNT, or a gradual step's)."""
    if spec.structured != "none":
        keeps = {name: _structured_keep(_view(weight_of(handle.module, name)), spec, amount, seed) for name in layers}
        if remove:
            remove_filters(handle, keeps)
            return
        axis = 0 if spec.structured == "filters" else 1
        for name, keep in keeps.items():
            handle.add_mask(name, _broadcast(keep, weight_of(handle.module, name).shape, axis))
        return
    if spec.method in ("l1", "l2", "ln") and spec.nm is None:
        groups = [list(layers)] if spec.scope == "global" else [[name] for name in layers]
        for group in groups:
            global_magnitude_prune(handle, group, amount)
        return
    if spec.method == "random":
        weights = [_view(weight_of(handle.module, n)) for n in layers]
        keeps = lm.random_keep_masks(weights, amount, seed, per_layer=spec.scope == "layer")
        for name, keep in zip(layers, keeps):
            handle.add_mask(name, torch.from_numpy(keep))
        return
    for name in layers:
        w = _view(weight_of(handle.module, name))
        if spec.nm is not None:
            keep = lm.nm_keep_mask(w, spec.nm.n, spec.nm.m)
        else:
            keep = lm.threshold_keep_mask(w, amount)
        handle.add_mask(name, torch.from_numpy(keep))


def _in_model_order(handle: TorchModel, layers: Sequence[str]) -> list[str]:
    chosen = set(layers)
    return [name for name, _ in weighted_layers(handle.module) if name in chosen]


def prune(handle: TorchModel, spec: PruneSpec, layers: Sequence[str], ctx: StepContext) -> TorchModel:
    """The ``prune`` handler: one-shot, or gradual while training."""
    layers = _in_model_order(handle, layers)
    seed = ctx.step_seed()
    if spec.schedule == "oneshot":
        prune_once(handle, spec, layers, spec.amount if spec.amount is not None else 0.0, seed, spec.remove)
        return handle
    if spec.remove:
        plan_removal(handle, layers)  # fail before training, not after
    end = spec.final if spec.final is not None else spec.epochs
    per_epoch = steps_per_epoch(len(ctx.data.train_x), spec.batch)
    reached = False

    def after_step(t: int) -> None:
        nonlocal reached
        epoch = t / per_epoch
        if reached or epoch < spec.start or (t % spec.frequency and epoch < end):
            return
        prune_once(handle, spec, layers, lm.gradual_sparsity(epoch, spec.amount, spec.start, end), seed, False)
        reached = epoch >= end

    fit(handle, spec, ctx, op="prune", after_step=after_step)
    prune_once(handle, spec, layers, spec.amount, seed, spec.remove)
    return handle
