"""Reading checkpoints safely (``.lwz`` through :func:`lwdsl.backend.weights.load_weights`, torch
files with ``weights_only=True``: a state dict, a training checkpoint's, ``module.`` prefixes and
``torch.nn.utils.prune`` leftovers), fitting them to a model (narrower widths shrink the layers),
and writing ``model.pt``; docs/semantics.md ("Reading checkpoints", "Narrower widths")."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import nn

from lwdsl.errors import UsageError
from lwdsl.semantics.fold import FOLDED
from lwdsl.semantics.quant import DamagedTensor, check_state
from lwdsl.backend.weights import atomic_path, check_names, check_shapes, load_weights, unpack_canonical

from .fold import drop_folded
from .handle import TorchModel
from .layers import SKIPPED_BUFFERS, weighted_layers
from .structured import slice_layer

__all__ = ["read_checkpoint", "load_into", "save_native"]

#: The cast dtypes as torch dtypes (``model.pt`` stores cast weights in them).
_TORCH_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


_WRAPPERS = ("state_dict", "model_state_dict", "model")


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state, masks) from a ``.lwz`` or torch file; masks only from torch-prune leftovers.

    Every tensor is checked before use (:func:`lwdsl.semantics.quant.check_state`: finite
    floats, packed codes, scales and codebooks that fit what the file declares).

    Raises:
        UsageError: (exit code 2) the file is missing, unreadable, damaged, or holds pickled
            objects beyond tensors; the message names it (and the tensor, if one is bad).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} not found")
    if path.suffix == ".lwz":
        state, _meta = load_weights(path)
        return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}, {}
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
    try:
        check_state({k: _numpy(v) for k, v in state.items()})
    except DamagedTensor as exc:
        raise UsageError(f"cannot read checkpoint {path}: {exc.message}: the file is damaged") from None
    return state, masks


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


def _optional(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in SKIPPED_BUFFERS


def _shrink_to(module: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Shrink layers whose weight in ``state`` is narrower (removed filters); their names."""
    shrunk = []
    for name, m in weighted_layers(module):
        new = state.get(f"{name}.weight")
        old = m.weight
        if new is None or new.shape == old.shape or new.dim() != old.dim():
            continue
        depthwise = isinstance(m, nn.modules.conv._ConvNd) and m.groups == m.in_channels == m.out_channels > 1
        if depthwise and new.shape[0] < old.shape[0] and new.shape[1:] == old.shape[1:]:
            slice_layer(m, 0, torch.arange(new.shape[0]))  # removed by group: one filter a channel
            m.in_channels = m.groups = new.shape[0]
            shrunk.append(name)
            continue
        if getattr(m, "groups", 1) != 1 or isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            continue
        if any(a > b for a, b in zip(new.shape[:2], old.shape[:2])) or new.shape[2:] != old.shape[2:]:
            continue
        for dim in range(min(2, new.dim())):
            if new.shape[dim] != old.shape[dim]:
                slice_layer(m, dim, torch.arange(new.shape[dim]))
        shrunk.append(name)
    return shrunk


def load_into(handle: TorchModel, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``handle.module`` (shrinking removed widths), then re-apply masks.

    A packed state (quantized layers as ``.weight.codes``/``.scale``/``.bits``, see
    :func:`lwdsl.semantics.quant.pack_state`) loads as ``codes * scale`` and restores the
    handle's quantization record (:meth:`lwdsl.backend.handle.QuantState.restore`: codes, input
    ranges, casts); a float state clears its codes.

    Raises:
        UsageError: (exit code 2) naming ``source`` and the first missing, unexpected,
            mis-shaped or damaged tensor (:func:`lwdsl.semantics.quant.unpack_state`).
    """
    halves = {k[: -len(".weight")]: ("fp16" if t.dtype == torch.float16 else "bf16") for k, t in state.items()
              if k.endswith(".weight") and t.dtype in (torch.float16, torch.bfloat16)}  # a model.pt written after a cast
    packed = unpack_canonical({k: _numpy(v) for k, v in state.items()}, source)
    state = {k: torch.from_numpy(np.asarray(v)) for k, v in packed.state.items()}
    keeps = packed.keeps
    module = handle.module
    if packed.folded:  # saved after quantize folded these norms (fold.py): fold the model's away first
        todo = [n for n in packed.folded if not isinstance(_submodule(module, n), torch.nn.Identity)]
        handle.folded.update(drop_folded(module, todo))
    expected = module.state_dict()
    where = f"{source} does not fit {handle.ref}"
    check_names([k for k in expected if not _optional(k) or k in state], state, where)
    shrunk = _shrink_to(module, state)
    check_shapes({k: tuple(t.shape) for k, t in module.state_dict().items()}, {k: tuple(v.shape) for k, v in state.items()}, where)
    for key, t in module.state_dict().items():
        if key in state and state[key].is_floating_point() != t.is_floating_point():  # load_state_dict would cast it
            raise UsageError(f"{where}: tensor '{key}' holds {state[key].dtype} values in the checkpoint but {t.dtype} in the model")
    full = dict(module.state_dict())
    full.update(state)
    module.load_state_dict(full)
    if shrunk:
        _check_widths(handle, source, shrunk)
    for layer in shrunk:
        handle.masks.pop(layer, None)
    for layer, keep in keeps.items():  # N:M layers' masks come back from the file (lwdsl/semantics/state.py)
        handle.masks[layer] = torch.from_numpy(keep)
    handle.apply_masks()
    handle.qstate.restore(packed, halves)


def _submodule(module: torch.nn.Module, name: str) -> Optional[torch.nn.Module]:
    try:
        return module.get_submodule(name)
    except AttributeError:
        return None


def _check_widths(handle: TorchModel, source: str, shrunk: list[str]) -> None:
    was_training = handle.module.training
    handle.module.eval()
    try:
        with torch.no_grad():
            handle.module(torch.zeros(1, *handle.input_shape))
    except RuntimeError as exc:
        raise UsageError(
            f"{source} does not fit {handle.ref}: layers {', '.join(shrunk)} are narrower than the model's "
            f"and the widths do not fit together ({exc})"
        ) from None
    finally:
        handle.module.train(was_training)


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
