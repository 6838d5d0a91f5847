"""How big `export hf` folders are: int4 alone against 2:4 + int4, on tiny-llama (torch).

Runs ``quantize int4 method=gptq group=32 | export hf`` and ``prune sparsegpt 50% nm=2:4 |
quantize int4 method=gptq group=32 | export hf`` (every linear layer, ``lm_head`` included;
``--except-head`` keeps it float) and prints, for both: the folder's bytes, the safetensors
bytes of the quantized layers (``weight_packed`` + ``weight_scale`` + ``weight_shape``) and of
the rest (embeddings, norms, float layers), the run folder's ``model.lwz`` (lwdsl's own format:
a 2:4 layer in its N:M layout, 3 bits of position a group of 4; ``bench/lwz_size.py`` breaks it
down), and what the quantized layers would take in
a 2:4-compressed layout (the two kept codes of each 4 at 4 bits plus 2 bits of position each,
as Marlin 2:4 and the removed ``sparse-24-bitmask`` + ``pack-quantized`` stacking stored them;
compressed-tensors 0.20 loads no such layout). The end-to-end time of each run is printed too.

    python bench/hf_size.py [--model tiny-llama] [--calibrate 128] [--except-head]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lwdsl  # noqa: E402

QUANT = ("weight_packed", "weight_scale", "weight_shape")


def _bytes(folder: Path) -> dict[str, int]:
    from safetensors.numpy import load_file

    state = load_file(str(folder / "model.safetensors"))
    quant = sum(a.nbytes for k, a in state.items() if k.rpartition(".")[2] in QUANT)
    codes = sum(a.nbytes for k, a in state.items() if k.endswith(".weight_packed"))
    scales = sum(a.nbytes for k, a in state.items() if k.endswith((".weight_scale", ".weight_shape")))
    return {"folder": sum(p.stat().st_size for p in folder.iterdir()), "safetensors": (folder / "model.safetensors").stat().st_size,
            "quantized": quant, "codes": codes, "scales": scales, "rest": sum(a.nbytes for a in state.values()) - quant}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--calibrate", type=int, default=128)
    parser.add_argument("--except-head", action="store_true")
    args = parser.parse_args()
    skip = ' except "lm_head"' if args.except_head else ""
    gptq = f"quantize int4 method=gptq group=32 calibrate={args.calibrate}{skip}"
    recipes = {"int4": f'{gptq}\nexport hf "hf"\n',
               "2:4 + int4": f'prune sparsegpt 50% nm=2:4 calibrate={args.calibrate}{skip}\n{gptq}\nexport hf "hf"\n'}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, recipe in recipes.items():
            out = Path(tmp) / label.replace(":", "").replace(" ", "")
            start = time.perf_counter()
            result = lwdsl.run(recipe, args.model, data="pydoc", baseline_epochs=0, quiet=True, latency=False, out=out)
            took = time.perf_counter() - start
            b = _bytes(out / "hf")
            b["lwz"] = (out / "model.lwz").stat().st_size
            n = sum(q.codes.size for q in result.model.quant.values())
            b["compressed_24"] = n // 2 * 4 // 8 + n // 2 * 2 // 8 + b["scales"]  # kept codes + 2-bit positions + scales
            b["seconds"] = round(took, 1)
            b["sparsity_config"] = json.loads((out / "hf" / "config.json").read_text())["quantization_config"]["sparsity_config"]
            rows[label] = b
    base, sparse = rows["int4"], rows["2:4 + int4"]
    print(f"model {args.model}, calibrate {args.calibrate}, lm_head {'float' if args.except_head else 'int4'}, "
          f"load {os.getloadavg()[0]:.2f}")
    print("| | folder | model.safetensors | quantized layers | rest (float) | model.lwz | run s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, b in rows.items():
        print(f"| {label} | {b['folder']:,} | {b['safetensors']:,} | {b['quantized']:,} | {b['rest']:,} | {b['lwz']:,} | {b['seconds']} |")
    print(f"2:4 + int4 against int4: folder {sparse['folder'] / base['folder'] - 1:+.1%}, "
          f"model.lwz {sparse['lwz'] / base['lwz'] - 1:+.1%}")
    hyp = sparse["folder"] - sparse["quantized"] + sparse["compressed_24"]
    print(f"in a 2:4-compressed layout the quantized layers would take {sparse['compressed_24']:,} bytes "
          f"({sparse['compressed_24'] / sparse['quantized'] - 1:+.1%}), the folder {hyp:,} ({hyp / base['folder'] - 1:+.1%} against int4)")
    print("sparsity_config:", json.dumps(sparse["sparsity_config"]))


if __name__ == "__main__":
    main()
