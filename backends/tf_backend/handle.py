"""The model handle the runner passes around: a Keras model, its pruning masks and its
quantization state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from lwdsl.semantics.quant import ActQuant, WeightQuant

from ._tf import keras
from .layers import LayerView, views

__all__ = ["KerasHandle"]


@dataclass
class KerasHandle:
    """A Keras model, its keep masks (layer name -> bool array in the Keras layout of the
    weight; masked weights are +0.0 at all times, no wrapper layers) and its quantization state
    (``quant``: codes and scales in the canonical layout, the variable holding ``codes * scale``;
    ``act``: static layers' input quantization; ``qconfig``: how it was quantized, for
    exporters), as the torch handle; :meth:`finalize` drops the masks only."""

    model: Any
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)  # cross-entropy per step of the last training
    quant: dict[str, WeightQuant] = field(default_factory=dict)
    act: dict[str, ActQuant] = field(default_factory=dict)
    qconfig: dict[str, Any] = field(default_factory=dict)
    folded: dict[str, str] = field(default_factory=dict)  # layer -> batch norm folded into it (fold.py)
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
        return KerasHandle(
            clone, {k: v.copy() for k, v in self.masks.items()}, quant=dict(self.quant), act=dict(self.act), qconfig=dict(self.qconfig),
            folded=dict(self.folded), ref=self.ref, hf_config=self.hf_config,
        )
