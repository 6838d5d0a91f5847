"""Reading a checkpoint (:func:`load_checkpoint`: a missing file, a ``.lwz`` file, a damaged tensor
of a framework's own file) and loading a canonical state into a model, written once over a
backend's :class:`LoadParts` (both load paths: a checkpoint given to ``load_model`` and
:meth:`lwdsl.backend.Backend.load_state`):
the state unpacked (:func:`lwdsl.backend.weights.unpack_canonical`), the norms it says were folded
dropped from the model first, the layers it holds narrower (removed filters) narrowed and their
widths checked, every tensor's name and shape checked, the weights assigned, the masks of
resized layers dropped, the N:M keeps and the quantization record restored.
docs/semantics.md ("Reading checkpoints", "Narrower widths")."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import UsageError
from ..semantics.state import DamagedTensor, check_state
from .weights import check_names, check_shapes, load_weights, unpack_canonical

__all__ = ["LoadParts", "load_checkpoint", "load_state", "narrowed", "read_checkpoint"]


class LoadParts(ABC):
    """A backend's primitives for loading a state (shapes and masks in the canonical layout)."""

    @abstractmethod
    def read_native(self, path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
        """A checkpoint in the framework's own format (never running its code): the state (float
        arrays, canonical), canonical keep masks it holds, and layer -> ``fp16``/``bf16`` for
        weights it holds in 16 bits. Raises UsageError naming ``path`` for a file it cannot read."""

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


def read_checkpoint(parts: LoadParts, path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """(state, masks, 16-bit layers) of a ``.lwz`` file or a framework's own file
    (:meth:`LoadParts.read_native`), read only; every tensor checked before use
    (:func:`lwdsl.semantics.state.check_state`: finite floats, codes and scales that fit).

    Raises:
        UsageError: (exit code 2) the file is missing, unreadable or damaged; the message names
            it (and the tensor, if one is bad).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} not found")
    if path.suffix == ".lwz":
        return load_weights(path)[0], {}, {}
    state, masks, halves = parts.read_native(path)
    try:
        check_state(state)
    except DamagedTensor as exc:
        raise UsageError(f"cannot read checkpoint {path}: {exc.message}: the file is damaged") from None
    return state, masks, halves


def load_checkpoint(parts: LoadParts, handle: Any, path: Path) -> None:
    """The weights (and masks) of the checkpoint ``path`` loaded into ``handle`` (:func:`load_state`)."""
    state, masks, halves = read_checkpoint(parts, path)
    handle.masks.update(parts.masks_from_canon(handle, masks))
    load_state(parts, handle, state, f"checkpoint {path}", halves)
