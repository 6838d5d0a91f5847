"""Fold each batch norm into the conv/dense layer before it, ahead of quantization: the flow is
the core's (:mod:`lwdsl.backend.fold`, :mod:`lwdsl.semantics.fold`); here the pairs from the
Keras graph, and the model cloned with the norm as a linear ``Activation`` of its name
(docs/semantics.md, "Quantization: batch-norm folding, artifacts, latency")."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lwdsl.backend import StepContext
from lwdsl.backend import fold as flow
from lwdsl.semantics.fold import fold_batchnorm

from ._tf import keras
from .handle import KerasHandle
from .layers import _classes, _inbound, input_shape, iter_layers

__all__ = ["fold_batchnorms", "drop_folded"]


def _foldable_source(layer: Any) -> bool:
    classes = _classes(layer)
    if "Transpose" in type(layer).__name__ or classes & {"SeparableConv1D", "SeparableConv2D"}:
        return False
    return bool(classes & {"Conv", "Dense"})


def _pairs(model: Any) -> list[tuple[str, str, str]]:
    """(layer, norm, why-not or "") for every batch norm whose input is a conv/dense layer."""
    found = []
    for layer in iter_layers(model):
        if "BatchNormalization" not in _classes(layer):
            continue
        src = _inbound(layer)
        if src is None or not _foldable_source(src):
            continue
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        why = ""
        if axis is None or int(axis) % len(input_shape(layer)) != len(input_shape(layer)) - 1:
            why = f"it normalizes axis {layer.axis}, not the channels"
        elif len(src._outbound_nodes) != 1 or len(layer._inbound_nodes) != 1:
            why = f"'{src.name}' output also feeds other ops"
        found.append((src.name, layer.name, why))
    return found


def fold_batchnorms(handle: KerasHandle, layers: Sequence[str], ctx: StepContext) -> dict[str, str]:
    """Fold the norms after ``layers`` into them (the core's :func:`lwdsl.backend.fold.foldable`
    pairs, :func:`lwdsl.semantics.fold.fold_batchnorm`'s numbers; ``handle.model`` is replaced
    by the folded clone); returns layer -> norm folded."""
    model = handle.model
    nested = "the model nests other models" if any(hasattr(layer, "layers") for layer in model.layers) else ""
    todo = flow.foldable(lambda: [(layer, norm, why or nested) for layer, norm, why in _pairs(model)], layers, ctx)
    if not todo:
        return {}
    views, folded = handle.view_map(), {}
    for layer, norm in todo.items():
        view, bn = views[layer], model.get_layer(norm)
        get = {w.name.split("/")[-1].split(":")[0]: w.numpy() for w in bn.weights}
        bias = next((t for t in view.tensors if t.name == f"{layer}.bias"), None)
        wf, bf = fold_batchnorm(view.weight.canonical(), None if bias is None else bias.canonical(), get.get("gamma"),
                                get.get("beta"), get["moving_mean"], get["moving_variance"], bn.epsilon)
        folded[layer] = (view.weight.from_canon(wf), bf)
    handle.model = _clone_folded(model, todo, folded)
    return flow.record_folded(handle, todo, ctx)


def _rebuild(model: Any, todo: dict[str, str]) -> Any:
    """A clone of ``model`` (fresh weights) with each norm of ``todo`` (layer -> norm) a linear
    ``Activation`` of the same name and each layer given a bias."""
    norms = set(todo.values())

    def clone(layer: Any) -> Any:
        if layer.name in norms:
            return keras.layers.Activation("linear", name=layer.name)
        config = layer.get_config()
        if layer.name in todo:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:  # the norm's call kwargs (mask=, training=) are not Activation's
        return layer(*args) if layer.name in norms else layer(*args, **kwargs)

    return keras.models.clone_model(model, clone_function=clone, call_function=call)


def drop_folded(model: Any, norms: Sequence[str]) -> tuple[Any, dict[str, str]]:
    """``model`` in the shape of a folded one (see :func:`fold_batchnorms`), for loading a state
    saved after folding (its ``<norm>.folded`` markers); the weights not replaced are copied.
    Returns the new model and layer -> norm.

    Raises:
        LwdslError: a named norm is not in the model or follows no conv/dense layer.
    """
    todo = flow.folded_pairs(_pairs(model), norms, "dense")
    return _clone_folded(model, todo, {}), todo


def _clone_folded(model: Any, todo: dict[str, str], folded: dict[str, tuple[np.ndarray, np.ndarray]]) -> Any:
    """:func:`_rebuild`'s clone with the weights: ``folded`` (layer -> Keras kernel, bias) where
    given, the model's own for every layer outside ``todo`` (a layer of ``todo`` not in
    ``folded`` keeps its fresh weights, for a state to load)."""
    new = _rebuild(model, todo)
    for layer in new.layers:
        if layer.name in todo.values() or not layer.weights:  # Keras 3 names a cloned input layer after its tensor
            continue
        if layer.name in folded:
            kernel, bias = folded[layer.name]
            layer.set_weights([np.ascontiguousarray(kernel, np.float32), bias])
        elif layer.name not in todo:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return new
