"""Loading a canonical state into a model, written once over a backend's :class:`LoadParts`
(both load paths: a checkpoint given to ``load_model`` and :meth:`lwdsl.backend.Backend.load_state`):
the state unpacked (:func:`lwdsl.backend.weights.unpack_canonical`), the norms it says were folded
dropped from the model first, the layers it holds narrower (removed filters) narrowed and their
widths checked, every tensor's name and shape checked, the weights assigned, the masks of
resized layers dropped, the N:M keeps and the quantization record restored.
docs/semantics.md ("Reading checkpoints", "Narrower widths")."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import UsageError
from .weights import check_names, check_shapes, unpack_canonical

__all__ = ["LoadParts", "load_state", "narrowed"]


class LoadParts(ABC):
    """A backend's primitives for loading a state (shapes and masks in the canonical layout)."""

    @abstractmethod
    def unfolded(self, handle: Any, norms: Sequence[str]) -> list[str]:
        """The ``norms`` (a state's ``<norm>.folded`` markers) the model has not folded away yet."""

    @abstractmethod
    def drop_folded(self, handle: Any, norms: Sequence[str]) -> dict[str, str]:
        """Give the handle's model the shape of a folded one; layer -> norm
        (:func:`lwdsl.backend.fold.folded_pairs`)."""

    @abstractmethod
    def tensors(self, handle: Any) -> dict[str, tuple[int, ...]]:
        """Every tensor of the model: canonical name -> canonical shape."""

    #: The name endings of tensors a state may lack or hold beside the model's.
    optional: tuple[str, ...] = (".num_batches_tracked",)

    @abstractmethod
    def narrow(self, handle: Any, widths: Mapping[str, tuple[int, ...]]) -> list[str]:
        """Narrow the model's layers to the canonical weight shapes ``widths`` (:func:`narrowed`):
        sliced, or the model rebuilt; the layers resized. Raises (anything) where their widths
        do not fit together (a forward pass, a rebuild)."""

    @abstractmethod
    def assign(self, handle: Any, state: Mapping[str, np.ndarray], where: str) -> None:
        """Write ``state`` (float, canonical, names and shapes checked) into the model."""

    @abstractmethod
    def masks_to_canon(self, handle: Any, masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The handle's masks as bool arrays in the canonical layout."""

    @abstractmethod
    def masks_from_canon(self, handle: Any, masks: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Canonical bool keep masks as the handle keeps them."""


def narrowed(model: Mapping[str, Sequence[int]], state: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Layer -> the weight shape a state gives it where that is narrower than the model's (removed
    filters): same rank and kernel, no axis wider, the output or input axis narrower."""
    out = {}
    for key, shape in model.items():
        new = state.get(key) if key.endswith(".weight") else None
        if new is None or tuple(new) == tuple(shape) or len(new) != len(shape) or tuple(new[2:]) != tuple(shape[2:]):
            continue
        if all(a <= b for a, b in zip(new, shape)):
            out[key[: -len(".weight")]] = tuple(int(d) for d in new)
    return out


def load_state(parts: LoadParts, handle: Any, state: Mapping[str, Any], source: str,
               halves: Optional[Mapping[str, str]] = None) -> None:
    """Load ``state`` (canonical, possibly packed) into ``handle``; ``halves``: layers a framework's
    file holds in 16 bits (:meth:`lwdsl.backend.handle.QuantState.restore`).

    Raises:
        UsageError: (exit code 2) naming ``source`` and the first damaged, missing, unexpected
            or mis-shaped tensor, or the narrowed layers whose widths do not fit together.
    """
    packed = unpack_canonical(state, source)
    todo = parts.unfolded(handle, packed.folded) if packed.folded else []
    if todo:  # saved after quantize folded these norms: fold the model's away first
        handle.folded.update(parts.drop_folded(handle, todo))
    where = f"{source} does not fit {handle.ref}"
    model = parts.tensors(handle)
    given = {k: v for k, v in packed.state.items() if k in model or not k.endswith(parts.optional)}
    check_names([k for k in model if not k.endswith(parts.optional) or k in given], given, where)
    shapes = {k: tuple(np.shape(v)) for k, v in given.items()}
    widths = narrowed(model, shapes)
    try:
        resized = parts.narrow(handle, widths) if widths else []
    except UsageError:
        raise
    except Exception as exc:  # a forward pass or a rebuild at widths that do not fit together
        raise UsageError(f"{where}: layers {', '.join(widths)} are narrower than the model's "
                         f"and the widths do not fit together ({exc})") from None
    check_shapes(parts.tensors(handle) if resized else model, shapes, where)
    parts.assign(handle, given, where)
    for layer in resized:
        handle.masks.pop(layer, None)
    handle.masks.update(parts.masks_from_canon(handle, packed.keeps))  # N:M layers' masks come back from the file
    handle.apply_masks()
    handle.qstate.restore(packed, halves)
