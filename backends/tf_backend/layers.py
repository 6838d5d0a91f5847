"""Keras weights <-> the canonical (PyTorch) state, :meth:`lwdsl.backend.Backend.state`: per
layer in model order, each variable's canonical name and its layout converters (transposed
kernels, depthwise kernels, Flatten-fed Dense rows in PyTorch's order), masks converted by the
same functions; the table is docs/semantics.md's "Canonical weights" (TensorFlow backend)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from lwdsl.backend import LayerInfo, LayerStats, ModelStats
from lwdsl.backend.weights import check_names, check_shapes, pack_canonical
from lwdsl.semantics import layout as L
from lwdsl.semantics.layout import Convert

__all__ = [
    "nhwc",
    "Tensor",
    "LayerView",
    "views",
    "state_of",
    "load_state_into",
    "layer_infos",
    "iter_layers",
    "every_layer",
    "list_layers",
    "canonical_state",
    "model_stats",
]

_NHWC: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def nhwc(x: np.ndarray) -> np.ndarray:
    """NCHW images as contiguous NHWC (cached for the last few arrays converted)."""
    hit = _NHWC.get(id(x))
    if hit is not None and hit[0] is x:
        return hit[1]
    out = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if x.ndim == 4 else x
    if len(_NHWC) >= 4:
        _NHWC.pop(next(iter(_NHWC)))
    _NHWC[id(x)] = (x, out)
    return out

_PASS_THROUGH = {"Dropout", "SpatialDropout2D", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "ActivityRegularization"}
_NORM_NAMES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


@dataclass(frozen=True)
class Tensor:
    """One variable and how it maps to its canonical tensor."""

    name: str  # canonical: "conv1.weight"
    variable: Any  # tf.Variable
    shape: tuple[int, ...]  # canonical shape
    to_canon: Convert
    from_canon: Convert
    is_param: bool = True  # False for running statistics (buffers in PyTorch)

    def canonical(self) -> np.ndarray:
        return np.ascontiguousarray(self.to_canon(self.variable.numpy()))


@dataclass(frozen=True)
class LayerView:
    """A layer with weights: its portable kind, its main weight and all its tensors."""

    layer: Any
    name: str
    kind: str  # conv, linear, embedding, norm, other
    weight: Tensor  # the tensor pruning acts on (the kernel)
    tensors: tuple[Tensor, ...]

    @property
    def params(self) -> int:
        return sum(int(np.prod(t.shape)) for t in self.tensors if t.is_param)


def node_key(layer: Any, index: int) -> str:
    """The key a Keras 3 functional model files its ``index``-th call of ``layer`` under (in
    ``model._nodes``): ``keras.src.ops.function.make_node_key``."""
    return f"{id(layer)}_ib-{index}"


def graph_model(model: Any) -> Any:
    """The functional model holding ``model``'s graph: itself, or a built Sequential's."""
    return getattr(model, "_functional", None) or model


def model_nodes(model: Any, layer: Any) -> list[Any]:
    """The calls (Keras 3 ``Node`` objects) of ``layer`` that belong to ``model``'s graph, in
    order (a layer shared with another model, or wrapped for fake quantization, has more)."""
    keys = getattr(graph_model(model), "_nodes", None) or set()
    return [n for i, n in enumerate(getattr(layer, "_inbound_nodes", ())) if node_key(layer, i) in keys]


def _inbound(layer: Any) -> Any:
    """The one layer feeding ``layer``'s first call (None for several, or none)."""
    nodes = getattr(layer, "_inbound_nodes", None)
    if not nodes:
        return None
    parents = nodes[0].parent_nodes
    return parents[0].operation if len(parents) == 1 else None


def input_shape(layer: Any) -> tuple:
    """The shape of the input of ``layer``'s first call (batch axis first)."""
    return tuple(layer.input.shape)


def flatten_source(layer: Any) -> Optional[tuple[int, ...]]:
    """The (*spatial, C) shape a Flatten turned into this layer's input, if there is one."""
    src = _inbound(layer)
    while src is not None and type(src).__name__ in _PASS_THROUGH:
        src = _inbound(src)
    if src is None or type(src).__name__ != "Flatten":
        return None
    if getattr(src, "data_format", "channels_last") != "channels_last":
        return None
    dims = input_shape(src)[1:]
    if len(dims) < 2 or any(d is None for d in dims):
        return None
    return tuple(int(d) for d in dims)


def _short(var: Any) -> str:
    return var.name.split("/")[-1].split(":")[0]


#: Keras 3's convolution base classes; every one counts as a "Conv" (Keras 2's common base)
_CONV_BASES = {"BaseConv", "BaseConvTranspose", "BaseDepthwiseConv", "BaseSeparableConv"}


def _classes(layer: Any) -> set[str]:
    """The class names of ``layer``'s type and its bases, with ``"Conv"`` for any convolution."""
    names = {c.__name__ for c in type(layer).__mro__}
    if names & _CONV_BASES:
        names.add("Conv")
    return names


