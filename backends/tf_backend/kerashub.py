"""KerasHub (Keras 3) transformer models in and out of lwdsl's tensorflow backend: Llama and GPT-2,
by renaming and reshaping their variables (:func:`from_keras_hub`, :func:`build_keras_hub` for
``keras_hub:...``, :func:`to_keras_hub`). What is read, refused and how each variable maps:
:mod:`lwdsl.backend.kerashub_map`; only the Keras calls are here."""

from __future__ import annotations

from typing import Any

import numpy as np

from lwdsl.backend.hf_folder import TIED, warn_untied
from lwdsl.backend.kerashub_map import (HINT, PREFIX, check_inputs, check_tied_head, gpt2_sizes, gpt2_table,
                                        gpt2_widths, llama_config, llama_sizes, llama_table, llama_widths, lwdsl_ref,
                                        preset_folder, transpose)
from lwdsl.errors import UsageError

from ._tf import keras
from .hf import RMSNorm, SelfAttention, build_hf
from .layers import load_state_into, state_of

__all__ = ["PREFIX", "is_keras_hub", "from_keras_hub", "build_keras_hub", "to_keras_hub", "hub_state"]


def _keras_hub() -> Any:
    try:
        import keras_hub
    except ImportError:
        raise UsageError("KerasHub models need the keras-hub package", hint=HINT) from None
    return keras_hub


def is_keras_hub(obj: Any) -> bool:
    """Whether ``obj`` is a KerasHub model object (read from its class, without importing KerasHub)."""
    return any(c.__module__.split(".")[0] == "keras_hub" for c in type(obj).__mro__)


def _backbone(model: Any) -> Any:
    """The ``LlamaBackbone`` or ``GPT2Backbone`` of ``model`` (a backbone, or a task holding one), else a UsageError."""
    kh = _keras_hub()
    backbone = getattr(model, "backbone", model)
    if not isinstance(backbone, (kh.models.LlamaBackbone, kh.models.GPT2Backbone)):
        raise UsageError(f"lwdsl cannot convert a KerasHub {type(model).__name__} (backbone {type(backbone).__name__})",
                         hint="lwdsl's tensorflow backend takes KerasHub's LlamaBackbone / Llama3Backbone / GPT2Backbone "
                         "and their CausalLM tasks; other architectures: through transformers on --backend torch")
    return backbone


def _is_gpt2(backbone: Any) -> bool:
    return isinstance(backbone, _keras_hub().models.GPT2Backbone)


def _variables(backbone: Any) -> dict[str, Any]:
    return {v.path.split("/", 1)[1] if v.path.startswith(backbone.name + "/") else v.path: v for v in backbone.weights}


def _numpy(var: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(var.value), dtype=np.float32)


def hub_state(model: Any) -> dict[str, np.ndarray]:
    """The canonical state (``transformers``' ``LlamaForCausalLM`` / ``GPT2LMHeadModel`` names,
    ``Conv1D`` as ``[out, in]``) of a KerasHub Llama or GPT-2, float32; ``lm_head.weight`` is the
    embeddings where the head is tied (always, for GPT-2).

    >>> import keras_hub  # doctest: +SKIP
    >>> hub_state(keras_hub.models.LlamaBackbone(vocabulary_size=10, num_layers=1, num_query_heads=2,
    ...     hidden_dim=8, intermediate_dim=16, num_key_value_heads=2))["lm_head.weight"].shape  # doctest: +SKIP
    (10, 8)
    """
    backbone = _backbone(model)
    gpt2 = _is_gpt2(backbone)
    sizes = gpt2_sizes(backbone) if gpt2 else llama_sizes(backbone)
    table = (gpt2_table if gpt2 else lambda n, h: [([p], name, a, b) for p, name, a, b in llama_table(n, h)])
    found = _variables(backbone)
    state = {}
    for paths, name, to_canon, _ in table(sizes["layers"], sizes["hidden"]):
        missing = [p for p in paths if p not in found]
        if missing:
            arch, cls = ("GPT-2", "GPT2Backbone") if gpt2 else ("Llama", "LlamaBackbone")
            raise UsageError(f"KerasHub {type(backbone).__name__} has no variable '{missing[0]}' (KerasHub's {arch} layout)",
                             hint=f"build the model with keras_hub.models.{cls} (keras-hub 0.32)")
        state[name] = to_canon(*(_numpy(found[p]) for p in paths))
    head, embeddings = TIED["GPT2LMHeadModel" if gpt2 else "LlamaForCausalLM"]
    if sizes["tied"]:  # a copy: lwdsl unties a tied head (lwdsl/backend/hf_folder.py)
        state[head] = state[embeddings].copy()
    else:
        state["lm_head.weight"] = transpose(_numpy(backbone.get_layer("token_embedding").reverse_embeddings))
    return state


