"""Reading torch checkpoints safely (``.lwz`` files and the checks are the core's,
:func:`lwdsl.backend.load.read_checkpoint`): torch files with ``weights_only=True``: a state dict, a training checkpoint's, ``module.`` prefixes and
``torch.nn.utils.prune`` leftovers), fitting them to a model (narrower widths shrink the layers),
and writing ``model.pt``; docs/semantics.md ("Reading checkpoints", "Narrower widths")."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from lwdsl.errors import UsageError
from lwdsl.semantics.fold import FOLDED
from lwdsl.backend.load import LoadParts, load_state
from lwdsl.backend.weights import atomic_path

from .fold import drop_folded
from .handle import TorchModel
from .layers import SKIPPED_BUFFERS, weighted_layers
from .structured import slice_layer

__all__ = ["read_native", "load_into", "save_native", "LOAD"]

#: The cast dtypes as torch dtypes (``model.pt`` stores cast weights in them).
_TORCH_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


_WRAPPERS = ("state_dict", "model_state_dict", "model")


def read_native(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """(state, masks, 16-bit layers) of a torch file (:meth:`lwdsl.backend.load.LoadParts.read_native`),
    loaded with ``weights_only=True``; masks only from torch-prune leftovers.

    Raises:
        UsageError: (exit code 2) the file is unreadable or holds pickled objects beyond
            tensors; the message names it.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused is None:
            raise UsageError(f"cannot read checkpoint {path}: not a torch file or damaged") from None
        what = f" (it needs {refused.group(1)})"
        raise UsageError(
            f"refusing to load {path}: it holds pickled Python objects, not only tensors{what}; lwdsl "
            "loads torch files only with torch.load(weights_only=True), so opening a file never runs code",
            hint="if you trust the file, re-save its weights alone: torch.save(model.state_dict(), 'weights.pt')",
        ) from None
    except Exception as exc:  # torch raises KeyError, RuntimeError, EOFError ... for a bad file
        raise UsageError(f"cannot read checkpoint {path}: not a torch file ({type(exc).__name__}: {exc})") from None
    state, masks = _unwrap(obj, path)
    return {k: _numpy(v) for k, v in state.items()}, {k: m.numpy() for k, m in masks.items()}, _halves(state)


