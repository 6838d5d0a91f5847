"""Transformer models from ``transformers``, built from a config (no download): ``tiny-llama``,
``tiny-bert``, ``tiny-gpt2``, and a local Hugging Face folder (``config.json`` + ``*.safetensors``).

Each model is the ``transformers`` class itself, subclassed only so that ``model(input_ids)``
returns the logits tensor as every lwdsl model does (``[batch, seq, vocab]`` for a causal LM,
``[batch, classes]`` for a classifier), with no cache, no attention mask (lwdsl's sequences
are fixed-length, no padding) and no other output. Module and parameter names are the
library's own (``model.layers.0.self_attn.q_proj``, ``lm_head``, ``bert.encoder.layer.0...``),
so selectors and state dicts read as in any Hugging Face checkpoint. Weights are drawn from
torch's global generator (seeded by the runner) by the library's own initialisation.

GPT-2's projections (``c_attn``, ``c_proj``, ``c_fc``) are ``transformers``' ``Conv1D``: a
linear layer whose weight is stored transposed, ``[in, out]``. Every model built or loaded here
has each ``Conv1D`` replaced by :class:`Conv1DLinear`, an ``nn.Linear`` (weight ``[out, in]``,
the canonical layout) computing the same function, so selectors see linear layers and prune,
quantize, masks, codes and the .lwz use the one layout; the module name stays
(``transformer.h.0.attn.c_attn``). :func:`conv1d_layers` names them, for a writer that must
give transformers its own layout back (``export hf`` transposes them again).

Sizes: ``tiny-llama`` is 2 decoder layers, hidden 128, 4 heads (4 key/value heads), MLP 512
(SwiGLU), RMSNorm, rotary positions, untied head; its vocabulary is the data's (the run's
number of classes: 2048 for ``--data pydoc``). ``tiny-bert`` is 2 encoder layers, hidden 128,
4 heads, MLP 512, vocabulary 2048, a pooled classifier with the data's classes. ``tiny-gpt2`` is
GPT-2 (``GPT2LMHeadModel``): 2 layers, hidden 128, 4 heads, MLP 512 (GELU), LayerNorm, learned
positions, the data's vocabulary, an untied head (as tiny-llama's, so pruning the head never
prunes the embeddings) and no dropout (as tiny-llama's: training is deterministic given the
seed). Other sizes: ``tiny-llama?layers=4&hidden=256&heads=8&mlp=1024`` (and ``vocab=`` for tiny-bert).

A folder whose head is tied to its embeddings (``tie_word_embeddings``: one ``Parameter`` in
``transformers``) is untied on load (:func:`untie_heads`), as on every backend
(:mod:`lwdsl.backend.hf_folder`): the head a ``Parameter`` of its own, a copy, warned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lwdsl.backend.hf_folder import config_args, is_hf_folder, read_config_json, warn_untied
from lwdsl.backend.transformer_sizes import transformer_sizes
from lwdsl.backend.zoo import TRANSFORMERS
from lwdsl.errors import UsageError

__all__ = ["HF_NAMES", "build_hf", "read_hf_folder", "is_hf_folder", "takes_tokens", "Conv1DLinear", "conv1d_layers",
           "hf_classes", "untie_heads"]

#: Names built here, with their default sizes (the core's table, :data:`lwdsl.backend.zoo.TRANSFORMERS`).
HF_NAMES = {name: TRANSFORMERS[name] for name in ('tiny-llama', 'tiny-bert', 'tiny-gpt2')}


class Conv1DLinear(torch.nn.Linear):
    """A ``transformers`` ``Conv1D`` (``y = x W + b``, ``W`` ``[in, out]``) as the ``nn.Linear``
    it is (``W^T`` ``[out, in]``): the same function, the canonical layout."""

    @classmethod
    def of(cls, conv: torch.nn.Module) -> "Conv1DLinear":
        out_features, in_features = int(conv.nf), int(conv.nx)
        layer = cls(in_features, out_features, bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(conv.weight.detach().t())
            if conv.bias is not None:
                layer.bias.copy_(conv.bias.detach())
        layer.weight.requires_grad_(conv.weight.requires_grad)
        return layer

    def extra_repr(self) -> str:
        return super().extra_repr() + " (a transformers Conv1D, weight transposed to [out, in])"


def _linear_conv1d(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every ``transformers`` ``Conv1D`` replaced by a :class:`Conv1DLinear` in place."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # no transformers: no Conv1D either
        return model
    for name, module in list(model.named_modules()):
        if isinstance(module, Conv1D):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, Conv1DLinear.of(module))
    return model


def conv1d_layers(model: torch.nn.Module) -> list[str]:
    """The names of the layers that were ``Conv1D`` in ``transformers`` (their weight goes back
    transposed, ``[in, out]``, to anything that reads a Hugging Face checkpoint)."""
    return [name for name, m in model.named_modules() if isinstance(m, Conv1DLinear)]


def hf_classes(module: torch.nn.Module) -> dict[str, tuple[str, ...]]:
    """Every sub-module -> the names of its classes as ``transformers`` builds it (a
    :class:`Conv1DLinear` is ``transformers``' ``Conv1D`` there), in module order: what
    compressed-tensors' class targets (``Linear``) match."""
    out = {}
    for name, m in module.named_modules():
        if name:
            mro = ("Conv1D", "Module") if isinstance(m, Conv1DLinear) else type(m).__mro__
            out[name] = tuple(c if isinstance(c, str) else c.__name__ for c in mro)
    return out


def untie_heads(module: torch.nn.Module) -> dict[str, str]:
    """Each layer whose weight is an earlier layer's ``Parameter`` (a head tied to the
    embeddings) given a ``Parameter`` of its own, a copy (the same logits), and the config untied
    so that ``transformers`` never ties them again. Returns head -> embeddings (tensor names),
    also kept as ``module.lwdsl_tied``: ``export hf`` ties them again while they are equal."""
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, m in module.named_modules():
        w = m._parameters.get("weight")
        if not name or not isinstance(w, torch.nn.Parameter):
            continue
        if id(w) in first:
            m.weight = torch.nn.Parameter(w.detach().clone(), requires_grad=w.requires_grad)
            tied[f"{name}.weight"] = f"{first[id(w)]}.weight"
        else:
            first[id(w)] = name
    if tied:
        if getattr(getattr(module, "config", None), "tie_word_embeddings", False):
            module.config.tie_word_embeddings = False
        module.lwdsl_tied = {**getattr(module, "lwdsl_tied", {}), **tied}
    return tied


_CLASSES: dict[type, type] = {}


def takes_tokens(module: Any) -> bool:
    """Whether ``module`` takes token ids (int64 ``[batch, seq]``) rather than images."""
    return bool(getattr(module, "lwdsl_tokens", False))


def _logits_class(base: type) -> type:
    """``base`` (a ``transformers`` model class) whose ``forward(input_ids)`` returns the logits."""
    if base not in _CLASSES:
        causal = "CausalLM" in base.__name__

        def forward(self: Any, input_ids: torch.Tensor) -> torch.Tensor:
            kwargs = {"use_cache": False} if causal else {}
            return base.forward(self, input_ids=input_ids, return_dict=True, **kwargs).logits

        _CLASSES[base] = type(base.__name__, (base,), {"forward": forward, "lwdsl_tokens": True,
                                                       "__module__": __name__, "__doc__": base.__doc__})
    return _CLASSES[base]


def _import() -> Any:
    try:
        import transformers
    except ImportError:
        raise UsageError("transformer models need the transformers package", hint="pip install 'lwdsl[llm]'") from None
    return transformers




def build_hf(ref: str, input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    """``tiny-llama`` / ``tiny-bert`` / ``tiny-gpt2`` (``?key=value&...`` for other sizes), freshly initialised."""
    name, _, query = ref.partition("?")
    sizes = transformer_sizes(name, query)
    tf = _import()
    length = int(input_shape[0]) if input_shape else 0
    config_class, model_class, args = config_args(name, sizes, length, int(num_classes))  # the core's table
    model = _logits_class(getattr(tf, model_class))(getattr(tf, config_class)(**args))
    return _linear_conv1d(model) if name == "tiny-gpt2" else model


def read_hf_folder(folder: Path) -> tuple[torch.nn.Module, dict[str, Any], dict[str, torch.Tensor]]:
    """The model of a local Hugging Face folder: ``config.json`` (its ``architectures[0]``, a
    ``transformers`` class) and its safetensors weights, offline (never a download), a tied head
    untied; with a compressed-tensors ``quantization_config``, its quantized layers decoded by
    lwdsl (hf_import.py), their codes and scales (layer -> ``WeightQuant``) and the keep masks of
    the layers its ``sparsity_config`` names. A plain folder gives ``{}, {}``."""
    tf = _import()
    config = read_config_json(folder)
    arch = (config.get("architectures") or [None])[0]
    base = getattr(tf, arch, None) if isinstance(arch, str) else None
    if base is None or not isinstance(base, type):
        raise UsageError(f"{folder}/config.json: architectures[0] is {arch!r}, not a transformers model class",
                         hint="the folder must come from save_pretrained of a transformers model (e.g. LlamaForCausalLM)")
    qc = config.get("quantization_config")
    from .hf_import import decode_into, load_float

    try:
        model = load_float(folder, _logits_class(base), qc)
    except (OSError, ValueError, RuntimeError) as exc:
        lines = str(exc).strip().splitlines()
        raise UsageError(f"{folder}: transformers cannot load it ({lines[0][:300] if lines else type(exc).__name__})") from None
    warn_untied(f"--model {folder}", untie_heads(model))
    quant, keeps = decode_into(model, folder, qc, hf_classes(model)) if qc is not None else ({}, {})
    return _linear_conv1d(model), quant, keeps
