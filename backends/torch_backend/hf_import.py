"""A compressed-tensors Hugging Face folder as ``--model`` (torch), read by lwdsl itself.

A folder whose ``config.json`` has a ``quantization_config`` (``quant_method``
``compressed-tensors``: written by ``export hf`` or by llm-compressor) is read without the
``compressed-tensors`` package and without its hooks in the model: ``transformers`` builds the
model from the config with the ``quantization_config`` taken out and loads every tensor it knows
(norms, embeddings, float layers; a tied head untied by hf.py before any decoded weight goes in); each quantized layer's tensors
(``weight_packed``/``weight_scale``/``weight_shape``, or an int8 ``weight``) are read and decoded
by the core (:func:`lwdsl.backend.hf_folder.decode_folder`, the same for every backend: which
schemes are read, which are refused and why) and the layer's weight set to ``f32(code) * scale``. The codes and scales are returned for the
handle's quantization state (``quantize``'s record: the .lwz stores them packed, training keeps
the grid; codes using ``-2^(B-1)``, as llm-compressor writes them, on lwdsl's full grid), except
for a layer whose codes lwdsl's state cannot hold (a scale <= 0: warned); the layers the
``sparsity_config`` names get keep masks where their weights are zero. Weights are float32
(lwdsl computes in float32; a bf16 scale is widened exactly).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch

from lwdsl.backend.hf_folder import compressed_names, decode_folder, keep_masks, read_tensors
from lwdsl.semantics import hf_format
from lwdsl.semantics.codes import WeightQuant

__all__ = ["load_float", "decode_into"]


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


def load_float(folder: Path, cls: type, qc: Any) -> torch.nn.Module:
    """The model of ``folder`` (class ``cls``) as ``transformers`` loads it; with a
    ``quantization_config`` (``qc``), float32, built without it, its quantized layers' weights
    still to be decoded (:func:`decode_into`).

    Raises:
        UsageError: a ``quantization_config`` the core refuses, before any weight is read.
    """
    if qc is None:
        return cls.from_pretrained(str(folder), local_files_only=True)
    hf_format.read_config(qc, {}, f"{folder}/config.json")  # what it refuses, before any weight is read
    config = cls.config_class.from_pretrained(str(folder), local_files_only=True)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with _quiet_transformers():
        return cls.from_pretrained(str(folder), config=config, local_files_only=True, dtype=torch.float32)


def decode_into(model: torch.nn.Module, folder: Path, qc: Any,
                classes: dict[str, tuple[str, ...]]) -> tuple[dict[str, WeightQuant], dict[str, torch.Tensor]]:
    """The quantized layers of ``folder`` decoded into ``model``'s weights (``classes``: each
    module's class names, hf.py's ``hf_classes``); the layers' codes and scales (those lwdsl's
    state holds) and the keep masks of the sparse layers.

    Raises:
        UsageError: what the core refuses (a scheme, a format, a damaged tensor), or a layer
            the config quantizes that is not an ``nn.Linear`` / has no tensors in the folder.
    """
    tensors = read_tensors(folder, compressed_names(folder, qc, classes))

    weights, quant, sparse = decode_folder(folder, qc, classes, tensors,
                                           lambda name: tuple(model.get_submodule(name).weight.shape))
    with torch.no_grad():
        for name, w in weights.items():
            model.get_submodule(name).weight.copy_(torch.from_numpy(w))
    keeps = keep_masks(sparse, lambda name: model.get_submodule(name).weight.detach().numpy())
    return quant, {name: torch.from_numpy(keep) for name, keep in keeps.items()}
