"""``export hf`` (torch): the model as an :class:`~lwdsl.backend.hf_folder.HfModel`, written by
the core (:func:`lwdsl.backend.hf_folder.write_folder`: the folder, its compressed-tensors
layout, warnings and notes are decided there, the same for every backend).

What torch gives: the model's ``transformers`` config (``config.to_dict()``, ``architectures``
the class ``transformers`` knows), its state dict as ``transformers`` reads it (``Conv1DLinear``
weights transposed back to ``Conv1D``'s ``[in, out]``, tensors that share memory once: the first
name in module order), each module's class names (a :class:`Conv1DLinear` is ``transformers``'
``Conv1D`` there) and the heads untied on load (hf.py's ``untie_heads``: the core ties them again
while they equal the embeddings).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lwdsl.backend import StepContext
from lwdsl.backend.hf_folder import NOT_A_TRANSFORMER, HfModel, write_folder
from lwdsl.errors import UsageError
from lwdsl.language.specs import ExportSpec

from .handle import TorchModel
from .hf import conv1d_layers, hf_classes, takes_tokens

__all__ = ["write_hf", "hf_model"]


def _state(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """The state dict as ``transformers`` reads it: Conv1D weights transposed back to
    ``[in, out]``, shared tensors once (the first name in module order), contiguous copies."""
    transposed = {f"{name}.weight" for name in conv1d_layers(module)}
    seen: set[int] = set()
    out: dict[str, np.ndarray] = {}
    for key, t in module.state_dict().items():
        ptr = t.data_ptr()
        if ptr in seen and t.numel():
            continue
        seen.add(ptr)
        t = t.detach().cpu()
        out[key] = (t.t() if key in transposed else t).contiguous().numpy().copy()
    return out


def hf_model(handle: TorchModel) -> HfModel:
    """The handle's model as ``export hf`` writes it (masks applied)."""
    module = handle.module
    config = getattr(module, "config", None)
    if not takes_tokens(module) or config is None:
        raise UsageError(f"export hf writes a Hugging Face transformers model; {handle.ref} is not one",
                         hint=NOT_A_TRANSFORMER)
    handle.apply_masks()
    conf = config.to_dict()
    base = type(module).__mro__[1]  # hf.py's subclass only changes forward(); the class transformers knows
    conf["architectures"] = [base.__name__]
    return HfModel(conf, _state(module), hf_classes(module), dict(getattr(module, "lwdsl_tied", {})))


def write_hf(handle: TorchModel, path: Path, ctx: StepContext, spec: ExportSpec) -> None:
    """``export hf``: the core's folder from torch's model."""
    model = hf_model(handle)
    write_folder(model, Path(path), ctx, quant=handle.quant, masks={n: k.numpy() for n, k in handle.masks.items()},
                 acts=handle.qstate.input_quantized(), casts=handle.qstate.casts, cast_hint="export torch stores them in 16 bits", length=int(handle.input_shape[0]))
