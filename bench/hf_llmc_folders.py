"""Folders written by llm-compressor's ``oneshot`` read as ``--model`` (torch): GPTQ W4A16 and
SparseGPT 2:4 + GPTQ W4A16 on a tiny Llama (lwdsl's tiny-llama sizes, random weights, 32
random calibration sequences), each loaded by lwdsl and by ``transformers`` +
``compressed-tensors``, logits compared, and what lwdsl recorded printed.

llm-compressor 0.14 pins torch<=2.14.0, transformers<=5.17 and compressed-tensors==0.19, so it
writes from its own venv (installed without its pins, as bench/llmc_bench.py says) and lwdsl
reads from this project's (compressed-tensors 0.20):

    python -m venv /tmp/llmc && /tmp/llmc/bin/pip install --no-deps llmcompressor==0.14.0.1 \\
        compressed-tensors==0.19.0 loguru psutil accelerate    # plus torch, transformers, datasets
    /tmp/llmc/bin/python bench/hf_llmc_folders.py write OUT TOKENIZER_JSON
    python bench/hf_llmc_folders.py read OUT

(TOKENIZER_JSON: any ``tokenizer.json``, e.g. from an ``export hf`` folder; oneshot wants a
processor. Run from a folder without a stray ``mlx`` directory: transformers takes it for MLX.)
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("w4a16", "sparse24_w4a16")


def write(out: Path, tokenizer: str) -> None:
    import numpy as np
    import torch
    import transformers
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier
    from llmcompressor.modifiers.quantization import GPTQModifier

    config = transformers.LlamaConfig(vocab_size=2048, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=4, intermediate_size=512, max_position_embeddings=128,
                                      tie_word_embeddings=False)
    processor = transformers.PreTrainedTokenizerFast(tokenizer_file=tokenizer)
    calib = np.random.default_rng(0).integers(0, 2048, (32, 128))
    gptq = GPTQModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"])
    recipes = {"w4a16": [gptq], "sparse24_w4a16": [
        SparseGPTModifier(sparsity=0.5, mask_structure="2:4", targets=["Linear"], ignore=["lm_head"]),
        GPTQModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"])]}
    for name in FOLDERS:
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config).eval()
        src = out / f"{name}-src"
        model.save_pretrained(src)
        model.config.name_or_path = str(src)
        ds = Dataset.from_dict({"input_ids": calib.tolist(), "attention_mask": np.ones_like(calib).tolist()})
        oneshot(model=model, processor=processor, dataset=ds, recipe=recipes[name], num_calibration_samples=len(calib),
                max_seq_length=128, pad_to_max_length=False)
        model.save_pretrained(out / name, save_compressed=True)
        print("wrote", out / name)


def read(out: Path) -> None:
    import json

    import numpy as np
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(ROOT))
    from lwdsl.backend import get_backend
    from lwdsl.semantics.hf_format import unpack_int32

    x = torch.from_numpy(np.random.default_rng(1).integers(0, 2048, (2, 128)))
    for name in FOLDERS:
        folder = out / name
        qc = json.loads((folder / "config.json").read_text())["quantization_config"]
        hf = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            back = get_backend("torch").load_model(str(folder), (128,), 2048)
        with torch.no_grad():
            diff = (back.module(x) - hf(input_ids=x).logits).abs().max().item()
        state = load_file(str(folder / "model.safetensors"))
        packed = [k[: -len(".weight_packed")] for k in state if k.endswith(".weight_packed")]
        codes = {n: unpack_int32(state[f"{n}.weight_packed"], 4, state[f"{n}.weight_shape"]) for n in packed}
        over = max(float(((c.reshape(-1, 4) != 0).sum(-1) > 2).mean()) for c in codes.values())
        zeros = np.mean([float((c == 0).mean()) for c in codes.values()])
        print(f"{name} (version {qc.get('version')}, sparsity_config {qc.get('sparsity_config')}): logits max |lwdsl - "
              f"transformers| {diff:.3g}; {len(back.quant)} of {len(packed)} layers recorded as lwdsl codes, "
              f"{sum(int(c.min()) == -8 for c in codes.values())} use code -8; zero codes {zeros:.1%}, "
              f"groups of 4 with more than 2 non-zero codes at most {over:.1%} of a layer; "
              f"{len([w for w in said if '--model' in str(w.message)])} warning(s)")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "read":
        read(Path(sys.argv[2]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "write":
        write(Path(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(__doc__)
