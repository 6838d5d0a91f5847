"""``remove=true``: cut pruned filters out of a Keras model per dependency group (the groups of
:mod:`.graph`, the flow and the channels the core's, :mod:`lwdsl.backend.prune`), slicing every
member in the Keras layout (Flatten-fed Dense rows ``s * C + c``) and rebuilding the model from
its config at the smaller widths; docs/semantics.md ("Pruning", TensorFlow backend)."""

from __future__ import annotations

import dataclasses

from typing import Any, Optional, Sequence

import numpy as np

from lwdsl.errors import LwdslError
from lwdsl.semantics.groups import Group
from lwdsl.semantics.layout import flatten_rows

from .graph import find_groups
from .handle import KerasHandle
from .layers import _classes, flatten_source

__all__ = ["FilterRemoval", "resize_to_state"]

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


def _short(var: Any) -> str:
    return var.name.split("/")[-1].split(":")[0]


def _depthwise(layer: Any) -> bool:
    return "DepthwiseConv2D" in _classes(layer)  # its kernel (kh, kw, c, m) is named "kernel" in Keras 3


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


class FilterRemoval:
    """The filter-removal primitives of :class:`.prune.KerasPruneParts` (the flow is the core's
    :meth:`lwdsl.backend.prune.PruneParts.remove_filters`): the groups of the functional graph,
    the model rebuilt from its config at the smaller widths."""

    def groups(self, handle: KerasHandle) -> list[Group]:
        return find_groups(handle.model, {v.name: i for i, v in enumerate(handle.views())})

    def cut_channels(self, handle: KerasHandle, kept: dict[tuple[str, int], np.ndarray], groups: Sequence[Group]) -> KerasHandle:
        """A new handle (the model rebuilt from its config).

        Raises:
            LwdslError: a model that cannot be rebuilt from its config.
        """
        model = handle.model
        layers = {layer.name: layer for layer in model.layers}
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
        return dataclasses.replace(handle, model=new, masks=new_masks)  # its record, folded norms, config kept


def resize_to_state(model: Any, shapes: dict[str, tuple[int, ...]]) -> Any:
    """``model``, or a copy rebuilt from its config at the output widths of the canonical weight
    ``shapes`` (:func:`lwdsl.backend.load.narrowed`); weights are not copied. Raises what Keras
    raises for widths that do not fit together."""
    widths = {layer.name: shapes[layer.name][0] for layer in model.layers
              if layer.name in shapes and _shrinkable(layer) and shapes[layer.name][0] != int(layer.kernel.shape[-1])}
    return type(model).from_config(_new_config(model, widths)) if widths else model
