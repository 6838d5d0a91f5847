"""Dependency groups of a Keras 3 functional model: its layers in graph order (every call of a
shared layer, :func:`.layers.model_nodes`) as the ops of the core's channel walk
(:mod:`lwdsl.backend.channel_walk`), shapes channels-first: which layer classes are which."""

from __future__ import annotations

from typing import Any, Iterator

from lwdsl.backend.channel_walk import Op, walk
from lwdsl.semantics.groups import Group

from .layers import graph_model, model_nodes

__all__ = ["find_groups"]

_PASS = {
    "ReLU", "LeakyReLU", "ELU", "PReLU", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianDropout", "ActivityRegularization", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "Cropping1D", "Cropping2D", "Cropping3D",
}  # fmt: skip
_JOIN = {
    "Add": "a residual addition", "Subtract": "a subtraction", "Multiply": "a multiplication",
    "Average": "an average", "Maximum": "a maximum", "Minimum": "a minimum",
}  # fmt: skip
_CONV = {"Conv1D", "Conv2D", "Conv3D"}


def _kind(layer: Any) -> str:
    names = [c.__name__ for c in type(layer).__mro__]
    for name in names:
        if name in _PASS or name in _JOIN or name in _CONV or name in (
            "DepthwiseConv2D", "Dense", "BatchNormalization", "Flatten", "Concatenate", "Activation", "InputLayer",
        ):  # fmt: skip
            return name
    return names[0]


def _activation(layer: Any) -> str:
    act = getattr(layer, "activation", None)
    return str(getattr(act, "__name__", None)) if act is not None else "linear"


def _last_axis(axis: Any, ndim: int) -> bool:
    """``axis`` (an int in Keras 3, a one-element list in Keras 2) is the last of ``ndim``."""
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return len(axes) == 1 and int(axes[0]) % ndim == ndim - 1


def _canonical(t: Any) -> tuple:
    """``t``'s shape with the channels (Keras's last axis) on axis 1."""
    shape = tuple(t.shape)
    return (shape[0], shape[-1], *shape[1:-1]) if len(shape) >= 2 else shape


def _ops(model: Any) -> Iterator[Op]:
    """``model``'s functional graph as the core's walk sees it: every call of every layer."""
    import tensorflow as tf

    graph = graph_model(model)
    yield Op("input", outs=tuple(map(id, graph.inputs)), out_shapes=tuple(map(_canonical, graph.inputs)))
    for layer in graph.layers:
        if _kind(layer) != "InputLayer":
            for node in model_nodes(graph, layer):
                yield _op(layer, tf.nest.flatten(node.input_tensors), tf.nest.flatten(node.output_tensors))
    yield Op("output", ins=tuple(map(id, graph.outputs)), in_shapes=tuple(map(_canonical, graph.outputs)))


def _op(layer: Any, ins: list, outs: list) -> Op:
    kind, name = _kind(layer), layer.name
    base = dict(name=name, label=f"'{name}' ({type(layer).__name__})", ins=tuple(map(id, ins)), outs=tuple(map(id, outs)))
    base.update(in_shapes=tuple(map(_canonical, ins)), out_shapes=tuple(map(_canonical, outs)))
    several = kind in _JOIN or kind == "Concatenate"  # the kinds that read several inputs
    if len(outs) != 1 or (len(ins) != 1 and not several):
        return Op("unknown", **base)
    if kind in _CONV:
        groups, act = int(getattr(layer, "groups", 1)), _activation(layer)
        return Op("conv" if groups == 1 else "grouped_conv", width=int(layer.filters), groups=groups, activation=act, **base)
    if kind == "DepthwiseConv2D":
        return Op("depthwise", multiplier=int(layer.depth_multiplier), activation=_activation(layer), **base)
    if kind == "Dense":
        return Op("linear", width=int(layer.units), activation=_activation(layer), **base)
    if kind == "BatchNormalization":
        return Op("norm", channel_axis=_last_axis(layer.axis, len(ins[0].shape)), **base)
    if kind in _PASS or kind == "Activation":
        return Op("pass", activation=_activation(layer) if kind == "Activation" else None, **base)
    if kind == "Flatten":
        plain = getattr(layer, "data_format", "channels_last") == "channels_last" and None not in tuple(ins[0].shape)[1:]
        return Op("flatten" if plain else "unknown", **base)
    if kind in _JOIN:
        return Op("join", via=_JOIN[kind], **base)
    if kind == "Concatenate":
        ndim = len(outs[0].shape)
        return Op("concat", channel_axis=layer.axis % ndim == ndim - 1, **base)
    return Op("unknown", **base)


def find_groups(model: Any, order: dict[str, int]) -> list[Group]:
    """The dependency groups of a functional or Sequential keras ``model``; ``order`` ranks
    layer names in model order (see :mod:`lwdsl.semantics.groups`)."""
    return walk(_ops(model), order)
