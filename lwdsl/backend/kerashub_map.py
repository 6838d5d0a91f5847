"""KerasHub's Llama and GPT-2 as lwdsl's tiny-llama and tiny-gpt2, framework-free: the sizes read
from a KerasHub backbone's config and what is refused, the ``keras_hub:`` reference, and the
tables mapping KerasHub's variables to Hugging Face names; the tensorflow backend
(``backends/tf_backend/kerashub.py``) keeps only the Keras calls.

KerasHub (Keras 3) transformer models in and out of lwdsl's tensorflow backend: Llama and GPT-2.

lwdsl's tensorflow flows run on its own Keras tiny-llama (``backends/tf_backend/hf.py``: ``Dense`` layers and
norms with Hugging Face's names, whose canonical state is a ``transformers`` state dict). A
KerasHub model is brought to that network, and a compressed one taken back, by renaming and
reshaping its variables as KerasHub's own Hugging Face converter
(``keras_hub/src/utils/transformers/convert_llama3.py``) does, in both directions; the
functions are the same, logits equal within float32 rounding (tests/backends/test_tf_kerashub.py):

- :func:`from_keras_hub`: a ``keras_hub.models.LlamaBackbone`` (or ``Llama3Backbone``) or a
  ``LlamaCausalLM`` holding one -> lwdsl's tiny-llama of the sizes of its config (layers,
  hidden, heads, intermediate, vocabulary, rotary base, norm epsilon) with its weights, read as
  float32 whatever the KerasHub model's dtype; the user's object is only read. A tied head (``tie_word_embeddings=True``) becomes lwdsl's own
  ``lm_head`` holding a copy of the embeddings (the same logits; pruning it then leaves the
  embeddings alone; warned, as every tied head lwdsl loads: :mod:`lwdsl.backend.hf_folder`). What lwdsl's tiny-llama cannot compute is refused (:class:`UsageError`):
  fewer key/value heads than query heads (grouped-query attention), rotary scaling (Llama 3.1's
  frequency adjustment, position scaling), dropout, another KerasHub architecture. A
  ``GPT2Backbone`` / ``GPT2CausalLM`` likewise becomes lwdsl's tiny-gpt2 (convert_gpt2.py's
  mapping: q, k, v stacked into ``c_attn``'s rows; KerasHub's tied head becomes ``lm_head``).
- :func:`build_keras_hub`, the model reference ``keras_hub:...``: ``keras_hub:llama?layers=2&
  hidden=128&heads=4&mlp=512`` builds a ``LlamaCausalLM`` from that config (KerasHub's own
  initialisation, the run's seed; the vocabulary is the data's) and converts it;
  ``keras_hub:FOLDER`` loads a local preset folder (KerasHub's ``save_to_preset``, or a Hugging
  Face folder KerasHub's converter reads) with ``keras_hub.models.Backbone.from_preset``, its
  training dropout set to 0 (lwdsl's networks train without dropout; an object with dropout is
  refused instead, with how to rebuild it). Nothing is downloaded: a name that is not an existing
  folder is refused.
- :func:`to_keras_hub`: lwdsl's tiny-llama (a run's result handle or its Keras model) -> a
  ``keras_hub.models.LlamaCausalLM`` of the same config, untied, float32, no preprocessor,
  holding the weights as they are (pruned zeros, quantized layers as ``codes * scale``);
  tiny-gpt2 -> a ``GPT2CausalLM``, only where ``lm_head`` still equals ``transformer.wte``
  (KerasHub's GPT-2 has no untied head).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from lwdsl.errors import UsageError

__all__ = ["PREFIX", "CONFIG_KEYS", "HINT", "transpose", "llama_sizes", "gpt2_sizes", "llama_table", "gpt2_table",
           "check_inputs", "lwdsl_ref", "llama_config", "preset_folder", "check_tied_head", "llama_widths",
           "gpt2_widths"]

#: The model reference of a KerasHub model: ``keras_hub:llama?sizes`` or ``keras_hub:FOLDER``.
PREFIX = "keras_hub:"

#: ``keras_hub:llama?...`` keys -> LlamaBackbone arguments, and their defaults (lwdsl's tiny-llama's).
CONFIG_KEYS = {"layers": ("num_layers", 2), "hidden": ("hidden_dim", 128), "heads": ("num_query_heads", 4),
               "kv_heads": ("num_key_value_heads", None), "mlp": ("intermediate_dim", 512),
               "rope_base": ("rope_max_wavelength", 10000.0), "eps": ("layer_norm_epsilon", 1e-6)}

HINT = "pip install 'lwdsl[keras-hub]' (keras-hub, Keras 3)"

STRUCTURED = "unstructured pruning (prune magnitude/wanda/sparsegpt) keeps the shapes"


def transpose(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.T)


def gpt2_sizes(backbone: Any) -> dict[str, Any]:
    """The config of a ``GPT2Backbone`` (always a tied head; LayerNorm eps 1e-5 and ``gelu_new`` as tiny-gpt2's)."""
    if float(backbone.dropout or 0) != 0:
        raise UsageError(f"KerasHub {type(backbone).__name__}: lwdsl's tiny-gpt2 cannot compute dropout={backbone.dropout}",
                         hint="lwdsl's networks train without dropout: build it with dropout=0 (GPT2Backbone(..., dropout=0), "
                         "or GPT2Backbone.from_preset(FOLDER, dropout=0)); the logits are the same")
    hidden, heads = int(backbone.hidden_dim), int(backbone.num_heads)
    if hidden % heads:
        raise UsageError(f"KerasHub {type(backbone).__name__}: hidden_dim={hidden} is not a multiple of num_heads={heads}")
    return {"layers": int(backbone.num_layers), "hidden": hidden, "heads": heads, "mlp": int(backbone.intermediate_dim),
            "vocab": int(backbone.vocabulary_size), "positions": int(backbone.max_sequence_length), "tied": True}


def llama_sizes(backbone: Any) -> dict[str, Any]:
    """The config of a ``LlamaBackbone``, refused where lwdsl's tiny-llama computes something else."""
    name = type(backbone).__name__
    heads, kv = int(backbone.num_query_heads), int(backbone.num_key_value_heads)
    refusals = []
    if kv != heads:
        refusals.append(f"num_key_value_heads={kv} differs from num_query_heads={heads} (grouped-query attention)")
    if float(backbone.rope_position_scaling_factor) != 1.0:
        refusals.append(f"rope_position_scaling_factor={backbone.rope_position_scaling_factor} (rotary scaling)")
    for key in ("rope_frequency_adjustment_factor", "rope_low_freq_factor", "rope_high_freq_factor",
                "rope_pretraining_sequence_length"):
        if getattr(backbone, key, None) is not None:
            refusals.append(f"{key}={getattr(backbone, key)} (Llama 3.1's rotary scaling)")
    if float(backbone.dropout or 0) != 0:
        refusals.append(f"dropout={backbone.dropout}")
    if refusals:
        raise UsageError(f"KerasHub {name}: lwdsl's tiny-llama cannot compute {'; '.join(refusals)}",
                         hint="lwdsl's Llama has as many key/value heads as query heads, plain rotary positions "
                         "(any rope_max_wavelength) and no dropout (dropout=0 gives the same logits)")
    return {"layers": int(backbone.num_layers), "hidden": int(backbone.hidden_dim), "heads": heads,
            "mlp": int(backbone.intermediate_dim), "vocab": int(backbone.vocabulary_size),
            "base": float(backbone.rope_max_wavelength), "eps": float(backbone.layer_norm_epsilon),
            "tied": bool(getattr(backbone, "tie_word_embeddings", False))}


def llama_table(layers: int, hidden: int) -> list[tuple[str, str, Callable, Callable]]:
    """(KerasHub variable path, Hugging Face name, KerasHub -> canonical, canonical -> KerasHub
    given the KerasHub shape): convert_llama3.py's mapping and its inverse."""
    def qkv_in(a: np.ndarray) -> np.ndarray:  # [hidden, heads, d] -> [heads * d, hidden]
        return transpose(a.reshape(hidden, -1))

    def o_in(a: np.ndarray) -> np.ndarray:  # [heads, d, hidden] -> [hidden, heads * d]
        return transpose(a.reshape(-1, hidden))

    def back(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return transpose(a).reshape(shape)

    def same(a: np.ndarray, shape: tuple[int, ...] = ()) -> np.ndarray:
        return a

    rows = [("token_embedding/embeddings", "model.embed_tokens.weight", same, same),
            ("sequence_output_layernorm/scale", "model.norm.weight", same, same)]
    for i in range(layers):
        k, h = f"transformer_layer_{i}", f"model.layers.{i}"
        rows += [(f"{k}/self_attention_layernorm/scale", f"{h}.input_layernorm.weight", same, same),
                 (f"{k}/feedforward_layernorm/scale", f"{h}.post_attention_layernorm.weight", same, same),
                 (f"{k}/self_attention/query/kernel", f"{h}.self_attn.q_proj.weight", qkv_in, back),
                 (f"{k}/self_attention/key/kernel", f"{h}.self_attn.k_proj.weight", qkv_in, back),
                 (f"{k}/self_attention/value/kernel", f"{h}.self_attn.v_proj.weight", qkv_in, back),
                 (f"{k}/self_attention/attention_output/kernel", f"{h}.self_attn.o_proj.weight", o_in, back),
                 (f"{k}/feedforward_gate_dense/kernel", f"{h}.mlp.gate_proj.weight", transpose, back),
                 (f"{k}/feedforward_intermediate_dense/kernel", f"{h}.mlp.up_proj.weight", transpose, back),
                 (f"{k}/feedforward_output_dense/kernel", f"{h}.mlp.down_proj.weight", transpose, back)]
    return rows


def gpt2_table(layers: int, hidden: int) -> list[tuple[list[str], str, Callable, Callable]]:
    """(KerasHub variable paths, Hugging Face name, KerasHub -> canonical, canonical -> KerasHub
    shapes): convert_gpt2.py's mapping in lwdsl's canonical layout (``Conv1D`` as ``[out, in]``;
    ``c_attn``'s rows are q, k, v)."""
    def rows(*arrays: np.ndarray) -> np.ndarray:  # each [hidden, heads, d] -> [heads * d, hidden], stacked
        return np.concatenate([transpose(a.reshape(hidden, -1)) for a in arrays], axis=0)

    def flat(*arrays: np.ndarray) -> np.ndarray:
        return np.concatenate([a.reshape(-1) for a in arrays])

    def split_rows(a: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
        return [transpose(part).reshape(shape) for part, shape in zip(np.split(a, len(shapes), axis=0), shapes)]

    def split_flat(a: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
        return [part.reshape(shape) for part, shape in zip(np.split(a, len(shapes)), shapes)]

    def one(a: np.ndarray) -> np.ndarray:
        return a

    def one_back(a: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
        return [a.reshape(shape)]

    def t(a: np.ndarray) -> np.ndarray:
        return transpose(a.reshape(-1, a.shape[-1]))

    def t_back(a: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
        return [transpose(a).reshape(shape)]

    table = [(["token_embedding/embeddings"], "transformer.wte.weight", one, one_back),
             (["position_embedding/embeddings"], "transformer.wpe.weight", one, one_back),
             (["layer_norm/gamma"], "transformer.ln_f.weight", one, one_back),
             (["layer_norm/beta"], "transformer.ln_f.bias", one, one_back)]
    for i in range(layers):
        k, h = f"transformer_layer_{i}", f"transformer.h.{i}"
        qkv = [f"{k}/self_attention/{p}" for p in ("query", "key", "value")]
        table += [([f"{k}/self_attention_layer_norm/gamma"], f"{h}.ln_1.weight", one, one_back),
                  ([f"{k}/self_attention_layer_norm/beta"], f"{h}.ln_1.bias", one, one_back),
                  ([f"{p}/kernel" for p in qkv], f"{h}.attn.c_attn.weight", rows, split_rows),
                  ([f"{p}/bias" for p in qkv], f"{h}.attn.c_attn.bias", flat, split_flat),
                  ([f"{k}/self_attention/attention_output/kernel"], f"{h}.attn.c_proj.weight", t, t_back),
                  ([f"{k}/self_attention/attention_output/bias"], f"{h}.attn.c_proj.bias", one, one_back),
                  ([f"{k}/feedforward_layer_norm/gamma"], f"{h}.ln_2.weight", one, one_back),
                  ([f"{k}/feedforward_layer_norm/beta"], f"{h}.ln_2.bias", one, one_back),
                  ([f"{k}/feedforward_intermediate_dense/kernel"], f"{h}.mlp.c_fc.weight", t, t_back),
                  ([f"{k}/feedforward_intermediate_dense/bias"], f"{h}.mlp.c_fc.bias", one, one_back),
                  ([f"{k}/feedforward_output_dense/kernel"], f"{h}.mlp.c_proj.weight", t, t_back),
                  ([f"{k}/feedforward_output_dense/bias"], f"{h}.mlp.c_proj.bias", one, one_back)]
    return table


def check_inputs(name: str, sizes: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> None:
    """Refuse data a KerasHub model of ``sizes`` (class ``name``) cannot take: not token sequences,
    a vocabulary smaller than the data's, (GPT-2) fewer positions than the data's sequences."""
    if len(input_shape) != 1:
        raise UsageError(f"a KerasHub {name} takes token sequences, not inputs of shape {tuple(input_shape)}",
                         hint="use it with text data (--data pydoc, or a text file)")
    if sizes["vocab"] < int(num_classes):
        raise UsageError(f"KerasHub {name} has a vocabulary of {sizes['vocab']} tokens, the data "
                         f"{int(num_classes)}", hint="build the model with vocabulary_size at least the data's "
                         "(--data pydoc: 2048)")
    if "positions" in sizes and int(input_shape[0]) > sizes["positions"]:
        raise UsageError(f"KerasHub {name} has max_sequence_length={sizes['positions']}, the data's "
                         f"sequences {int(input_shape[0])} tokens", hint="build it with a max_sequence_length at least the data's")


def lwdsl_ref(sizes: dict[str, Any]) -> str:
    """lwdsl's own model reference (tiny-gpt2 where ``sizes`` has positions, else tiny-llama) of ``sizes``."""
    ref = f"layers={sizes['layers']}&hidden={sizes['hidden']}&heads={sizes['heads']}&mlp={sizes['mlp']}"
    return f"tiny-gpt2?{ref}&positions={sizes['positions']}" if "positions" in sizes else f"tiny-llama?{ref}"


def llama_config(ref: str, query: str) -> dict[str, Any]:
    """The ``LlamaBackbone`` arguments (vocabulary left out) of ``keras_hub:llama?query``, checked."""
    config = {arg: default for arg, default in CONFIG_KEYS.values()}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        try:
            number = float(value) if key in ("rope_base", "eps") else int(value)
        except ValueError:
            number = 0
        if key not in CONFIG_KEYS or not eq or not 0 < number < float("inf"):
            raise UsageError(f"{ref}: '{part}' is not a size of keras_hub:llama",
                             hint="sizes are positive numbers: " + ", ".join(f"{k}={v}" for k, (_, v) in CONFIG_KEYS.items()
                                                                               if v is not None) + ", kv_heads=heads")
        config[CONFIG_KEYS[key][0]] = number
    config["num_key_value_heads"] = config["num_key_value_heads"] or config["num_query_heads"]
    if config["hidden_dim"] % config["num_query_heads"] or (config["hidden_dim"] // config["num_query_heads"]) % 2:
        raise UsageError(f"{ref}: hidden={config['hidden_dim']} must be heads={config['num_query_heads']} times an even size")
    if config["num_query_heads"] % config["num_key_value_heads"]:
        raise UsageError(f"{ref}: heads={config['num_query_heads']} is not a multiple of kv_heads={config['num_key_value_heads']}")
    return config


def preset_folder(ref: str, name: str, query: str, body: str) -> Path:
    """The local preset folder of ``keras_hub:FOLDER``, refused where it is not one (nothing is downloaded)."""
    folder = Path(body)
    if not name or query or not folder.is_dir() or not (folder / "config.json").is_file():
        raise UsageError(f"'{ref}' is neither keras_hub:llama?SIZES nor a local KerasHub preset folder (with config.json)",
                         hint="keras_hub:llama?layers=2&hidden=128&heads=4&mlp=512, or keras_hub:PATH to a folder "
                         "written by save_to_preset (nothing is downloaded: Kaggle and Hugging Face names are not read)")
    return folder


def llama_widths(mlps: set[int], attention_widths: set[int], hidden: int) -> int:
    """The one MLP width of a tiny-llama KerasHub can hold, refused where structured pruning changed widths."""
    if len(mlps) != 1 or attention_widths != {hidden}:
        raise UsageError("KerasHub's Llama has one width for every layer; this model's were changed by structured "
                         f"pruning (MLP widths {sorted(mlps)}, attention widths {sorted(attention_widths)})",
                         hint=STRUCTURED)
    return next(iter(mlps))


def gpt2_widths(mlps: set[int], attention_widths: set[int], hidden: int) -> int:
    """The one MLP width of a tiny-gpt2 KerasHub can hold (``c_attn`` 3 * hidden wide)."""
    if len(mlps) != 1 or attention_widths != {3 * hidden}:
        raise UsageError("KerasHub's GPT-2 has one width for every layer; this model's were changed by structured pruning",
                         hint=STRUCTURED)
    return next(iter(mlps))


def check_tied_head(state: dict[str, np.ndarray]) -> None:
    """KerasHub's GPT2CausalLM ties its head to ``wte``: refused unless ``lm_head`` equals it."""
    if not np.array_equal(state["lm_head.weight"], state["transformer.wte.weight"]):
        raise UsageError("KerasHub's GPT2CausalLM ties its head to the token embeddings; this model's lm_head is not "
                         "transformer.wte (tiny-gpt2's own untied head, or a head compressed or trained apart)",
                         hint="start from a KerasHub GPT-2 and keep its head as it came: except \"lm_head\" in every step")
