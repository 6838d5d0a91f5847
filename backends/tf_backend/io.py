"""Reading checkpoints and writing the framework's own model file (``model.keras``).

Checkpoints are only ever read: a ``.lwz`` file of canonical weights (any backend writes one;
the core reads it, :func:`lwdsl.backend.load.read_checkpoint`), or a ``.keras``/``.h5`` file
loaded in Keras safe mode (see models.py). Writes are atomic.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lwdsl.backend.load import LoadParts
from lwdsl.errors import LwdslError, UsageError

from .fold import drop_folded
from .handle import KerasHandle
from .layers import _classes, load_state_into, state_of, views
from .models import load_file
from .structured import resize_to_state

__all__ = ["read_native", "save_native", "save_keras", "LOAD"]


def read_native(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """The canonical state of a ``.keras``/``.h5`` file, loaded in Keras safe mode
    (:meth:`lwdsl.backend.load.LoadParts.read_native`: no masks, no 16-bit layers).

    Raises:
        UsageError: (exit code 2) the file is of another kind, unreadable or damaged; the message names it.
    """
    if path.suffix in (".keras", ".h5"):
        try:
            return state_of(load_file(path)), {}, {}
        except UsageError:
            raise
        except LwdslError as exc:  # a damaged or foreign model file is bad input, not a failed run
            raise UsageError(exc.message, hint=exc.hint) from None
    raise UsageError(
        f"the tensorflow backend cannot read checkpoint '{path}' (a {path.suffix or 'suffix-less'} file)",
        hint="give a .lwz file of canonical weights (any backend writes one: model.lwz in the run folder) or a .keras/.h5 file",
    )


def save_keras(model: Any, path: Path) -> None:
    """Write ``model`` as a ``.keras`` file atomically (Keras picks the format by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.save(tmp / "model.keras")
        os.replace(tmp / "model.keras", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_native(handle: KerasHandle, path: Path) -> None:
    """``model.keras`` of the handle's model, atomically."""
    save_keras(handle.model, Path(path))


class KerasLoadParts(LoadParts):
    """The Keras primitives of the core's :func:`lwdsl.backend.load.load_state`: tensors and
    masks converted from the Keras layout (:class:`.layers.LayerView`), folded norms and
    narrower widths by rebuilding the model from its config."""

    read_native = staticmethod(read_native)

    def unfolded(self, handle: KerasHandle, norms: Sequence[str]) -> list[str]:
        names = {layer.name: layer for layer in handle.model.layers}
        return [n for n in norms if n in names and "BatchNormalization" in _classes(names[n])]

    def drop_folded(self, handle: KerasHandle, norms: Sequence[str]) -> dict[str, str]:
        handle.model, done = drop_folded(handle.model, norms)
        return done

    def tensors(self, handle: KerasHandle) -> dict[str, tuple[int, ...]]:
        return {t.name: tuple(t.shape) for v in views(handle.model) for t in v.tensors}

    def narrow(self, handle: KerasHandle, widths: Mapping[str, tuple[int, ...]]) -> list[str]:
        resized = resize_to_state(handle.model, dict(widths))
        if resized is handle.model:
            return []
        handle.model = resized
        return list(widths)

    def assign(self, handle: KerasHandle, state: Mapping[str, np.ndarray], where: str) -> None:
        load_state_into(handle.model, dict(state), where)

    def masks_to_canon(self, handle: KerasHandle, masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        found = handle.view_map() if masks else {}
        return {name: np.ascontiguousarray(found[name].weight.to_canon(keep)).astype(bool) for name, keep in masks.items()}

    def masks_from_canon(self, handle: KerasHandle, masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        found = handle.view_map() if masks else {}
        return {name: np.ascontiguousarray(found[name].weight.from_canon(np.asarray(keep, bool))) for name, keep in masks.items()}


LOAD = KerasLoadParts()
