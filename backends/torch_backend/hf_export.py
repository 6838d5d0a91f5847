"""``export hf``: the model as a Hugging Face folder that ``transformers`` loads offline.

The folder holds ``config.json`` (the model's ``transformers`` config, ``architectures`` its
class: ``LlamaForCausalLM``, ``GPT2LMHeadModel``, ...), ``model.safetensors`` (every tensor of
the state dict, float32, with masks applied; tensors that share memory, a tied head, stored
once, as ``save_pretrained`` does; GPT-2's projections given back in ``transformers``' ``Conv1D``
layout ``[in, out]``, hf.py) and, with ``--data pydoc`` (or any data whose report names a
``tokenizers`` file), ``tokenizer.json`` with a ``tokenizer_config.json`` for
``PreTrainedTokenizerFast``. ``AutoModelForCausalLM.from_pretrained(folder)`` gives the logits
lwdsl evaluates (the test checks 1e-5), and ``--model FOLDER`` reads it back.

This first step stores quantized layers **dequantized**: float32 weights holding ``codes *
scale`` (so the numbers are exactly lwdsl's, the file is not smaller; a warning says so, and the
packed codes are in the run folder's ``model.lwz``). A compressed-tensors
``quantization_config``/``sparsity_config`` is not written: the package is not part of lwdsl's
dependencies yet. The folder is written beside its final name and renamed into place.
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

from .handle import TorchModel
from .hf import conv1d_layers, takes_tokens

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


def write_hf(handle: TorchModel, path: Path, ctx: StepContext, spec: ExportSpec) -> None:
    """``export hf``: the folder described in the module docstring, written atomically."""
    module = handle.module
    config = getattr(module, "config", None)
    if not takes_tokens(module) or config is None:
        raise UsageError(f"export hf writes a Hugging Face transformers model; {handle.ref} is not one",
                         hint="export hf goes with tiny-llama, tiny-bert, tiny-gpt2 or a Hugging Face folder as --model")
    from safetensors.torch import save_file

    handle.apply_masks()
    said = float_kernels_warning("hf", list(handle.quant), {}, "a compressed-tensors folder is not written yet")
    if said:
        ctx.warn(said)
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        base = type(module).__mro__[1]  # hf.py's subclass only changes forward(); the class transformers knows
        conf = config.to_dict()
        conf["architectures"] = [base.__name__]
        (tmp / "config.json").write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
        save_file(_state(module), str(tmp / "model.safetensors"), metadata={"format": "pt"})
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
    ctx.notes["artifact"] = {"format": "hf", "runtime": "transformers", "files": files,
                             "size_bytes": sum(p.stat().st_size for p in path.iterdir()),
                             "weights": "float32 (quantized layers dequantized: codes * scale)" if handle.quant else "float32"}
