"""A Hugging Face folder, written (``export hf``) and read (``--model FOLDER``) once for every backend.

``export hf`` (:func:`write_folder`): the folder holds ``config.json`` (the model's
``transformers`` config, ``architectures`` its class: ``LlamaForCausalLM``, ``GPT2LMHeadModel``,
...), ``model.safetensors`` (every tensor of the state, float32 (quantized layers packed, below),
with masks applied; a head tied in the model read stored once while it equals the embeddings,
as ``save_pretrained`` does (below); GPT-2's projections in
``transformers``' ``Conv1D`` layout ``[in, out]``) and, with ``--data pydoc`` (or any data whose
report names a ``tokenizers`` file), ``tokenizer.json`` with a ``tokenizer_config.json`` for
``PreTrainedTokenizerFast``. A backend gives an :class:`HfModel` (config, state as
``transformers`` names and lays it out, each module's class names) and its quantization state;
everything else is decided here, so both backends write the same bytes from the same weights
and codes (``safetensors.numpy``; ``AutoModelForCausalLM.from_pretrained(folder)`` gives the
logits lwdsl evaluates).

Quantized layers (``quantize int4|int8|int2|ternary|binary``, per channel, per tensor or
``group=G``) are stored in compressed-tensors' ``pack-quantized`` layout with lwdsl's own codes
and scales (:mod:`lwdsl.semantics.hf_format`), so ``transformers`` + ``compressed-tensors`` load
them and compute ``codes * scale`` exactly. A quantized layer compressed-tensors cannot hold
(GPT-2's ``Conv1D``: compressed-tensors packs ``nn.Linear`` only; a clustered layer; a row that
is not whole groups) is stored dequantized (float32 ``codes * scale``) and named in a warning,
as are activation quantization (not written: weight-only) and cast layers (float32). With
nothing quantized the folder is the plain float32 one, no ``quantization_config``. The folder is
written beside its final name and renamed into place.

Reading (:func:`read_tensors`, :func:`decode_folder`, :func:`keep_masks`): every tensor of the
folder's ``*.safetensors`` as numpy (:mod:`lwdsl.semantics.safetensors_read`: bfloat16 scales
widened exactly); with a compressed-tensors ``quantization_config``, each quantized layer's
codes and scales decoded by the core (which schemes are read, which refused and why:
``hf_format``), its weight ``f32(code) * scale``, the codes kept for the handle's quantization
state except where lwdsl's state cannot hold them (warned), and keep masks for the layers the
``sparsity_config`` names where their weights are zero. The backend builds its model from the
config and loads these weights.

A tied head (``tie_word_embeddings``: GPT-2's default; a ``transformers`` model whose head
shares the embeddings' parameter; a KerasHub GPT-2 or tied Llama) is untied on load, on every
backend: the head becomes a tensor of its own holding a copy of the embeddings (the same logits),
so a step on ``lm_head`` (quantize, prune, training) never changes the embeddings, and a
:class:`~lwdsl.errors.LoadWarning` (:func:`warn_untied`) says so (a run's baseline row holds it).
``export hf`` ties them again while the head equals the embeddings bit for bit (one tensor,
``tie_word_embeddings`` true); once they differ it writes both, says false, and warns.

The tiny models' configs (:func:`config_args`) are one table too: the torch backend builds its
``transformers`` model from them, the TensorFlow backend writes them into ``config.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from ..errors import LoadWarning, UsageError
from ..semantics import hf_format
from ..semantics.codes import WeightQuant
from ..semantics.safetensors_read import read_safetensors
from .context import StepContext
from .steps import float_kernels_warning

__all__ = ["HfModel", "config_args", "write_folder", "read_config_json", "read_tensors", "compressed_names",
           "decode_folder", "keep_masks", "NOT_A_TRANSFORMER", "is_hf_folder", "TIED", "tied_head", "warn_untied"]

#: What ``export hf`` says of a model that is not a ``transformers`` one.
NOT_A_TRANSFORMER = "export hf goes with tiny-llama, tiny-bert, tiny-gpt2 or a Hugging Face folder as --model"

#: The head and the input embeddings a ``tie_word_embeddings`` config ties, by ``transformers`` class.
TIED = {"LlamaForCausalLM": ("lm_head.weight", "model.embed_tokens.weight"),
        "GPT2LMHeadModel": ("lm_head.weight", "transformer.wte.weight")}

#: The local names of a compressed layer's tensors (and an int8 ``weight`` of naive-quantized).
_LOCAL = ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point", "weight_g_idx", "weight")


def is_hf_folder(ref: Any) -> bool:
    """A folder holding ``config.json`` (a Hugging Face model folder)."""
    try:
        return Path(ref).is_dir() and (Path(ref) / "config.json").is_file()
    except (OSError, TypeError, ValueError):
        return False


def config_args(name: str, sizes: Mapping[str, int], length: int, classes: int) -> tuple[str, str, dict[str, Any]]:
    """The ``transformers`` config class, model class and config arguments of ``tiny-llama``,
    ``tiny-gpt2`` or ``tiny-bert`` at ``sizes`` (:mod:`lwdsl.backend.transformer_sizes`), for
    sequences of ``length`` (the positions grow to it) and ``classes`` (the vocabulary of a causal
    LM, the labels of BERT's classifier). Untied heads; GPT-2 without dropout.

    >>> config_args("tiny-llama", {"hidden": 8, "layers": 1, "heads": 2, "mlp": 16, "positions": 4}, 8, 32)[:2]
    ('LlamaConfig', 'LlamaForCausalLM')
    """
    positions = max(int(sizes["positions"]), int(length))
    common = dict(hidden_size=sizes["hidden"], num_hidden_layers=sizes["layers"], num_attention_heads=sizes["heads"],
                  intermediate_size=sizes["mlp"], max_position_embeddings=positions)
    if name == "tiny-llama":
        return "LlamaConfig", "LlamaForCausalLM", dict(vocab_size=int(classes), num_key_value_heads=sizes["heads"],
                                                       tie_word_embeddings=False, **common)
    if name == "tiny-gpt2":
        return "GPT2Config", "GPT2LMHeadModel", dict(
            vocab_size=int(classes), n_positions=positions, n_embd=sizes["hidden"], n_layer=sizes["layers"],
            n_head=sizes["heads"], n_inner=sizes["mlp"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            tie_word_embeddings=False, bos_token_id=None, eos_token_id=None)
    if name == "tiny-bert":
        return "BertConfig", "BertForSequenceClassification", dict(vocab_size=sizes["vocab"], num_labels=int(classes),
                                                                   **common)
    raise UsageError(f"{name} is not one of lwdsl's transformer models (tiny-llama, tiny-gpt2, tiny-bert)")


def tied_head(config: Mapping[str, Any], arch: Optional[str]) -> dict[str, str]:
    """The head -> embeddings tensors ``config`` ties (``tie_word_embeddings``; where the key is
    absent, ``transformers``' default for the class: GPT-2 ties, Llama does not); ``{}`` for none.

    >>> tied_head({"tie_word_embeddings": True}, "LlamaForCausalLM")
    {'lm_head.weight': 'model.embed_tokens.weight'}
    """
    if arch not in TIED or not config.get("tie_word_embeddings", arch == "GPT2LMHeadModel"):
        return {}
    head, embeddings = TIED[arch]
    return {head: embeddings}


#: What :func:`warn_untied` says of the way back, for a Hugging Face folder.
EXPORT_TIES = "export hf writes one tensor again (tie_word_embeddings=true) while they are equal"


def warn_untied(source: str, tied: Mapping[str, str], back: str = EXPORT_TIES) -> None:
    """Say (:class:`~lwdsl.errors.LoadWarning`) that each tied head of ``source`` is now a
    tensor of its own, and ``back``: what the way out of lwdsl makes of it."""
    for head, embeddings in tied.items():
        warnings.warn(f"{source}: its head {head} was tied to {embeddings}; lwdsl holds the head as a tensor of its own "
                      f"(a copy: the same logits), so a step on it leaves the embeddings alone; {back}",
                      LoadWarning, stacklevel=3)


@dataclass
class HfModel:
    """What a backend gives ``export hf``: the ``transformers`` config (``to_dict()``, with
    ``architectures``, without a ``quantization_config``), the state as ``transformers`` saves it
    (its names, ``Conv1D`` weights ``[in, out]``, shared tensors once, masks applied, float32
    numpy), and every module's class names as ``transformers`` builds it (module order: what
    compressed-tensors' ``Linear`` targets match; a GPT-2 projection is ``("Conv1D", "Module")``);
    ``tied``: the heads that were tied to the embeddings in the model read (head -> embeddings)."""

    config: dict[str, Any]
    state: dict[str, np.ndarray]
    classes: dict[str, tuple[str, ...]]
    tied: dict[str, str] = field(default_factory=dict)


def _tie(model: HfModel, conf: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The state to write, a head tied in the model read stored once while it equals its
    embeddings bit for bit (``conf``'s ``tie_word_embeddings`` set to what is written), and what is warned."""
    state, said = dict(model.state), []
    for head, embeddings in model.tied.items():
        if head not in state or embeddings not in state:
            continue
        conf["tie_word_embeddings"] = bool(np.array_equal(state[head], state[embeddings]))
        if conf["tie_word_embeddings"]:
            del state[head]  # one tensor, as transformers saves a tied head
        else:
            said.append(f"export hf: the head {head} was tied to {embeddings} in the model read and differs now; "
                        "the config says tie_word_embeddings=false and the folder holds both")
    return state, said


def _packed(model: HfModel, state: Mapping[str, np.ndarray],
            quant: Mapping[str, WeightQuant]) -> tuple[dict[str, WeightQuant], dict[str, str]]:
    """The quantized layers compressed-tensors holds (module order), and the others with why not."""
    packed, left = {}, {}
    for name, mro in model.classes.items():
        q = quant.get(name)
        if q is None:
            continue
        if "Conv1D" in mro:
            left[name] = "a GPT-2 Conv1D (compressed-tensors packs nn.Linear only)"
        elif "Linear" not in mro:
            left[name] = f"a {mro[0]} (compressed-tensors packs nn.Linear only)"
        elif f"{name}.weight" not in state:
            left[name] = "its weight is tied to another tensor (stored once, under the other name)"
        else:
            why = hf_format.unsupported(q, tuple(state[f"{name}.weight"].shape))
            if why:
                left[name] = why
            else:
                packed[name] = q
    return packed, left


def _warnings(left: Mapping[str, str], acts: Sequence[str], casts: Mapping[str, str], cast_hint: str) -> list[str]:
    said = []
    if left:
        said.append(f"export hf: {len(left)} quantized layer(s) stored dequantized (float32 codes * scale), "
                    "compressed-tensors has no form for them: " + "; ".join(f"{n}: {w}" for n, w in left.items()))
    if acts:
        said.append(f"export hf: the activation quantization of {len(acts)} layer(s) ({', '.join(sorted(acts))}) is not "
                    "written: the folder quantizes weights only, so transformers computes float activations there")
    said.append(float_kernels_warning("hf", [], casts, cast_hint) or "")
    return [w for w in said if w]


def _tokenizer_file(ctx: StepContext) -> Optional[Path]:
    tok = (getattr(ctx.data, "info", None) or {}).get("tokenizer")
    path = Path(tok["path"]) if isinstance(tok, dict) and tok.get("path") else None
    return path if path is not None and path.is_file() else None


def _save(state: Mapping[str, np.ndarray], path: Path) -> None:
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise UsageError("export hf needs the safetensors package", hint="pip install 'lwdsl[llm]'") from None
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path), metadata={"format": "pt"})


