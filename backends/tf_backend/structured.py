"""``remove=true``: cut pruned filters (output channels, neurons) out of the model.

For every pruned layer the filters it keeps are known (a keep vector over its outputs). The
layer's kernel and bias lose the pruned outputs; its consumer loses the matching inputs:

- conv -> (pooling, activations, dropout, padding) -> conv: the consumer's input channels;
- conv -> BatchNormalization -> ...: the norm's four vectors, then the consumer as above;
- conv -> Flatten -> Dense: the Dense rows of the removed channels at every spatial position
  (Keras flattens (H, W, C), so the rows are taken where ``row % C`` is kept);
- dense -> dense: the consumer's input rows.

The model is rebuilt from its config with the smaller widths (``filters``/``units``), so the
graph stays what it was; weights and masks are copied over, sliced. An output that feeds a
merge (Add, Concatenate), a depthwise or transposed convolution, or the model's output cannot
be shrunk on its own: that is an error naming the layers.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from lwdsl.errors import LwdslError

from .handle import KerasHandle

__all__ = ["plan_removal", "remove_filters", "resize_to_state"]

_PASS = {
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "ReLU", "Activation", "LeakyReLU", "ELU", "Dropout", "SpatialDropout2D", "ZeroPadding2D", "ZeroPadding1D",
}
_GLOBAL = {"GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D"}
_SPECIAL = {"DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D", "Conv2DTranspose", "Conv1DTranspose", "Conv3DTranspose"}


def _classes(layer: Any) -> set[str]:
    return {c.__name__ for c in type(layer).__mro__}


def _shrinkable(layer: Any) -> bool:
    classes = _classes(layer)
    return ("Conv" in classes or "Dense" in classes) and not classes & _SPECIAL


def _consumers(model: Any, layer: Any) -> tuple[list[tuple[Any, Optional[int]]], list[Any]]:
    """Layers fed by ``layer``'s outputs: [(weighted consumer, channels per row or None)], norms."""
    outputs = {id(t) for t in model.outputs}
    consumers, norms = [], []
    frontier: list[tuple[Any, Optional[int]]] = [(layer, None)]
    while frontier:
        cur, flat = frontier.pop()
        if id(cur.output) in outputs:
            raise LwdslError(
                f"cannot remove filters of '{layer.name}': its outputs are the model's outputs (through '{cur.name}')",
                hint="leave the last layer out of the selector (e.g. `except fc3`)",
            )
        nodes = [n for n in cur.outbound_nodes if n.outbound_layer in model.layers or n.outbound_layer is cur]
        for node in nodes:
            nxt = node.outbound_layer
            classes = _classes(nxt)
            if classes & _PASS:
                frontier.append((nxt, flat))
            elif "BatchNormalization" in classes:
                norms.append(nxt)
                frontier.append((nxt, flat))
            elif "Flatten" in classes:
                frontier.append((nxt, int(cur.output.shape[-1])))
            elif classes & _GLOBAL:
                frontier.append((nxt, None))
            elif _shrinkable(nxt):
                consumers.append((nxt, flat))
            else:
                raise LwdslError(
                    f"cannot remove filters of '{layer.name}': its outputs reach '{nxt.name}' ({type(nxt).__name__}), "
                    "which lwdsl cannot shrink to match",
                    hint="prune without remove=true (the filters stay, zeroed), or leave that layer out",
                )
    return consumers, norms


def _slice_in(kernel: np.ndarray, keep: np.ndarray, is_dense: bool, per_row: Optional[int]) -> np.ndarray:
    if not is_dense:
        return kernel[..., keep, :]
    if per_row is None:
        return kernel[keep, :]
    out = kernel.shape[-1]
    return kernel.reshape(-1, per_row, out)[:, keep, :].reshape(-1, out)


def _new_config(model: Any, widths: dict[str, int]) -> dict:
    config = model.get_config()
    for entry in config["layers"]:
        cfg = entry["config"]
        if cfg.get("name") in widths:
            cfg["filters" if "filters" in cfg else "units"] = widths[cfg["name"]]
    return config


def plan_removal(handle: KerasHandle, names: Sequence[str]) -> dict[str, tuple[list[tuple[Any, Optional[int]]], list[Any]]]:
    """For each layer, the layers that shrink with it: (consumers with channels per row, norms).

    Raises:
        LwdslError: naming the first layer whose filters cannot be removed, and why.
    """
    model = handle.model
    layers = {layer.name: layer for layer in model.layers}
    plans = {}
    for name in names:
        layer = layers.get(name)
        if layer is None or not _shrinkable(layer):
            raise LwdslError(
                f"cannot remove filters of '{name}' ({type(layer).__name__}): only plain Conv and Dense layers "
                "of the top-level model have removable filters"
            )
        plans[name] = _consumers(model, layer)
    return plans


def remove_filters(handle: KerasHandle, keep: dict[str, np.ndarray]) -> KerasHandle:
    """A new handle whose layers in ``keep`` have only their kept outputs (keep vectors)."""
    model = handle.model
    layers = {layer.name: layer for layer in model.layers}
    plans = plan_removal(handle, list(keep))
    slice_out = {}
    slice_in: dict[str, tuple[np.ndarray, Optional[int]]] = {}
    slice_norm: dict[str, np.ndarray] = {}
    for name, vec in keep.items():
        if not vec.any():
            raise LwdslError(f"cannot remove filters of '{name}': AMOUNT removes all {vec.size} of them", hint="prune a smaller fraction")
        slice_out[name] = np.flatnonzero(vec)
        consumers, norms = plans[name]
        for consumer, per_row in consumers:
            slice_in[consumer.name] = (np.flatnonzero(vec), per_row)
        for norm in norms:
            slice_norm[norm.name] = np.flatnonzero(vec)
    try:
        new = type(model).from_config(_new_config(model, {n: len(i) for n, i in slice_out.items()}))
    except Exception as exc:  # custom layers without get_config, ...
        raise LwdslError(f"cannot rebuild model '{model.name}' with fewer filters: {exc}") from None
    new_masks = {}
    for layer in new.layers:
        old = layers[layer.name]
        arrays = dict(zip((w.name.split("/")[-1].split(":")[0] for w in old.weights), old.get_weights()))
        mask = handle.masks.get(layer.name)
        is_dense = "Dense" in _classes(old)
        if layer.name in slice_norm:
            arrays = {k: a[slice_norm[layer.name]] for k, a in arrays.items()}
        if layer.name in slice_in:
            idx, per_row = slice_in[layer.name]
            arrays["kernel"] = _slice_in(arrays["kernel"], idx, is_dense, per_row)
            mask = None if mask is None else _slice_in(mask, idx, is_dense, per_row)
        if layer.name in slice_out:
            idx = slice_out[layer.name]
            arrays["kernel"] = arrays["kernel"][..., idx]
            mask = None if mask is None else mask[..., idx]
            if "bias" in arrays:
                arrays["bias"] = arrays["bias"][idx]
        if arrays:
            layer.set_weights([arrays[w.name.split("/")[-1].split(":")[0]] for w in layer.weights])
        if mask is not None:
            new_masks[layer.name] = np.ascontiguousarray(mask)
    return KerasHandle(new, new_masks)


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
