"""``remove=true``: cut pruned filters out of a Keras model per dependency group (the groups of
:mod:`.graph`, the channels from :mod:`lwdsl.semantics.groups`, as on torch), slicing every
member in the Keras layout (Flatten-fed Dense rows ``s * C + c``) and rebuilding the model from
its config at the smaller widths; docs/semantics.md ("Pruning", TensorFlow backend)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from lwdsl.backend import StepContext
from lwdsl.errors import LwdslError
from lwdsl.semantics.groups import AXIS, Group, axis_keeps, group_keep, select_groups
from lwdsl.semantics.layout import flatten_rows
from lwdsl.semantics.pruning import MaskRule

from .graph import find_groups
from .handle import KerasHandle
from .layers import _classes, flatten_source

__all__ = ["plan_removal", "remove_filters", "resize_to_state"]

_SPECIAL = {"DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D", "Conv2DTranspose", "Conv1DTranspose", "Conv3DTranspose"}


def _shrinkable(layer: Any) -> bool:
    classes = _classes(layer)
    return ("Conv" in classes or "Dense" in classes) and not classes & _SPECIAL


def _new_config(model: Any, widths: dict[str, int]) -> dict:
    config = model.get_config()
    for entry in config["layers"]:
        entry.pop("build_config", None)  # Keras 3 builds each layer at its saved input shape: built when called instead
        cfg = entry["config"]
        if cfg.get("name") in widths:
            cfg["filters" if "filters" in cfg else "units"] = widths[cfg["name"]]
    return config


def plan_removal(handle: KerasHandle, names: Sequence[str]) -> list[Group]:
    """The dependency groups that removing filters of ``names`` prunes, checked.

    Raises:
        LwdslError: naming the first layer whose filters cannot be removed, and why.
    """
    order = {v.name: i for i, v in enumerate(handle.views())}
    return select_groups(find_groups(handle.model, order), names)


def _short(var: Any) -> str:
    return var.name.split("/")[-1].split(":")[0]


def _depthwise(layer: Any) -> bool:
    return "DepthwiseConv2D" in _classes(layer)  # its kernel (kh, kw, c, m) is named "kernel" in Keras 3


def _axis_size(layer: Any, axis: int) -> int:
    arrays = {_short(w): w for w in layer.weights}
    if _depthwise(layer):
        return int(arrays["kernel"].shape[2])
    if "kernel" in arrays:
        kernel = arrays["kernel"]
        return int(kernel.shape[-1] if axis == 0 else int(np.prod(kernel.shape[:-1])) if "Dense" in _classes(layer) else kernel.shape[-2])
    return int(layer.weights[-1].shape[0])  # a norm: moving_variance


def _slice(layer: Any, name: str, a: np.ndarray, out: Optional[np.ndarray], inp: Optional[np.ndarray]) -> np.ndarray:
    """Array ``name`` of ``layer`` (or its mask, named like its kernel) with the kept outputs
    ``out`` and inputs ``inp`` (canonical indices)."""
    dense = "Dense" in _classes(layer)
    if name == "kernel" and _depthwise(layer):
        return a[:, :, out, :] if out is not None else a
    if name == "kernel":
        if inp is not None:
            a = a[flatten_rows(inp, a.shape[0], flatten_source(layer)), :] if dense else a[..., inp, :]
        return a[..., out] if out is not None else a
    return a[out] if out is not None and a.ndim == 1 else a  # bias, norm vectors


def remove_filters(handle: KerasHandle, rule: MaskRule, names: Sequence[str], ctx: Optional[StepContext] = None) -> KerasHandle:
    """A new handle where every dependency group ``names`` produce lost the filters ``rule``
    prunes (scored and chosen by :mod:`lwdsl.semantics.groups` on the canonical weights).

    Raises:
        LwdslError: a group that cannot lose filters (see :func:`plan_removal`), would lose all
            of them, or a model that cannot be rebuilt from its config.
    """
    model = handle.model
    layers = {layer.name: layer for layer in model.layers}
    views = handle.view_map()
    chosen = plan_removal(handle, names)
    keeps = [group_keep(g, lambda n: views[n].weight.canonical(), rule.amount, rule.method, rule.p, rule.seed) for g in chosen]
    sizes = {(m.layer, AXIS[m.role]): _axis_size(layers[m.layer], AXIS[m.role]) for g in chosen for m in g.members}
    kept = axis_keeps(chosen, keeps, sizes)
    widths = {name: len(idx) for (name, axis), idx in kept.items() if axis == 0 and _shrinkable(layers[name])}
    try:
        new = type(model).from_config(_new_config(model, widths))
    except Exception as exc:  # custom layers without get_config, ...
        raise LwdslError(f"cannot rebuild model '{model.name}' with fewer filters: {exc}") from None
    new_masks = {}
    for layer in new.layers:
        old = layers[layer.name]
        out, inp = kept.get((layer.name, 0)), kept.get((layer.name, 1))
        arrays = {_short(w): a for w, a in zip(old.weights, old.get_weights())}
        if arrays:
            layer.set_weights([_slice(old, _short(w), arrays[_short(w)], out, inp) for w in layer.weights])
        mask = handle.masks.get(layer.name)
        if mask is not None:
            new_masks[layer.name] = np.ascontiguousarray(_slice(old, "kernel", mask, out, inp))
    if ctx is not None:
        ctx.notes["groups"] = [f"{g.name}: {g.channels} -> {int(k.sum())} channels" for g, k in zip(chosen, keeps)]
    return KerasHandle(new, new_masks, ref=handle.ref)


def resize_to_state(model: Any, state: dict[str, np.ndarray]) -> Any:
    """``model``, or a copy rebuilt at the output widths a canonical state's tensors have (a
    state whose filters were removed loads into a full-width model); weights are not copied."""
    widths = {}
    for layer in model.layers:
        weight = state.get(f"{layer.name}.weight")
        if weight is None or not _shrinkable(layer) or np.ndim(weight) != len(layer.kernel.shape):
            continue
        if int(np.shape(weight)[0]) != int(layer.kernel.shape[-1]):
            widths[layer.name] = int(np.shape(weight)[0])
    if not widths:
        return model
    try:
        return type(model).from_config(_new_config(model, widths))
    except Exception as exc:  # widths that do not fit together
        raise LwdslError(f"the weights' widths ({widths}) do not fit model '{model.name}': {exc}") from None