def write_folder(model: HfModel, path: Path, ctx: StepContext, *, quant: Mapping[str, WeightQuant],
                 masks: Mapping[str, np.ndarray], acts: Sequence[str], casts: Mapping[str, str], cast_hint: str,
                 length: int) -> None:
    """``export hf``: the folder of the module docstring, written atomically; ``ctx.notes["artifact"]``.

    Args:
        quant: the handle's quantized layers (codes and scales, canonical ``[out, in]``).
        masks: every pruned layer's keep mask (canonical layout).
        acts: the layers whose activations are quantized (not written, warned).
        casts: layer -> fp16/bf16 (stored float32, warned); ``cast_hint``: where they are smaller.
        length: the sequence length (``tokenizer_config.json``'s ``model_max_length``).
    """
    # no quantization_config but the one written here; no _name_or_path (the folder a model was read
    # from, set by transformers' from_pretrained on torch only: a local path, and bytes that would differ)
    conf = {k: v for k, v in model.config.items() if k not in ("quantization_config", "_name_or_path")}
    state, tie_said = _tie(model, conf)
    packed, left = _packed(model, state, quant)
    for said in [*tie_said, *_warnings(left, acts, casts, cast_hint)]:
        ctx.warn(said)
    conf["torch_dtype" if "torch_dtype" in conf else "dtype"] = "float32"  # what the file holds (torch's reader sets it)
    if packed:
        params = sum(int(t.size) for t in state.values())
        conf["quantization_config"] = hf_format.quantization_config(packed, model.classes, dict(masks), params)
        for name, q in packed.items():
            del state[f"{name}.weight"]
            for key, array in hf_format.layer_tensors(q, tuple(q.codes.shape)).items():
                state[f"{name}.{key}"] = array
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        (tmp / "config.json").write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
        _save(state, tmp / "model.safetensors")
        tok = _tokenizer_file(ctx)
        if tok is not None:
            shutil.copyfile(tok, tmp / "tokenizer.json")
            (tmp / "tokenizer_config.json").write_text(json.dumps(
                {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": int(length)}, indent=2) + "\n")
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _notes(ctx, path, conf, packed, left, bool(quant))


def _notes(ctx: StepContext, path: Path, conf: dict, packed: Mapping[str, WeightQuant], left: Mapping[str, str],
           quantized: bool) -> None:
    files = sorted(p.name for p in path.iterdir())
    if packed:
        bits = sorted({hf_format.file_bits(q) for q in packed.values()})
        weights = (f"compressed-tensors {hf_format.FORMAT}: {len(packed)} layer(s) as int{'/int'.join(map(str, bits))} "
                   f"codes with lwdsl's scales" + (f", {len(left)} dequantized" if left else "") + ", the rest float32")
    else:
        weights = "float32 (quantized layers dequantized: codes * scale)" if quantized else "float32"
    ctx.notes["artifact"] = {"format": "hf", "runtime": "transformers", "files": files,
                             "size_bytes": sum(p.stat().st_size for p in path.iterdir()), "weights": weights}
    if packed:
        qc = conf["quantization_config"]
        ctx.notes["artifact"]["quantization_config"] = {"format": qc["format"], "groups": len(qc["config_groups"]),
                                                        "ignore": qc["ignore"]}
        if qc["sparsity_config"]:
            sc = qc["sparsity_config"]
            ctx.notes["artifact"]["sparsity_config"] = {"structure": sc["sparsity_structure"],
                                                        "global_sparsity": round(sc["global_sparsity"], 6)}


# ----------------------------------------------------------------------------- reading


def read_config_json(folder: Path) -> dict[str, Any]:
    """``config.json`` of a folder that holds safetensors weights.

    Raises:
        UsageError: unreadable JSON, or no ``*.safetensors`` file.
    """
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{folder}/config.json cannot be read as JSON ({exc})") from None
    if not isinstance(config, dict):
        raise UsageError(f"{folder}/config.json is not a JSON object")
    if not any(folder.glob("*.safetensors")):
        raise UsageError(f"{folder} holds no *.safetensors weights", hint="save with save_pretrained(..., safe_serialization=True)")
    return config


def read_tensors(folder: Path, names: Optional[set[str]] = None) -> dict[str, np.ndarray]:
    """Every tensor (or those in ``names``) of the folder's ``*.safetensors`` files, as numpy
    (bfloat16 widened to float32 exactly)."""
    out: dict[str, np.ndarray] = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update(read_safetensors(path, names))
    return out


def compressed_names(folder: Path, qc: Any, classes: Mapping[str, Sequence[str]]) -> set[str]:
    """The tensor names of the layers ``qc`` quantizes (to read them alone)."""
    schemes, _, _ = hf_format.read_config(qc, classes, f"{folder}/config.json")
    return {f"{layer}.{local}" for layer in schemes for local in _LOCAL}


def decode_folder(folder: Path, qc: Any, classes: Mapping[str, Sequence[str]], tensors: Mapping[str, np.ndarray],
                  shape_of: Callable[[str], tuple[int, ...]]) -> tuple[dict[str, np.ndarray], dict[str, WeightQuant], list[str]]:
    """The quantized layers of a compressed-tensors folder: each one's float32 weight
    ``f32(code) * scale`` (``[out, in]``), the codes and scales lwdsl's state holds (the others
    warned), and the layers its ``sparsity_config`` names.

    Args:
        classes: every module of the model as ``transformers`` builds it -> its class names.
        tensors: the folder's tensors (at least the quantized layers').
        shape_of: a layer -> its weight's canonical shape ``[out, in]``.

    Raises:
        UsageError: what the core refuses (a scheme, a format, a damaged tensor), a layer the
            config quantizes that is not a ``Linear`` or has no tensors, codes of another shape.
    """
    where = f"{folder}/config.json"
    schemes, sparse, _ = hf_format.read_config(qc, classes, where)
    weights: dict[str, np.ndarray] = {}
    quant: dict[str, WeightQuant] = {}
    skipped: list[str] = []
    for name, scheme in schemes.items():
        mro = tuple(classes.get(name, ()))
        if "Linear" not in mro:
            raise UsageError(f"{where}: the quantization_config quantizes {name}, a {mro[0] if mro else 'module'}; "
                             "compressed-tensors packs nn.Linear layers only")
        found = {local: tensors[f"{name}.{local}"] for local in _LOCAL if f"{name}.{local}" in tensors}
        if not found:
            raise UsageError(f"{folder}: the quantization_config quantizes {name} but no safetensors file holds its tensors",
                             hint="the folder is incomplete: copy every *.safetensors file of the checkpoint")
        q, why = hf_format.decode_layer(found, scheme, f"{folder}: {name}")
        expected = tuple(shape_of(name))
        if tuple(q.codes.shape) != expected:
            raise UsageError(f"{folder}: {name} holds codes of shape {tuple(q.codes.shape)}; the model's layer is {expected}")
        weights[name] = q.dequantize().astype(np.float32)
        if why:
            skipped.append(f"{name}: {why}")
        else:
            quant[name] = q
    if skipped:
        warnings.warn(f"--model {folder}: {len(skipped)} quantized layer(s) load as float32 weights, not as lwdsl's "
                      f"codes: " + "; ".join(skipped), LoadWarning, stacklevel=3)
    return weights, quant, sparse


def keep_masks(sparse: Sequence[str], weight_of: Callable[[str], np.ndarray]) -> dict[str, np.ndarray]:
    """The keep mask (canonical layout, True where non-zero) of each layer the
    ``sparsity_config`` names that holds a zero."""
    out = {}
    for name in sparse:
        w = np.asarray(weight_of(name))
        if (w == 0).any():
            out[name] = w != 0
    return out
