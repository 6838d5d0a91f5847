"""``export hf``: the model as a Hugging Face folder that ``transformers`` loads offline.

The folder holds ``config.json`` (the model's ``transformers`` config, ``architectures`` its
class: ``LlamaForCausalLM``, ``GPT2LMHeadModel``, ...), ``model.safetensors`` (every tensor of
the state dict, float32 (quantized layers packed, below), with masks applied; tensors that share memory, a tied head, stored
once, as ``save_pretrained`` does; GPT-2's projections given back in ``transformers``' ``Conv1D``
layout ``[in, out]``, hf.py) and, with ``--data pydoc`` (or any data whose report names a
``tokenizers`` file), ``tokenizer.json`` with a ``tokenizer_config.json`` for
``PreTrainedTokenizerFast``. ``AutoModelForCausalLM.from_pretrained(folder)`` gives the logits
lwdsl evaluates (the test checks 1e-5), and ``--model FOLDER`` reads it back.

Quantized layers (``quantize int4|int8|int2|ternary|binary``, per channel, per tensor or
``group=G``; ``grid=full``'s codes -2^(B-1).. as they are) are stored in compressed-tensors'
``pack-quantized`` layout with lwdsl's own codes and scales (``weight_packed``, ``weight_scale``, ``weight_shape``; the numbers and the
``quantization_config`` with its ``sparsity_config`` are :mod:`lwdsl.semantics.hf_format`'s),
so ``transformers`` + ``compressed-tensors`` load it and compute ``codes * scale`` exactly. A
quantized layer compressed-tensors cannot hold (GPT-2's ``Conv1D``: compressed-tensors packs
``nn.Linear`` only; a clustered layer; a row that is not whole groups) is stored dequantized
(float32 ``codes * scale``) and named in a warning, as are activation quantization (not
written: weight-only) and cast layers (float32). With nothing quantized the folder is the plain
float32 one, no ``quantization_config`` (no package beyond ``transformers`` needed to load it).
The folder is written beside its final name and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from lwdsl.backend import StepContext
from lwdsl.backend.steps import float_kernels_warning
from lwdsl.errors import UsageError
from lwdsl.language.specs import ExportSpec

from lwdsl.semantics import hf_format

from .handle import TorchModel
from .hf import Conv1DLinear, conv1d_layers, takes_tokens

__all__ = ["write_hf"]


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as ``transformers`` reads it: Conv1D weights transposed back to
    ``[in, out]``, shared tensors once (the first name in module order), contiguous copies."""
    transposed = {f"{name}.weight" for name in conv1d_layers(module)}
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, t in module.state_dict().items():
        ptr = t.data_ptr()
        if ptr in seen and t.numel():
            continue
        seen.add(ptr)
        t = t.detach().cpu()
        out[key] = (t.t() if key in transposed else t).contiguous().clone()
    return out


def _tokenizer_file(ctx: StepContext) -> Any:
    tok = (getattr(ctx.data, "info", None) or {}).get("tokenizer")
    path = Path(tok["path"]) if isinstance(tok, dict) and tok.get("path") else None
    return path if path is not None and path.is_file() else None


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


def _packed(handle: TorchModel, state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, str]]:
    """The quantized layers compressed-tensors holds (module order), and the others with why not."""
    packed, left = {}, {}
    for name, m in handle.module.named_modules():
        q = handle.quant.get(name)
        if q is None:
            continue
        if isinstance(m, Conv1DLinear):
            left[name] = "a GPT-2 Conv1D (compressed-tensors packs nn.Linear only)"
        elif not isinstance(m, torch.nn.Linear):
            left[name] = f"a {type(m).__name__} (compressed-tensors packs nn.Linear only)"
        elif f"{name}.weight" not in state:
            left[name] = "its weight is tied to another tensor (stored once, under the other name)"
        else:
            why = hf_format.unsupported(q, tuple(m.weight.shape))
            if why:
                left[name] = why
            else:
                packed[name] = q
    return packed, left


def _warnings(handle: TorchModel, left: dict[str, str]) -> list[str]:
    said = []
    if left:
        said.append(f"export hf: {len(left)} quantized layer(s) stored dequantized (float32 codes * scale), "
                    "compressed-tensors has no form for them: " + "; ".join(f"{n}: {w}" for n, w in left.items()))
    acts = sorted(n for n in handle.quant if n in handle.act or handle.quant_mode.get(n) == "dynamic")
    if acts:
        said.append(f"export hf: the activation quantization of {len(acts)} layer(s) ({', '.join(acts)}) is not "
                    "written: the folder quantizes weights only, so transformers computes float activations there")
    casts = {n: m for n, m in handle.quant_mode.items() if m in ("fp16", "bf16")}
    said.append(float_kernels_warning("hf", [], casts, "export torch stores them in 16 bits") or "")
    return [w for w in said if w]


def write_hf(handle: TorchModel, path: Path, ctx: StepContext, spec: ExportSpec) -> None:
    """``export hf``: the folder described in the module docstring, written atomically."""
    module = handle.module
    config = getattr(module, "config", None)
    if not takes_tokens(module) or config is None:
        raise UsageError(f"export hf writes a Hugging Face transformers model; {handle.ref} is not one",
                         hint="export hf goes with tiny-llama, tiny-bert, tiny-gpt2 or a Hugging Face folder as --model")
    from safetensors.torch import save_file

    handle.apply_masks()
    state = _state(module)
    packed, left = _packed(handle, state)
    for said in _warnings(handle, left):
        ctx.warn(said)
    conf = config.to_dict()
    conf.pop("quantization_config", None)
    if packed:
        masks = {n: handle.masks[n].numpy() for n in handle.masks}
        params = sum(t.numel() for t in state.values())
        conf["quantization_config"] = hf_format.quantization_config(packed, hf_classes(module), masks, params)
        for name, q in packed.items():
            del state[f"{name}.weight"]
            for key, array in hf_format.layer_tensors(q, tuple(q.codes.shape)).items():
                state[f"{name}.{key}"] = torch.from_numpy(array)
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        base = type(module).__mro__[1]  # hf.py's subclass only changes forward(); the class transformers knows
        conf["architectures"] = [base.__name__]
        (tmp / "config.json").write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tok = _tokenizer_file(ctx)
        if tok is not None:
            shutil.copyfile(tok, tmp / "tokenizer.json")
            (tmp / "tokenizer_config.json").write_text(json.dumps(
                {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": int(handle.input_shape[0])}, indent=2) + "\n")
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
    files = sorted(p.name for p in path.iterdir())
    if packed:
        bits = sorted({hf_format.file_bits(q) for q in packed.values()})
        weights = (f"compressed-tensors {hf_format.FORMAT}: {len(packed)} layer(s) as int{'/int'.join(map(str, bits))} "
                   f"codes with lwdsl's scales" + (f", {len(left)} dequantized" if left else "") + ", the rest float32")
    else:
        weights = "float32 (quantized layers dequantized: codes * scale)" if handle.quant else "float32"
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
