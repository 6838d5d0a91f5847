"""A compressed-tensors Hugging Face folder as ``--model`` (torch), read by lwdsl itself.

A folder whose ``config.json`` has a ``quantization_config`` (``quant_method``
``compressed-tensors``: written by ``export hf`` or by llm-compressor) is read without the
``compressed-tensors`` package and without its hooks in the model: ``transformers`` builds the
model from the config with the ``quantization_config`` taken out and loads every tensor it knows
(norms, embeddings, float layers, tied weights); each quantized layer's tensors
(``weight_packed``/``weight_scale``/``weight_shape``, or an int8 ``weight``) are decoded by the
core (:mod:`lwdsl.semantics.hf_format`: which schemes are read, which are refused and why) and
the layer's weight set to ``f32(code) * scale``. The codes and scales are returned for the
handle's quantization state (``quantize``'s record: the .lwz stores them packed, training keeps
the grid; codes using ``-2^(B-1)``, as llm-compressor writes them, on lwdsl's full grid), except
for a layer whose codes lwdsl's state cannot hold (a scale <= 0: warned); the layers the
``sparsity_config`` names get keep masks where their weights are zero. Weights are float32
(lwdsl computes in float32; a bf16 scale is widened exactly).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from lwdsl.errors import UsageError
from lwdsl.semantics import hf_format
from lwdsl.semantics.codes import WeightQuant

__all__ = ["load_compressed"]

_LOCAL = ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point", "weight_g_idx", "weight")


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' load report lists every packed tensor as unexpected and every packed
    layer's ``weight`` as missing: both are lwdsl's to fill, so the report is silenced here."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _classes(model: torch.nn.Module) -> dict[str, tuple[str, ...]]:
    return {name: tuple(c.__name__ for c in type(m).__mro__) for name, m in model.named_modules() if name}


def _tensors(folder: Path, layers: set[str]) -> dict[str, dict[str, np.ndarray]]:
    """The compressed tensors of ``layers`` from every safetensors file (local names; scales as float32)."""
    from safetensors import safe_open

    out: dict[str, dict[str, np.ndarray]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                layer, _, local = key.rpartition(".")
                if layer in layers and local in _LOCAL:
                    t = f.get_tensor(key)
                    if local == "weight_scale" and t.is_floating_point():
                        t = t.to(torch.float32)
                    out.setdefault(layer, {})[local] = t.numpy()
    return out


def load_compressed(folder: Path, cls: type, qc: Any) -> tuple[torch.nn.Module, dict[str, WeightQuant], dict[str, torch.Tensor]]:
    """The model of ``folder`` (class ``cls``) with its quantized layers decoded; the layers'
    codes and scales (those lwdsl's state holds) and the keep masks of the sparse layers.

    Raises:
        UsageError: what the core refuses (a scheme, a format, a damaged tensor), or a layer
            the config quantizes that is not an ``nn.Linear`` / has no tensors in the folder.
    """
    where = f"{folder}/config.json"
    hf_format.read_config(qc, {}, where)  # what it refuses, before any weight is read
    config = cls.config_class.from_pretrained(str(folder), local_files_only=True)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with _quiet_transformers():
        model = cls.from_pretrained(str(folder), config=config, local_files_only=True, dtype=torch.float32)
    schemes, sparse, _ = hf_format.read_config(qc, _classes(model), where)
    found = _tensors(folder, set(schemes))
    quant: dict[str, WeightQuant] = {}
    skipped: list[str] = []
    for name, scheme in schemes.items():
        layer = model.get_submodule(name)
        if not isinstance(layer, torch.nn.Linear):
            raise UsageError(f"{where}: the quantization_config quantizes {name}, a {type(layer).__name__}; "
                             "compressed-tensors packs nn.Linear layers only")
        if name not in found:
            raise UsageError(f"{folder}: the quantization_config quantizes {name} but no safetensors file holds its tensors",
                             hint="the folder is incomplete: copy every *.safetensors file of the checkpoint")
        q, why = hf_format.decode_layer(found[name], scheme, f"{folder}: {name}")
        if tuple(q.codes.shape) != tuple(layer.weight.shape):
            raise UsageError(f"{folder}: {name} holds codes of shape {tuple(q.codes.shape)}; the model's layer is "
                             f"{tuple(layer.weight.shape)}")
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(q.dequantize()))
        if why:
            skipped.append(f"{name}: {why}")
        else:
            quant[name] = q
    if skipped:
        warnings.warn(f"--model {folder}: {len(skipped)} quantized layer(s) load as float32 weights, not as lwdsl's "
                      f"codes: " + "; ".join(skipped), UserWarning, stacklevel=3)
    keeps = {}
    for name in sparse:
        w = model.get_submodule(name).weight
        if (w == 0).any():
            keeps[name] = (w != 0).detach().clone()
    return model, quant, keeps
