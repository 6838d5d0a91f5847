"""The model handle the runner passes around: a Keras model, its pruning masks and the core's
fields of every handle (:class:`lwdsl.backend.handle.ModelHandle`: losses, folded norms, the
quantization record)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from lwdsl.backend.calibrated import WeightParts
from lwdsl.backend.handle import ModelHandle
from lwdsl.errors import LwdslError

from ._tf import keras, tf
from .layers import LayerView, nhwc, views

__all__ = ["KerasHandle", "KerasWeights", "layer_inputs"]

#: Per Keras model, its layer-input probes (layer names -> a compiled probe; the last 4 kept),
#: dropped with the model.
_PROBES: "weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], Any]]" = weakref.WeakKeyDictionary()


@dataclass
class KerasHandle(ModelHandle):
    """A Keras model, its keep masks (layer name -> bool array in the Keras layout of the
    weight; masked weights are +0.0 at all times, no wrapper layers) and, as the torch handle,
    the quantization record (codes and scales in the canonical layout, the variable holding
    ``codes * scale``; static layers' input quantization; modes, casts, settings and the
    calibration reference for exporters); :meth:`finalize` drops the masks only."""

    model: Any
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    ref: str = "the model"  # the name it was built from (lenet5, keras:MobileNetV2, a file)
    hf_config: Optional[dict[str, Any]] = None  # a Hugging Face folder's config.json (hf_folder.py), for export hf

    def views(self) -> list[LayerView]:
        return views(self.model)

    def view_map(self) -> dict[str, LayerView]:
        return {v.name: v for v in views(self.model)}

    def add_mask(self, view: LayerView, keep: np.ndarray) -> None:
        """AND ``keep`` (Keras layout, a fresh array: updated in place) into the layer's mask and
        zero the weights it prunes."""
        old = self.masks.get(view.name)
        if old is not None:
            np.logical_and(keep, old, out=keep)
        self.masks[view.name] = keep
        self._zero(view.weight.variable, keep)

    @staticmethod
    def _zero(var: Any, keep: np.ndarray) -> None:
        """Set the pruned weights of ``var`` to +0.0 (never -0.0), one copy of the layer at most."""
        value = np.array(var.numpy(), copy=True)
        np.copyto(value, 0.0, where=~keep)
        var.assign(value)

    def apply_masks(self) -> None:
        vm = self.view_map()
        for name, keep in self.masks.items():
            self._zero(vm[name].weight.variable, keep)

    def finalize(self) -> "KerasHandle":
        self.apply_masks()
        self.masks = {}
        return self

    def copy(self) -> "KerasHandle":
        clone = keras.models.clone_model(self.model)
        clone.set_weights(self.model.get_weights())
        return KerasHandle(clone, {k: v.copy() for k, v in self.masks.items()}, qstate=self.qstate.copy(),
                           folded=dict(self.folded), ref=self.ref, hf_config=self.hf_config)


def layer_inputs(handle: KerasHandle, layers: Sequence[str], x: np.ndarray) -> list[np.ndarray]:
    """One pass over ``x`` in inference mode through a probe whose outputs are the inputs of
    ``layers`` (each layer's first call's ``layer.input``: Keras 3 has no ``get_input_at``),
    each as float32 ``[rows, last axis]``: pruning's and calibration's taps, as torch's forward
    pre-hooks; the probe is built and compiled once per model and layer list."""
    probes, key = _PROBES.setdefault(handle.model, {}), tuple(layers)
    if key not in probes:
        vm, outs = handle.view_map(), []
        for name in layers:
            t = vm[name].layer.input
            if isinstance(t, (list, tuple)):
                raise LwdslError(f"layer '{name}' takes several inputs: its input cannot be calibrated")
            outs.append(t)
        probe = keras.Model(handle.model.inputs, outs)
        if len(probes) >= 4:
            probes.pop(next(iter(probes)))
        probes[key] = tf.function(lambda v: probe(v, training=False), reduce_retracing=True)
    seen = probes[key](tf.constant(nhwc(x)))
    return [np.asarray(t, dtype=np.float32).reshape(-1, int(t.shape[-1])) for t in (seen if isinstance(seen, (list, tuple)) else [seen])]


class KerasWeights(WeightParts):
    """Single layers in and out for the core's flows (quantize, prune, the calibrated methods,
    smoothquant): each tensor converted to the canonical (PyTorch) layout to be read and back to
    be written, by the conversion of its own view (a Dense kernel ``[in, out]`` is the canonical
    ``[out, in]`` transposed); masked weights are zero at all times here."""

    def layer_inputs(self, handle: KerasHandle, layers: Sequence[str], x: np.ndarray) -> list[np.ndarray]:
        return layer_inputs(handle, layers, x)

    def weight(self, handle: KerasHandle, layer: str) -> np.ndarray:
        return handle.view_map()[layer].weight.canonical().copy()

    def set_weight(self, handle: KerasHandle, layer: str, w: np.ndarray) -> None:
        t = handle.view_map()[layer].weight
        t.variable.assign(np.ascontiguousarray(t.from_canon(np.asarray(w, dtype=np.float32)), dtype=np.float32))

    def norm_bias(self, handle: KerasHandle, layer: str) -> Optional[np.ndarray]:
        t = next((t for t in handle.view_map()[layer].tensors if t.name == f"{layer}.bias"), None)
        return None if t is None else t.canonical().copy()

    def set_norm_bias(self, handle: KerasHandle, layer: str, b: np.ndarray) -> None:
        t = next(t for t in handle.view_map()[layer].tensors if t.name == f"{layer}.bias")
        t.variable.assign(np.ascontiguousarray(t.from_canon(np.asarray(b, dtype=np.float32)), dtype=np.float32))

    def keep_mask(self, handle: KerasHandle, layer: str) -> Optional[np.ndarray]:
        keep = handle.masks.get(layer)
        return None if keep is None else np.ascontiguousarray(handle.view_map()[layer].weight.to_canon(keep)).astype(bool)

    def add_keep(self, handle: KerasHandle, layer: str, keep: np.ndarray) -> None:
        view = handle.view_map()[layer]
        handle.add_mask(view, np.ascontiguousarray(view.weight.from_canon(np.asarray(keep, dtype=bool))))