def _view(layer: Any) -> Optional[LayerView]:
    variables = list(layer.weights)
    if not variables:
        return None
    classes = _classes(layer)
    by_short = {_short(v): v for v in variables}
    tensors: list[Tensor] = []
    name = layer.name
    if classes & {"BatchNormalization", "LayerNormalization", "GroupNormalization"}:
        kind = "norm"
        for short in ("gamma", "beta", "moving_mean", "moving_variance"):
            if short in by_short:
                v = by_short.pop(short)
                tensors.append(Tensor(f"{name}.{_NORM_NAMES[short]}", v, *L.identity(v.shape), short.startswith("gamma") or short == "beta"))
    else:
        if "DepthwiseConv2D" in classes:  # Keras 3 names its kernel "kernel"
            kind, key, layout = "conv", "kernel", L.depthwise
        elif "SeparableConv2D" in classes or "SeparableConv1D" in classes:
            kind, key, layout = "conv", "pointwise_kernel", L.transposed
            v = by_short.pop("depthwise_kernel")
            tensors.append(Tensor(f"{name}.depthwise_weight", v, *L.depthwise(v.shape)))
        elif "Conv" in classes:  # transposed convolutions are "other", as in PyTorch's kinds
            kind, key, layout = ("other" if "Transpose" in type(layer).__name__ else "conv"), "kernel", L.transposed
        elif "Dense" in classes:
            source = flatten_source(layer)
            kind, key, layout = "linear", "kernel", (lambda shape: L.dense(shape, source))
        elif "Embedding" in classes:
            kind, key, layout = "embedding", "embeddings", L.identity
        elif type(layer).__name__.endswith("RMSNorm"):  # Llama's (hf.py): a norm, as torch's kinds say of LlamaRMSNorm
            kind, key, layout = "norm", "weight", L.identity
        else:
            kind, key, layout = "other", None, None
        if key is not None and key in by_short:
            v = by_short.pop(key)
            tensors.insert(0, Tensor(f"{name}.weight", v, *layout(v.shape)))
        if "bias" in by_short:
            v = by_short.pop("bias")
            tensors.append(Tensor(f"{name}.bias", v, *L.identity(v.shape)))
    for short, v in by_short.items():
        tensors.append(Tensor(f"{name}.{short}", v, *L.identity(v.shape), v.trainable))
    main = next((t for t in tensors if t.name == f"{name}.weight"), tensors[0])
    return LayerView(layer, name, kind, main, tuple(tensors))


def iter_layers(model: Any):
    """Every leaf layer of ``model`` in model order (nested models are entered)."""
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.__class__.__name__ in ("Functional", "Sequential", "Model"):
            yield from iter_layers(layer)
        else:
            yield layer


def every_layer(model: Any) -> list[Any]:
    """``model`` and every layer inside it, nested models and wrapped layers included (Keras's
    own walk of its layer tree, ``_flatten_layers``), each once."""
    return list(model._flatten_layers(include_self=True, recursive=True))


def views(model: Any) -> list[LayerView]:
    """The layers with weights, in model order."""
    out = []
    for layer in iter_layers(model):
        view = _view(layer)
        if view is not None:
            out.append(view)
    return out


def layer_infos(model: Any) -> list[LayerInfo]:
    return [LayerInfo(v.name, v.kind, v.weight.shape, v.params) for v in views(model)]


def state_of(model: Any) -> dict[str, np.ndarray]:
    """The canonical state of ``model`` (float32 numpy, PyTorch layout and names)."""
    return {t.name: t.canonical() for v in views(model) for t in v.tensors}


_IGNORED = (".num_batches_tracked",)


def load_state_into(model: Any, state: dict[str, np.ndarray], where: str = "the weights do not fit the model") -> None:
    """Assign a canonical state to ``model``; every tensor must be there with its shape.

    Raises:
        UsageError: ``where``, the first missing, unexpected or mis-shaped tensor
            (:func:`lwdsl.backend.weights.check_names`, the torch backend's words).
    """
    tensors = {t.name: t for v in views(model) for t in v.tensors}
    given = {k: v for k, v in state.items() if not k.endswith(_IGNORED)}
    check_names(tensors, given, where)
    check_shapes({k: t.shape for k, t in tensors.items()}, {k: tuple(np.shape(v)) for k, v in given.items()}, where)
    for name, t in tensors.items():
        t.variable.assign(np.asarray(t.from_canon(np.asarray(given[name], dtype=np.float32)), dtype=np.dtype(t.variable.dtype)))


def list_layers(handle: Any) -> list[LayerInfo]:
    """Layers with weights of a handle's model, in model order (canonical shapes)."""
    return layer_infos(handle.model)


def canonical_state(handle: Any) -> dict[str, np.ndarray]:
    """The canonical state of a handle's model (masks are applied to its weights already);
    quantized layers' weights as codes (packed below 8 bits, in the N:M layout where their
    masks are N:M), scales and bits, and statically
    quantized layers' input scale and zero point, and fp16/bf16 layers' weights as their 16 bits
    (:func:`lwdsl.semantics.quant.pack_state`)."""
    quant, masks = handle.quant, handle.masks
    found = handle.view_map() if any(k in quant for k in masks) else {}
    keep = {k: np.ascontiguousarray(found[k].weight.to_canon(m)).astype(bool) for k, m in masks.items() if k in quant}  # N:M layout
    return pack_canonical(state_of(handle.model), handle.folded, quant, handle.act, handle.qstate.casts, keep)


def model_stats(handle: Any) -> ModelStats:
    """Parameter counts and per-layer weight sparsity."""
    params = nonzero = 0
    layers = []
    for v in views(handle.model):
        for t in v.tensors:
            if t.is_param:
                arr = t.variable.numpy()
                params += arr.size
                nonzero += int(np.count_nonzero(arr))
        w = v.weight.variable.numpy()
        layers.append(LayerStats(v.name, v.kind, int(w.size), int(w.size - np.count_nonzero(w))))
    return ModelStats(params, nonzero, tuple(layers))


def output_positions(handle: Any, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Output positions of every conv and linear layer (from the functional graph's output
    shapes, channels last: everything between the batch and the channel axis)."""
    found: dict[str, int] = {}
    for v in views(handle.model):
        if v.kind not in ("conv", "linear"):
            continue
        dims = [int(d) for d in tuple(v.layer.output.shape)[1:-1] if d is not None]
        found[v.name] = int(np.prod(dims)) if dims else 1
    return found
