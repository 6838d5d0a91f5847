"""Dependency groups of a Keras 3 functional model: walks its layers in graph order (every call
of a shared layer, :func:`.layers.model_nodes`) and tells
:class:`lwdsl.semantics.groups.GraphBuilder` what each does to the channel axis (the last), by
the torch backend's rules (docs/semantics.md, "Pruning": which operations keep, join, put side
by side or fix channels)."""

from __future__ import annotations

from math import prod
from typing import Any, Optional

from lwdsl.semantics.groups import Channels, GraphBuilder, Group

from .layers import graph_model, model_nodes

__all__ = ["find_groups", "ZERO_ACTIVATIONS"]

#: activations with f(0) = 0 applied per element: a zeroed channel stays zero
ZERO_ACTIVATIONS = {"linear", "relu", "relu6", "elu", "selu", "gelu", "swish", "silu", "tanh", "hard_swish", "hard_silu", "leaky_relu"}
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


def _activation(layer: Any) -> Optional[str]:
    act = getattr(layer, "activation", None)
    name = getattr(act, "__name__", None) if act is not None else "linear"
    return name


def _last_axis(axis: Any, ndim: int) -> bool:
    """``axis`` (an int in Keras 3, a one-element list in Keras 2) is the last of ``ndim``."""
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return len(axes) == 1 and int(axes[0]) % ndim == ndim - 1


def _shape(t: Any) -> tuple:
    return tuple(t.shape)


def _flatten(obj: Any) -> list[Any]:
    import tensorflow as tf

    return tf.nest.flatten(obj)


class _Walk:
    def __init__(self, model: Any, order: dict[str, int]) -> None:
        self.model = model
        self.b = GraphBuilder(order)
        self.env: dict[int, Channels] = {}

    def get(self, t: Any) -> Optional[Channels]:
        return self.env.get(id(t))

    def fresh(self, t: Any, reason: Optional[str]) -> Channels:
        shape = _shape(t)
        ch = self.b.space(int(shape[-1]) if len(shape) >= 2 else 1, reason)
        self.env[id(t)] = ch
        return ch

    def unknown(self, layer: Any, ins: list, outs: list, why: Optional[str] = None) -> None:
        reason = why or f"its channels reach '{layer.name}' ({type(layer).__name__}), which needs all its channels"
        for t in ins:
            if self.get(t) is not None:
                self.b.refuse(self.get(t), reason)
        for t in outs:
            self.fresh(t, f"they come out of '{layer.name}' ({type(layer).__name__}), which lwdsl cannot follow")

    def run(self) -> list[Group]:
        graph = graph_model(self.model)
        for t in graph.inputs:
            self.fresh(t, "they are the model's input")
        for layer in graph.layers:
            if _kind(layer) == "InputLayer":
                continue
            for node in model_nodes(graph, layer):
                ins, outs = _flatten(node.input_tensors), _flatten(node.output_tensors)
                if any(self.get(t) is None for t in ins):
                    self.unknown(layer, ins, outs)
                else:
                    self.layer(layer, ins, outs)
        for t in graph.outputs:
            if self.get(t) is not None:
                self.b.refuse(self.get(t), "it produces the model's outputs (a classifier's outputs are its classes)")
        return self.b.groups()

    def layer(self, layer: Any, ins: list, outs: list) -> None:
        b, kind, name = self.b, _kind(layer), layer.name
        ch = self.get(ins[0])
        single = len(ins) == 1 and len(outs) == 1
        act = _activation(layer) if kind in _CONV | {"Dense", "DepthwiseConv2D", "Activation"} else "linear"
        mixes = None if act in ZERO_ACTIVATIONS else f"'{name}' ends in activation '{act}', which does not keep 0 at 0"
        if mixes and kind in ("DepthwiseConv2D", "Activation"):
            self.unknown(layer, ins, outs, f"its channels reach {mixes}")
            return
        if kind in _CONV and single and getattr(layer, "groups", 1) == 1 and ch.block == 1:
            b.member(ch, name, "in")
            self.env[id(outs[0])] = out = b.space(int(layer.filters), mixes)
            b.member(out, name, "out")
        elif kind in _CONV and single:
            why = f"'{name}' is a grouped convolution ({layer.groups} groups), whose channels lwdsl does not remove"
            self.unknown(layer, ins, outs, f"its channels reach {why}")
            self.env[id(outs[0])] = out = b.space(int(layer.filters), why)
            b.member(out, name, "out")
        elif kind == "DepthwiseConv2D" and single and int(layer.depth_multiplier) == 1 and ch.block == 1:
            b.member(ch, name, "depthwise")
            self.env[id(outs[0])] = ch
        elif kind == "Dense" and single:
            if len(_shape(ins[0])) != 2:
                self.unknown(layer, ins, outs, f"its channels reach '{name}', a Dense layer on the last axis of a feature map")
                return
            b.member(ch, name, "in")
            self.env[id(outs[0])] = out = b.space(int(layer.units), mixes)
            b.member(out, name, "out")
        elif kind == "BatchNormalization" and single and ch.block == 1 and _last_axis(layer.axis, len(_shape(ins[0]))):
            b.member(ch, name, "norm")
            self.env[id(outs[0])] = ch
        elif (kind in _PASS or kind == "Activation") and single:
            self.env[id(outs[0])] = ch
        elif kind == "Flatten" and single:
            shape = _shape(ins[0])
            if getattr(layer, "data_format", "channels_last") != "channels_last" or None in shape[1:]:
                self.unknown(layer, ins, outs)
                return
            self.env[id(outs[0])] = Channels(ch.ids, ch.block * prod(int(d) for d in shape[1:-1]))
        elif kind in _JOIN and len(outs) == 1:
            shape = _shape(outs[0])
            same = [t for t in ins if len(_shape(t)) == len(shape) and _shape(t)[-1] == shape[-1]]
            if not same:
                self.unknown(layer, ins, outs)
                return
            for t in same[1:]:
                b.same(self.get(same[0]), self.get(t), _JOIN[kind])
            self.env[id(outs[0])] = self.get(same[0])
        elif kind == "Concatenate" and len(outs) == 1:
            ndim = len(_shape(outs[0]))
            if layer.axis % ndim == ndim - 1:
                self.env[id(outs[0])] = b.concat([self.get(t) for t in ins])
            else:
                for t in ins[1:]:
                    b.same(self.get(ins[0]), self.get(t), "a concatenation along another axis")
                self.env[id(outs[0])] = self.get(ins[0])
        else:
            self.unknown(layer, ins, outs)


def find_groups(model: Any, order: dict[str, int]) -> list[Group]:
    """The dependency groups of a functional or Sequential keras ``model``; ``order`` ranks
    layer names in model order (see :mod:`lwdsl.semantics.groups`)."""
    return _Walk(model, order).run()
