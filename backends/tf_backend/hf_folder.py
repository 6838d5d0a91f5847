"""A Hugging Face folder on the TensorFlow backend: ``export hf`` and ``--model FOLDER``, over
the core's flow (:mod:`lwdsl.backend.hf_folder`: the folder's bytes, its compressed-tensors
layout, what is read, refused and warned are decided there, the same as on torch).

Reading: ``config.json``'s ``architectures[0]`` is ``LlamaForCausalLM`` or ``GPT2LMHeadModel``;
the Keras model of hf.py is built from the config's sizes (:func:`build_from_config`: its norm
epsilon and rotary base; options the Keras model does not compute, such as grouped key/value
heads or rope scaling, are refused with the key) and the folder's tensors (read as numpy,
quantized layers decoded by the core, ``Conv1D`` weights ``[in, out]`` transposed to the
canonical ``[out, in]``) set into it. No ``transformers`` code runs: the config is JSON. A tied
head (``tie_word_embeddings``) is untied as on every backend (the core's rule,
:func:`lwdsl.backend.hf_folder.tied_head`): ``lm_head`` holds a copy of the embeddings, warned.

Writing: the state from the layer views (canonical names are Hugging Face's), ``Conv1D`` weights
transposed back, the config as ``transformers`` writes it (``transformers``' config class only,
no model code: ``to_dict()`` of the folder's config, or of :func:`lwdsl.backend.hf_folder.config_args`
for ``tiny-llama``/``tiny-gpt2``/``tiny-bert``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from lwdsl.backend import StepContext
from lwdsl.backend.hf_folder import (NOT_A_TRANSFORMER, HfModel, config_args, decode_folder, is_hf_folder, keep_masks,
                                     read_config_json, read_tensors, tied_head, warn_untied, write_folder)
from lwdsl.backend.transformer_sizes import transformer_sizes
from lwdsl.errors import UsageError
from lwdsl.language.specs import ExportSpec

from .handle import KerasHandle
from .hf import HF_NAMES, _gpt2, _llama
from .layers import views

__all__ = ["ARCHITECTURES", "is_hf_folder", "read_hf_folder", "read_hf_handle", "build_from_config", "hf_model", "write_hf"]

#: The ``transformers`` classes this backend builds from a folder -> (its config class, hf.py's model name).
ARCHITECTURES = {"LlamaForCausalLM": ("LlamaConfig", "tiny-llama"), "GPT2LMHeadModel": ("GPT2Config", "tiny-gpt2")}
_BUILT = {"tiny-llama": "LlamaForCausalLM", "tiny-gpt2": "GPT2LMHeadModel", "tiny-bert": "BertForSequenceClassification"}
#: GPT-2's ``Conv1D`` projections (weight ``[in, out]`` in a folder), by the end of their names.
CONV1D = (".attn.c_attn", ".attn.c_proj", ".mlp.c_fc", ".mlp.c_proj")


def _need(config: dict, key: str, where: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or value <= 0:
        raise UsageError(f"{where}: {key} is {value!r}, not a positive integer")
    return value


def _refuse_unless(config: dict, where: str, checks: dict[str, Any]) -> None:
    for key, ok in checks.items():
        value = config.get(key)
        if not ok(value):
            raise UsageError(f"{where}: {key}={value!r}, which the tensorflow backend's Keras model does not compute",
                             hint="use --backend torch for this model (transformers runs it there)")


def build_from_config(config: dict, arch: str, length: int, where: str) -> Any:
    """hf.py's Keras model at the sizes of a ``transformers`` config (weights still initial)."""
    if arch == "LlamaForCausalLM":
        hidden, heads = _need(config, "hidden_size", where), _need(config, "num_attention_heads", where)
        rope = config.get("rope_parameters") or {}
        theta = rope.get("rope_theta", config.get("rope_theta", 10000.0)) if isinstance(rope, dict) else None
        _refuse_unless(config, where, {
            "num_key_value_heads": lambda v: v in (None, heads), "hidden_act": lambda v: v in (None, "silu"),
            "attention_bias": lambda v: not v, "mlp_bias": lambda v: not v,
            "head_dim": lambda v: v in (None, hidden // heads), "rope_scaling": lambda v: not v,
            "rope_parameters": lambda v: not v or (isinstance(v, dict) and v.get("rope_type", "default") == "default")})
        sizes = {"hidden": hidden, "heads": heads, "layers": _need(config, "num_hidden_layers", where),
                 "mlp": _need(config, "intermediate_size", where)}
        return _llama(sizes, length, _need(config, "vocab_size", where), float(config.get("rms_norm_eps", 1e-6)),
                      float(theta))
    hidden = _need(config, "n_embd", where)
    positions = _need(config, "n_positions", where)
    if length > positions:
        raise UsageError(f"{where}: n_positions is {positions}; the data's sequences are {length} tokens",
                         hint=f"use sequences of at most {positions} tokens")
    _refuse_unless(config, where, {
        "activation_function": lambda v: v in (None, "gelu_new"), "scale_attn_weights": lambda v: v in (None, True),
        "scale_attn_by_inverse_layer_idx": lambda v: not v, "reorder_and_upcast_attn": lambda v: not v,
        "add_cross_attention": lambda v: not v})
    sizes = {"hidden": hidden, "heads": _need(config, "n_head", where), "layers": _need(config, "n_layer", where),
             "mlp": config.get("n_inner") or 4 * hidden, "positions": positions}
    return _gpt2(sizes, length, _need(config, "vocab_size", where), float(config.get("layer_norm_epsilon", 1e-5)))


def _arch(model: Any) -> Optional[str]:
    return _BUILT.get(model.name)


def _classes(model: Any, arch: str) -> dict[str, tuple[str, ...]]:
    """Each weighted layer's class names as ``transformers`` builds it (what compressed-tensors'
    ``Linear`` targets match), in model order."""
    out = {}
    for v in views(model):
        if v.kind == "linear":
            gpt2 = arch == "GPT2LMHeadModel" and v.name.endswith(CONV1D)
            out[v.name] = ("Conv1D", "Module") if gpt2 else ("Linear", "Module")
        else:
            out[v.name] = (type(v.layer).__name__, "Module")
    return out


def read_hf_folder(folder: Path, input_shape: tuple[int, ...]) -> tuple[Any, dict, dict, dict]:
    """The Keras model of a folder (module docstring), the codes and scales of its quantized
    layers (canonical), the keep masks of its sparse layers (canonical) and its config.

    Raises:
        UsageError: an architecture or option this backend does not build, a missing tensor or
            one of another shape, and everything the core refuses of a compressed folder.
    """
    where = f"{folder}/config.json"
    config = read_config_json(folder)
    arch = (config.get("architectures") or [None])[0]
    if arch not in ARCHITECTURES:
        raise UsageError(f"{where}: architectures[0] is {arch!r}; the tensorflow backend builds "
                         f"{' and '.join(ARCHITECTURES)} from a folder",
                         hint="use --backend torch for other transformers classes")
    if len(input_shape) != 1:
        raise UsageError(f"{folder} is a language model; it takes token sequences, not inputs of shape {tuple(input_shape)}",
                         hint="use it with text data (--data pydoc, or a text file)")
    model = build_from_config(config, arch, int(input_shape[0]), where)
    classes = _classes(model, arch)
    tensors = read_tensors(folder)
    vm = {v.name: v for v in views(model)}
    tied = {head: embeddings for head, embeddings in tied_head(config, arch).items() if embeddings in tensors}
    weights, quant, sparse = {}, {}, []
    if config.get("quantization_config") is not None:
        weights, quant, sparse = decode_folder(folder, config["quantization_config"], classes, tensors,
                                               lambda name: vm[name].weight.shape)
    state = {}
    for v in vm.values():
        for t in v.tensors:
            if t.name == f"{v.name}.weight" and v.name in weights:
                value = weights[v.name]
            elif t.name in tied:  # a copy of the embeddings, as transformers ties them (a stored head is theirs too)
                value = tensors[tied[t.name]]
            elif t.name in tensors:
                value = tensors[t.name]
                if t.name == f"{v.name}.weight" and classes[v.name][0] == "Conv1D":
                    value = value.T
            else:
                raise UsageError(f"{folder}: no tensor {t.name} in its *.safetensors for the model its config.json describes",
                                 hint="the folder is incomplete, or its config does not describe its weights")
            if tuple(value.shape) != tuple(t.shape):
                raise UsageError(f"{folder}: {t.name} is {tuple(value.shape)}; the model of its config.json needs {tuple(t.shape)}")
            state[t.name] = np.asarray(value, dtype=np.float32)
            t.variable.assign(np.ascontiguousarray(t.from_canon(state[t.name]), dtype=np.float32))
    keeps = keep_masks(sparse, lambda name: state[f"{name}.weight"])
    warn_untied(f"--model {folder}", tied)
    return model, quant, keeps, {k: v for k, v in config.items() if k != "quantization_config"}


def read_hf_handle(folder: Path, input_shape: tuple[int, ...]) -> KerasHandle:
    """A handle for a folder as ``--model``: its codes recorded as ``quantize`` records
    weight-only codes, its sparse layers' masks (Keras layout), its config kept for ``export hf``."""
    model, quant, keeps, config = read_hf_folder(folder, input_shape)
    handle = KerasHandle(model, ref=str(folder), hf_config=config)
    handle.qstate.weight_only(quant)
    vm = handle.view_map()
    for name, keep in keeps.items():
        handle.masks[name] = np.ascontiguousarray(vm[name].weight.from_canon(keep)).astype(bool)
    return handle


def _config(handle: KerasHandle, arch: str) -> dict:
    try:
        import transformers
    except ImportError:
        raise UsageError("export hf writes the transformers config: it needs the transformers package "
                         "(its config classes only)", hint="pip install 'lwdsl[llm]'") from None
    model = handle.model
    if handle.hf_config is not None:  # a folder: its config, as transformers reads and writes it
        conf = getattr(transformers, ARCHITECTURES[arch][0]).from_dict(dict(handle.hf_config)).to_dict()
    else:
        name, _, query = str(handle.ref).partition("?")
        head = model.get_layer("classifier" if arch == "BertForSequenceClassification" else "lm_head")
        config_class, _, args = config_args(name, transformer_sizes(name, query), int(model.inputs[0].shape[1]),
                                            int(head.units))
        conf = getattr(transformers, config_class)(**args).to_dict()
    conf["architectures"] = [arch]
    return conf


def hf_model(handle: KerasHandle) -> HfModel:
    """The handle's model as ``export hf`` writes it (masks applied)."""
    arch = _arch(handle.model)
    built = handle.hf_config is not None or str(handle.ref).partition("?")[0] in HF_NAMES
    if arch is None or not built:
        raise UsageError(f"export hf writes a Hugging Face transformers model; {handle.ref} is not one", hint=NOT_A_TRANSFORMER)
    handle.apply_masks()
    conf = _config(handle, arch)
    classes = _classes(handle.model, arch)
    state = {}
    for v in handle.views():
        for t in v.tensors:
            value = t.canonical()
            state[t.name] = np.ascontiguousarray(value.T if t.name == f"{v.name}.weight" and classes[v.name][0] == "Conv1D"
                                                 else value, dtype=np.float32)
    return HfModel(conf, state, classes, tied_head(handle.hf_config, arch) if handle.hf_config is not None else {})


def write_hf(handle: KerasHandle, path: Path, ctx: StepContext, spec: ExportSpec) -> None:
    """``export hf``: the core's folder from the Keras model."""
    model = hf_model(handle)
    vm = handle.view_map()
    masks = {n: np.ascontiguousarray(vm[n].weight.to_canon(k)).astype(bool) for n, k in handle.masks.items()}
    write_folder(model, Path(path), ctx, quant=handle.quant, masks=masks, acts=handle.qstate.input_quantized(),
                 casts=handle.qstate.casts,
                 cast_hint="`export tflite` writes float16 (fp16) weights", length=int(handle.model.inputs[0].shape[1]))
