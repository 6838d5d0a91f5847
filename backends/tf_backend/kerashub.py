"""KerasHub (Keras 3) transformer models in and out of lwdsl's tensorflow backend: Llama and GPT-2.

lwdsl's tensorflow flows run on its own Keras tiny-llama (:mod:`.hf`: ``Dense`` layers and
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
  embeddings alone). What lwdsl's tiny-llama cannot compute is refused (:class:`UsageError`):
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

from ._tf import keras
from .hf import RMSNorm, SelfAttention, build_hf
from .layers import load_state_into, state_of

__all__ = ["PREFIX", "is_keras_hub", "from_keras_hub", "build_keras_hub", "to_keras_hub", "hub_state"]

#: The model reference of a KerasHub model: ``keras_hub:llama?sizes`` or ``keras_hub:FOLDER``.
PREFIX = "keras_hub:"

#: ``keras_hub:llama?...`` keys -> LlamaBackbone arguments, and their defaults (lwdsl's tiny-llama's).
CONFIG_KEYS = {"layers": ("num_layers", 2), "hidden": ("hidden_dim", 128), "heads": ("num_query_heads", 4),
               "kv_heads": ("num_key_value_heads", None), "mlp": ("intermediate_dim", 512),
               "rope_base": ("rope_max_wavelength", 10000.0), "eps": ("layer_norm_epsilon", 1e-6)}

HINT = "pip install 'lwdsl[keras-hub]' (keras-hub, Keras 3)"


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


def _gpt2_sizes(backbone: Any) -> dict[str, Any]:
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


def _sizes(backbone: Any) -> dict[str, Any]:
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


def _transpose(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.T)


def _table(layers: int, hidden: int) -> list[tuple[str, str, Callable, Callable]]:
    """(KerasHub variable path, Hugging Face name, KerasHub -> canonical, canonical -> KerasHub
    given the KerasHub shape): convert_llama3.py's mapping and its inverse."""
    def qkv_in(a: np.ndarray) -> np.ndarray:  # [hidden, heads, d] -> [heads * d, hidden]
        return _transpose(a.reshape(hidden, -1))

    def o_in(a: np.ndarray) -> np.ndarray:  # [heads, d, hidden] -> [hidden, heads * d]
        return _transpose(a.reshape(-1, hidden))

    def back(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return _transpose(a).reshape(shape)

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
                 (f"{k}/feedforward_gate_dense/kernel", f"{h}.mlp.gate_proj.weight", _transpose, back),
                 (f"{k}/feedforward_intermediate_dense/kernel", f"{h}.mlp.up_proj.weight", _transpose, back),
                 (f"{k}/feedforward_output_dense/kernel", f"{h}.mlp.down_proj.weight", _transpose, back)]
    return rows


def _variables(backbone: Any) -> dict[str, Any]:
    return {v.path.split("/", 1)[1] if v.path.startswith(backbone.name + "/") else v.path: v for v in backbone.weights}


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
    if _is_gpt2(backbone):
        return _gpt2_state(backbone)
    sizes = _sizes(backbone)
    found = _variables(backbone)
    state = {}
    for path, name, to_canon, _ in _table(sizes["layers"], sizes["hidden"]):
        if path not in found:
            raise UsageError(f"KerasHub {type(backbone).__name__} has no variable '{path}' (KerasHub's Llama layout)",
                             hint="build the model with keras_hub.models.LlamaBackbone (keras-hub 0.32)")
        state[name] = to_canon(np.asarray(keras.ops.convert_to_numpy(found[path].value), dtype=np.float32))
    embedding = backbone.get_layer("token_embedding")
    if sizes["tied"]:
        state["lm_head.weight"] = state["model.embed_tokens.weight"].copy()
    else:
        state["lm_head.weight"] = _transpose(np.asarray(keras.ops.convert_to_numpy(embedding.reverse_embeddings.value), np.float32))
    return state