def from_keras_hub(model: Any, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """lwdsl's Keras tiny-llama (tiny-gpt2) holding a KerasHub Llama's (GPT-2's) weights (the
    KerasHub object is only read).

    Args:
        model: a ``keras_hub.models.LlamaBackbone`` or a ``LlamaCausalLM`` (or their Llama 3
            classes), a ``GPT2Backbone`` or a ``GPT2CausalLM``.
        input_shape: ``(seq,)``, the data's token sequences.
        num_classes: the data's vocabulary; the model's must hold it.

    Returns:
        A functional Keras model ``input_ids [batch, seq] -> logits [batch, seq, vocab]``.

    Raises:
        UsageError: (exit 2) not a Llama or GPT-2, a config lwdsl's networks cannot compute, a
            vocabulary smaller than the data's (GPT-2: positions fewer than its sequences),
            inputs that are not token sequences.
    """
    backbone = _backbone(model)
    sizes = gpt2_sizes(backbone) if _is_gpt2(backbone) else llama_sizes(backbone)
    check_inputs(type(backbone).__name__, sizes, input_shape, num_classes)
    state = hub_state(backbone)
    out = build_hf(lwdsl_ref(sizes), (int(input_shape[0]),), sizes["vocab"])
    for layer in out.layers if "eps" in sizes else ():  # plain attributes read in call: set before the model first runs
        if isinstance(layer, RMSNorm):
            layer.eps = sizes["eps"]
        elif isinstance(layer, SelfAttention):
            layer.base = sizes["base"]
    load_state_into(out, state, f"KerasHub {type(backbone).__name__}")
    if sizes["tied"]:
        gpt2 = _is_gpt2(backbone)
        head, embeddings = TIED["GPT2LMHeadModel" if gpt2 else "LlamaForCausalLM"]
        warn_untied(f"KerasHub {type(backbone).__name__}", {head: embeddings},
                    "to_keras_hub gives a GPT2CausalLM back while they are equal" if gpt2
                    else "to_keras_hub gives an untied LlamaCausalLM back")
    return out


def build_keras_hub(ref: str, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """The model of a ``keras_hub:`` reference (see the module's doc), as lwdsl's tiny-llama (or
    tiny-gpt2, for a GPT-2 preset folder)."""
    kh = _keras_hub()
    body = ref[len(PREFIX):] if ref.startswith(PREFIX) else ref
    name, _, query = body.partition("?")
    if name == "llama":
        backbone = kh.models.LlamaBackbone(vocabulary_size=int(num_classes), dtype="float32", **llama_config(ref, query))
        return from_keras_hub(kh.models.LlamaCausalLM(backbone=backbone, preprocessor=None), input_shape, num_classes)
    folder = preset_folder(ref, name, query, body)
    try:
        backbone = kh.models.Backbone.from_preset(str(folder), dropout=0.0)  # training-only; lwdsl trains without it
    except (ValueError, KeyError, OSError) as exc:
        raise UsageError(f"{folder}: KerasHub cannot load it ({str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__})") from None
    return from_keras_hub(backbone, input_shape, num_classes)


def _llama_config(model: Any) -> dict[str, Any]:
    """The sizes of lwdsl's tiny-llama ``model`` (a Keras model built by :mod:`.hf`), read from its layers."""
    names = {layer.name: layer for layer in model.layers}
    if "model.embed_tokens" not in names or "lm_head" not in names:
        raise UsageError(f"to_keras_hub takes lwdsl's tiny-llama or tiny-gpt2 (Keras models with Hugging Face's names), not "
                         f"model '{model.name}'", hint="run the recipe on tiny-llama or a KerasHub Llama (--backend tensorflow)")
    layers = sum(1 for n in names if n.startswith("model.layers.") and n.endswith(".input_layernorm"))
    attention = names["model.layers.0.self_attn"]
    hidden = int(names["model.embed_tokens"].output_dim)
    mlp = llama_widths({int(names[f"model.layers.{i}.mlp.gate_proj"].units) for i in range(layers)},
                       {int(names[f"model.layers.{i}.self_attn.{p}_proj"].units) for i in range(layers) for p in "qkv"}, hidden)
    return {"vocabulary_size": int(names["lm_head"].units), "num_layers": layers, "num_query_heads": attention.heads,
            "num_key_value_heads": attention.heads, "hidden_dim": hidden, "intermediate_dim": mlp,
            "rope_max_wavelength": attention.base, "layer_norm_epsilon": names["model.norm"].eps}


def to_keras_hub(model: Any) -> Any:
    """lwdsl's tiny-llama as a ``keras_hub.models.LlamaCausalLM`` with its weights (untied, float32,
    no preprocessor: it takes ``{"token_ids", "padding_mask"}`` and returns the logits);
    tiny-gpt2 as a ``GPT2CausalLM`` where its head is still its token embeddings.

    Args:
        model: a tensorflow run's result (``lwdsl.run(...).model``, a handle) or its Keras model.

    Raises:
        UsageError: (exit 2) not lwdsl's tiny-llama or tiny-gpt2, widths KerasHub cannot hold,
            a GPT-2 head that is not its embeddings.

    >>> hub = to_keras_hub(lwdsl.run("prune magnitude 50%", "tiny-llama", data="pydoc",  # doctest: +SKIP
    ...                              backend="tensorflow").model)
    """
    kh = _keras_hub()
    net = getattr(model, "model", model)
    if not isinstance(net, keras.Model):
        raise UsageError(f"to_keras_hub takes a tensorflow run's model, not a {type(model).__name__}")
    if "transformer.wte" in {layer.name for layer in net.layers}:
        return _gpt2_to_keras_hub(kh, net)
    config = _llama_config(net)
    state = state_of(net)
    backbone = kh.models.LlamaBackbone(tie_word_embeddings=False, dtype="float32", **config)
    found = _variables(backbone)
    for path, name, _, from_canon in llama_table(config["num_layers"], config["hidden_dim"]):
        var = found[path]
        var.assign(from_canon(state[name], tuple(var.shape)).astype(np.float32))
    backbone.get_layer("token_embedding").reverse_embeddings.assign(transpose(state["lm_head.weight"]))
    return kh.models.LlamaCausalLM(backbone=backbone, preprocessor=None)


def _gpt2_to_keras_hub(kh: Any, net: Any) -> Any:
    """lwdsl's tiny-gpt2 as a ``GPT2CausalLM``, whose head is always ``wte``: refused unless ``lm_head`` equals it."""
    names = {layer.name: layer for layer in net.layers}
    state = state_of(net)
    check_tied_head(state)
    layers = sum(1 for n in names if n.startswith("transformer.h.") and n.endswith(".ln_1"))
    embed = names["transformer.wte"]
    mlp = gpt2_widths({int(names[f"transformer.h.{i}.mlp.c_fc"].units) for i in range(layers)},
                      {int(names[f"transformer.h.{i}.attn.c_attn"].units) for i in range(layers)}, int(embed.output_dim))
    backbone = kh.models.GPT2Backbone(vocabulary_size=int(embed.input_dim), num_layers=layers,
                                      num_heads=names["transformer.h.0.attn"].heads, hidden_dim=int(embed.output_dim),
                                      intermediate_dim=mlp, dropout=0.0,
                                      max_sequence_length=int(names["transformer.wpe"].input_dim), dtype="float32")
    found = _variables(backbone)
    for paths, name, _, back in gpt2_table(layers, int(embed.output_dim)):
        for path, part in zip(paths, back(state[name], *(tuple(found[p].shape) for p in paths))):
            found[path].assign(part.astype(np.float32))
    return kh.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
