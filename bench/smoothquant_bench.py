"""SmoothQuant and W8A8 on tiny-llama (or ``--model tiny-gpt2``) with --data pydoc (issue 25), through ``lwdsl.run``.

For each backend: the baseline (``--baseline-epochs``, cached in LWDSL_CACHE), then

- natural: ``quantize int8`` (W8A8, simulated) and ``smoothquant alpha=A | quantize int8``;
- planted: the baseline with activation outliers planted (in every decoder layer, CHANNELS of
  each pre-norm scaled by FACTOR through the norm's weight (and bias: GPT-2's LayerNorm), the
  same input columns of the linears it feeds divided by FACTOR: the float model unchanged),
  given as ``--checkpoint``, then the same two recipes.

Prints the perplexity of each step. ``python bench/smoothquant_bench.py --backends torch,tensorflow
[--model tiny-gpt2]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import lwdsl
from lwdsl.backend.weights import load_weights, save_weights

CHANNELS = (3, 17, 40, 51, 77, 100)
#: model -> (the prefix of its blocks, each pre-norm and the linears it feeds).
PAIRS = {
    "tiny-llama": ("model.layers", (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                                    ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")))),
    "tiny-gpt2": ("transformer.h", (("ln_1", ("attn.c_attn",)), ("ln_2", ("mlp.c_fc",)))),
}


def plant(state: dict, factor: float, model: str = "tiny-llama") -> dict:
    out = {k: np.array(v, copy=True) for k, v in state.items()}
    prefix, pairs = PAIRS[model]
    layers = sorted({k[len(prefix) + 1:].split(".")[0] for k in out if k.startswith(prefix + ".")}, key=int)
    for i in layers:
        for norm, linears in pairs:
            for part in ("weight", "bias"):  # a LayerNorm's output is n(x) g + b: both scaled
                if f"{prefix}.{i}.{norm}.{part}" in out:
                    out[f"{prefix}.{i}.{norm}.{part}"][list(CHANNELS)] *= np.float32(factor)
            for lin in linears:
                out[f"{prefix}.{i}.{lin}.weight"][:, list(CHANNELS)] /= np.float32(factor)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="torch")
    ap.add_argument("--model", default="tiny-llama", choices=sorted(PAIRS))
    ap.add_argument("--baseline-epochs", type=int, default=3)
    ap.add_argument("--factor", type=float, default=50.0)
    ap.add_argument("--alpha", type=float, default=0.5)
    args = ap.parse_args()
    smooth = f"smoothquant alpha={args.alpha}\nquantize int8\n"
    for name in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            t0 = time.perf_counter()
            first = lwdsl.run("quantize int8\n", args.model, backend=name, data="pydoc", out=tmp / "naive",
                              baseline_epochs=args.baseline_epochs, latency=False, quiet=True)
            lock = json.loads((tmp / "naive" / "lwdsl.lock.json").read_text())
            state, _ = load_weights(Path(lock["baseline"]["path"]))
            save_weights(tmp / "planted.lwz", plant(state, args.factor, args.model))
            runs = {"natural w8a8": first}
            runs["natural smoothquant+w8a8"] = lwdsl.run(smooth, args.model, backend=name, data="pydoc", out=None,
                                                         baseline_epochs=args.baseline_epochs, latency=False, quiet=True)
            for label, recipe in (("planted w8a8", "quantize int8\n"), ("planted smoothquant+w8a8", smooth)):
                runs[label] = lwdsl.run(recipe, args.model, backend=name, data="pydoc", checkpoint=tmp / "planted.lwz",
                                        out=None, latency=False, quiet=True)
            for label, result in runs.items():
                ppl = [step["metrics"]["perplexity"] for step in result.report["steps"]]
                base = ppl[0]
                print(f"{name} {args.model} {label} (x{args.factor:g}, alpha {args.alpha}): perplexity "
                      + " -> ".join(f"{p:.3f}" for p in ppl) + f"  ({100 * (ppl[-1] / base - 1):+.2f}% vs float32)")
            notes = runs["planted smoothquant+w8a8"].report["steps"][1].get("smoothquant", {})
            norm0 = f"{PAIRS[args.model][0]}.0.{PAIRS[args.model][1][0][0]}"
            pair = notes.get("pairs", {}).get(norm0, {})
            if pair:
                print(f"{name} planted {norm0}: activation max {pair['act_absmax']:.2f} -> "
                      f"{pair['act_absmax_after']:.2f}, scales {pair['scale_min']:.4f}..{pair['scale_max']:.4f}")
            print(f"{name}: {time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