def _gpt2_table(layers: int, hidden: int) -> list[tuple[list[str], str, Callable, Callable]]:
    """(KerasHub variable paths, Hugging Face name, KerasHub -> canonical, canonical -> KerasHub
    shapes): convert_gpt2.py's mapping in lwdsl's canonical layout (``Conv1D`` as ``[out, in]``;
    ``c_attn``'s rows are q, k, v)."""
    def rows(*arrays: np.ndarray) -> np.ndarray:  # each [hidden, heads, d] -> [heads * d, hidden], stacked
        return np.concatenate([_transpose(a.reshape(hidden, -1)) for a in arrays], axis=0)

    def flat(*arrays: np.ndarray) -> np.ndarray:
        return np.concatenate([a.reshape(-1) for a in arrays])

    def split_rows(a: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
        return [_transpose(part).reshape(shape) for part, shape in zip(np.split(a, len(shapes), axis=0), shapes)]

    def split_flat(a: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
        return [part.reshape(shape) for part, shape in zip(np.split(a, len(shapes)), shapes)]

    def one(a: np.ndarray) -> np.ndarray:
        return a

    def one_back(a: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
        return [a.reshape(shape)]

    def t(a: np.ndarray) -> np.ndarray:
        return _transpose(a.reshape(-1, a.shape[-1]))

    def t_back(a: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
        return [_transpose(a).reshape(shape)]

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


def _gpt2_state(backbone: Any) -> dict[str, np.ndarray]:
    """The canonical state of lwdsl's tiny-gpt2 from a KerasHub GPT-2 (``lm_head`` = ``wte``, KerasHub's tied head)."""
    sizes = _gpt2_sizes(backbone)
    found = _variables(backbone)
    state = {}
    for paths, name, to_canon, _ in _gpt2_table(sizes["layers"], sizes["hidden"]):
        missing = [p for p in paths if p not in found]
        if missing:
            raise UsageError(f"KerasHub {type(backbone).__name__} has no variable '{missing[0]}' (KerasHub's GPT-2 layout)",
                             hint="build the model with keras_hub.models.GPT2Backbone (keras-hub 0.32)")
        state[name] = to_canon(*(np.asarray(keras.ops.convert_to_numpy(found[p].value), np.float32) for p in paths))
    state["lm_head.weight"] = state["transformer.wte.weight"].copy()
    return state


def _lwdsl_llama(sizes: dict[str, Any], length: int) -> Any:
    """lwdsl's tiny-llama of ``sizes`` for sequences of ``length``, with its rotary base and norm epsilon."""
    ref = f"tiny-llama?layers={sizes['layers']}&hidden={sizes['hidden']}&heads={sizes['heads']}&mlp={sizes['mlp']}"
    model = build_hf(ref, (length,), sizes["vocab"])
    for layer in model.layers:  # plain attributes read in call: set before the model first runs
        if isinstance(layer, RMSNorm):
            layer.eps = sizes["eps"]
        elif isinstance(layer, SelfAttention):
            layer.base = sizes["base"]
    return model


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
    sizes = _gpt2_sizes(backbone) if _is_gpt2(backbone) else _sizes(backbone)
    if len(input_shape) != 1:
        raise UsageError(f"a KerasHub {type(backbone).__name__} takes token sequences, not inputs of shape {tuple(input_shape)}",
                         hint="use it with text data (--data pydoc, or a text file)")
    if sizes["vocab"] < int(num_classes):
        raise UsageError(f"KerasHub {type(backbone).__name__} has a vocabulary of {sizes['vocab']} tokens, the data "
                         f"{int(num_classes)}", hint="build the model with vocabulary_size at least the data's "
                         "(--data pydoc: 2048)")
    state = hub_state(backbone)
    if _is_gpt2(backbone):
        if int(input_shape[0]) > sizes["positions"]:
            raise UsageError(f"KerasHub {type(backbone).__name__} has max_sequence_length={sizes['positions']}, the data's "
                             f"sequences {int(input_shape[0])} tokens", hint="build it with a max_sequence_length at least the data's")
        ref = (f"tiny-gpt2?layers={sizes['layers']}&hidden={sizes['hidden']}&heads={sizes['heads']}&mlp={sizes['mlp']}"
               f"&positions={sizes['positions']}")
        out = build_hf(ref, (int(input_shape[0]),), sizes["vocab"])
    else:
        out = _lwdsl_llama(sizes, int(input_shape[0]))
    load_state_into(out, state, f"KerasHub {type(backbone).__name__}")
    return out


def build_keras_hub(ref: str, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """The model of a ``keras_hub:`` reference (see the module's doc), as lwdsl's tiny-llama (or
    tiny-gpt2, for a GPT-2 preset folder)."""
    kh = _keras_hub()
    body = ref[len(PREFIX):] if ref.startswith(PREFIX) else ref
    name, _, query = body.partition("?")
    if name == "llama":
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
        backbone = kh.models.LlamaBackbone(vocabulary_size=int(num_classes), dtype="float32", **config)
        return from_keras_hub(kh.models.LlamaCausalLM(backbone=backbone, preprocessor=None), input_shape, num_classes)
    folder = Path(body)
    if not name or query or not folder.is_dir() or not (folder / "config.json").is_file():
        raise UsageError(f"'{ref}' is neither keras_hub:llama?SIZES nor a local KerasHub preset folder (with config.json)",
                         hint="keras_hub:llama?layers=2&hidden=128&heads=4&mlp=512, or keras_hub:PATH to a folder "
                         "written by save_to_preset (nothing is downloaded: Kaggle and Hugging Face names are not read)")
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
    embed = names["model.embed_tokens"]
    mlps = {int(names[f"model.layers.{i}.mlp.gate_proj"].units) for i in range(layers)}
    hidden_widths = {int(names[f"model.layers.{i}.self_attn.{p}_proj"].units) for i in range(layers) for p in "qkv"}
    if len(mlps) != 1 or hidden_widths != {int(embed.output_dim)}:
        raise UsageError("KerasHub's Llama has one width for every layer; this model's were changed by structured "
                         f"pruning (MLP widths {sorted(mlps)}, attention widths {sorted(hidden_widths)})",
                         hint="unstructured pruning (prune magnitude/wanda/sparsegpt) keeps the shapes")
    return {"vocabulary_size": int(names["lm_head"].units), "num_layers": layers, "num_query_heads": attention.heads,
            "num_key_value_heads": attention.heads, "hidden_dim": int(embed.output_dim), "intermediate_dim": mlps.pop(),
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
    for path, name, _, from_canon in _table(config["num_layers"], config["hidden_dim"]):
        var = found[path]
        var.assign(from_canon(state[name], tuple(var.shape)).astype(np.float32))
    backbone.get_layer("token_embedding").reverse_embeddings.assign(_transpose(state["lm_head.weight"]))
    return kh.models.LlamaCausalLM(backbone=backbone, preprocessor=None)


def _gpt2_to_keras_hub(kh: Any, net: Any) -> Any:
    """lwdsl's tiny-gpt2 as a ``GPT2CausalLM``, whose head is always ``wte``: refused unless ``lm_head`` equals it."""
    names = {layer.name: layer for layer in net.layers}
    state = state_of(net)
    if not np.array_equal(state["lm_head.weight"], state["transformer.wte.weight"]):
        raise UsageError("KerasHub's GPT2CausalLM ties its head to the token embeddings; this model's lm_head is not "
                         "transformer.wte (tiny-gpt2's own untied head, or a head compressed or trained apart)",
                         hint="start from a KerasHub GPT-2 and keep its head as it came: except \"lm_head\" in every step")
    layers = sum(1 for n in names if n.startswith("transformer.h.") and n.endswith(".ln_1"))
    mlps = {int(names[f"transformer.h.{i}.mlp.c_fc"].units) for i in range(layers)}
    embed = names["transformer.wte"]
    if len(mlps) != 1 or {int(names[f"transformer.h.{i}.attn.c_attn"].units) for i in range(layers)} != {3 * int(embed.output_dim)}:
        raise UsageError("KerasHub's GPT-2 has one width for every layer; this model's were changed by structured pruning",
                         hint="unstructured pruning (prune magnitude/wanda/sparsegpt) keeps the shapes")
    backbone = kh.models.GPT2Backbone(vocabulary_size=int(embed.input_dim), num_layers=layers,
                                      num_heads=names["transformer.h.0.attn"].heads, hidden_dim=int(embed.output_dim),
                                      intermediate_dim=mlps.pop(), dropout=0.0,
                                      max_sequence_length=int(names["transformer.wpe"].input_dim), dtype="float32")
    found = _variables(backbone)
    for paths, name, _, back in _gpt2_table(layers, int(embed.output_dim)):
        for path, part in zip(paths, back(state[name], *(tuple(found[p].shape) for p in paths))):
            found[path].assign(part.astype(np.float32))
    return kh.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