def _halves(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Layer -> ``fp16``/``bf16`` for a weight held in 16 bits (a ``model.pt`` written after a cast)."""
    return {k[: -len(".weight")]: ("fp16" if t.dtype == torch.float16 else "bf16") for k, t in state.items()
            if k.endswith(".weight") and t.dtype in (torch.float16, torch.bfloat16)}


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as numpy (half floats widened: numpy has no bfloat16), for checking."""
    t = t.detach().cpu()
    return (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy()


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    if isinstance(obj, Mapping):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(
            f"{path} is not a state dict (a mapping of names to tensors)",
            hint="save weights with torch.save(model.state_dict(), path)",
        )
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    masks = {}
    for key in [k for k in state if k.endswith(".weight_orig")]:
        layer = key[: -len(".weight_orig")]
        mask = state.pop(f"{layer}.weight_mask", None)
        orig = state.pop(key)
        if mask is None:
            state[f"{layer}.weight"] = orig
        else:
            masks[layer] = mask.bool()
            state[f"{layer}.weight"] = orig.masked_fill(~masks[layer], 0.0)
    return state, masks


class TorchLoadParts(LoadParts):
    """The torch primitives of the core's :func:`lwdsl.backend.load.load_state`: the module's
    state dict (its layout is the canonical one), norms made ``nn.Identity``, layers sliced."""

    optional = tuple(f".{b}" for b in SKIPPED_BUFFERS)
    read_native = staticmethod(read_native)

    def unfolded(self, handle: TorchModel, norms: Sequence[str]) -> list[str]:
        return [n for n in norms if not isinstance(_submodule(handle.module, n), nn.Identity)]

    def drop_folded(self, handle: TorchModel, norms: Sequence[str]) -> dict[str, str]:
        return drop_folded(handle.module, norms)

    def tensors(self, handle: TorchModel) -> dict[str, tuple[int, ...]]:
        return {k: tuple(t.shape) for k, t in handle.module.state_dict().items()}

    def narrow(self, handle: TorchModel, widths: Mapping[str, tuple[int, ...]]) -> list[str]:
        """Slice each layer to its narrower weight (removed filters; a depthwise conv by group, one
        filter a channel; a grouped conv or a layer/group norm never), then a forward pass."""
        shrunk = []
        for name, m in weighted_layers(handle.module):
            new = widths.get(name)
            if new is None:
                continue
            depthwise = isinstance(m, nn.modules.conv._ConvNd) and m.groups == m.in_channels == m.out_channels > 1
            if depthwise and new[1:] == tuple(m.weight.shape[1:]):
                slice_layer(m, 0, torch.arange(new[0]))
                m.in_channels = m.groups = new[0]
            elif depthwise or getattr(m, "groups", 1) != 1 or isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
                continue
            else:
                for dim in range(min(2, len(new))):
                    if new[dim] != m.weight.shape[dim]:
                        slice_layer(m, dim, torch.arange(new[dim]))
            shrunk.append(name)
        if shrunk:
            was_training = handle.module.training
            handle.module.eval()
            try:
                with torch.no_grad():
                    handle.module(torch.zeros(1, *handle.input_shape))
            finally:
                handle.module.train(was_training)
        return shrunk

    def assign(self, handle: TorchModel, state: Mapping[str, np.ndarray], where: str) -> None:
        full = dict(handle.module.state_dict())
        for key, v in state.items():
            t = torch.from_numpy(np.asarray(v))
            if t.is_floating_point() != full[key].is_floating_point():  # load_state_dict would cast it
                raise UsageError(f"{where}: tensor '{key}' holds {t.dtype} values in the checkpoint but {full[key].dtype} in the model")
            full[key] = t
        handle.module.load_state_dict(full)

    def masks_to_canon(self, handle: TorchModel, masks: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {layer: masks[layer].numpy().copy() for layer in masks}

    def masks_from_canon(self, handle: TorchModel, masks: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {layer: torch.from_numpy(np.asarray(keep, dtype=bool).copy()) for layer, keep in masks.items()}


LOAD = TorchLoadParts()


def load_into(handle: TorchModel, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy a torch file's ``state`` into ``handle.module`` (the core's
    :func:`lwdsl.backend.load.load_state`: folded norms, narrower widths, checks, masks, the
    quantization record); a float16/bfloat16 weight (a ``model.pt`` written after a cast) keeps
    its layer cast.

    Raises:
        UsageError: (exit code 2) naming ``source`` and the first missing, unexpected,
            mis-shaped or damaged tensor (:func:`lwdsl.semantics.quant.unpack_state`).
    """
    load_state(LOAD, handle, {k: _numpy(v) for k, v in state.items()}, source, _halves(state))


def _submodule(module: torch.nn.Module, name: str) -> Optional[torch.nn.Module]:
    try:
        return module.get_submodule(name)
    except AttributeError:
        return None


def save_native(handle: TorchModel, path: Path) -> None:
    """``torch.save`` of the plain state dict (loadable with ``weights_only=True``), atomically;
    a norm folded into its layer by ``quantize`` is marked by an empty ``<norm>.folded`` tensor
    (lwdsl loads such a file back into a fresh model, see :func:`load_into`). The weight of a
    layer cast by ``quantize fp16|bf16`` is saved as a ``torch.float16``/``torch.bfloat16``
    tensor (its value exactly: the cast made it a half value), so the file holds half the bytes
    of float32 for it; ``module.load_state_dict`` of a float32 module widens it back exactly."""
    state = {k: v.detach().cpu() for k, v in handle.module.state_dict().items()}  # a user's model may be on its GPU (attach)
    for layer, dtype in handle.qstate.casts.items():
        key = f"{layer}.weight"
        if key in state:
            state[key] = state[key].detach().to(_TORCH_HALF[dtype])
    for norm in handle.folded.values():
        state[f"{norm}{FOLDED}"] = torch.zeros(0)
    with atomic_path(Path(path)) as tmp:
        torch.save(state, tmp)
