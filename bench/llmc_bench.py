"""lwdsl against llm-compressor's ``oneshot`` on the same tiny Llama and the same calibration
sequences: SparseGPT (50%, 70%, 2:4) and GPTQ (int4 and int2, groups of 32; each beside its
own round to nearest; lwdsl's default int4 is symmetric narrow, codes -7..7 at max|w|/7,
compressed-tensors' is -8..7 at max|w|/7.5, and at 2 bits -1..1 against -2..1: the ``... full``
methods run lwdsl with ``grid=full``, compressed-tensors' grid), weight-only, the head left dense and float in both. Prints, per method, the perplexity on the test
sequences (lwdsl's own evaluation for both models) and each targeted layer's relative output
error ``||X (W - W')^T||^2 / ||X W^T||^2`` on the calibration inputs of the *baseline* model
(the layer objective both implement; llm-compressor calibrates each decoder layer on the
outputs of the layers it already compressed, lwdsl on the baseline's: both are stated).

Offline, on the CPU. llm-compressor 0.14 pins torch<=2.14.0 and transformers<=5.17; to run it
beside this project's newer torch/transformers, install it without its pins (it imports and runs):

    pip install --no-deps llmcompressor==0.14.0.1 compressed-tensors==0.19.0 loguru psutil accelerate
    LWDSL_DATA=../shared/data python bench/llmc_bench.py [--calibrate 128] [--baseline-epochs 8]

``--lwdsl-only`` runs lwdsl's rows without llm-compressor (narrow against full grid, per layer).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: method -> (lwdsl step, llm-compressor modifier kind and arguments)
METHODS = {
    "SparseGPT 50%": ('prune sparsegpt 50% calibrate={n} except "lm_head"', ("sparsegpt", {"sparsity": 0.5, "mask_structure": "0:0"})),
    "SparseGPT 70%": ('prune sparsegpt 70% calibrate={n} except "lm_head"', ("sparsegpt", {"sparsity": 0.7, "mask_structure": "0:0"})),
    "SparseGPT 2:4": ('prune sparsegpt 50% nm=2:4 calibrate={n} except "lm_head"', ("sparsegpt", {"sparsity": 0.5, "mask_structure": "2:4"})),
    "RTN int4 g32": ('quantize int4 group=32 except "lm_head"', ("rtn", {"num_bits": 4, "group_size": 32})),
    "GPTQ int4 g32": ('quantize int4 method=gptq group=32 calibrate={n} except "lm_head"', ("gptq", {"num_bits": 4, "group_size": 32})),
    "RTN int2 g32": ('quantize int2 group=32 except "lm_head"', ("rtn", {"num_bits": 2, "group_size": 32})),
    "GPTQ int2 g32": ('quantize int2 method=gptq group=32 calibrate={n} except "lm_head"', ("gptq", {"num_bits": 2, "group_size": 32})),
}
#: the same integer methods on lwdsl's full grid (``grid=full``: compressed-tensors' own, -8..7 at max|w|/7.5)
METHODS.update({f"{name} full": (step.replace(' except', ' grid=full except'), tool) for name, (step, tool) in METHODS.items()
                if name.startswith(("RTN", "GPTQ"))})


def modifier(kind: str, kw: dict):
    """llm-compressor's modifier as its docs configure it (its defaults otherwise: dampening 0.01,
    block 128, the sequential pipeline), targeting the decoder's Linear layers, the head ignored."""
    if kind == "sparsegpt":
        from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier

        return SparseGPTModifier(targets=["Linear"], ignore=["lm_head"], **kw)
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    scheme = {"group_0": {"targets": ["Linear"], "weights": {"num_bits": kw["num_bits"], "type": "int", "symmetric": True,
                                                             "strategy": "group", "group_size": kw["group_size"]}}}
    if kind == "rtn":  # round to nearest with the same scheme (its observer: min-max)
        return QuantizationModifier(config_groups=scheme, ignore=["lm_head"])
    return GPTQModifier(config_groups=scheme, ignore=["lm_head"])  # its default actorder: static


def fake_quantized(model) -> dict[str, np.ndarray]:
    """The weight each quantized Linear of an llm-compressor model computes with: compressed-tensors'
    own ``fake_quantize`` at the layer's scale and zero point (round to nearest leaves the float
    weight in place and quantizes it in the forward; GPTQ's weight is already on the grid)."""
    import torch
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize

    out = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            scheme = getattr(m, "quantization_scheme", None)
            if scheme is not None and scheme.weights is not None and hasattr(m, "weight_scale"):
                out[f"{name}.weight"] = fake_quantize(m.weight, m.weight_scale, m.weight_zero_point, scheme.weights).float().numpy()
    return out


def layer_errors(module, names: list[str], x: np.ndarray, other: dict[str, np.ndarray], *,
                 module_is: str = "base") -> dict[str, float]:
    """Each layer's relative output error between ``module``'s weight and ``other``'s, on the
    inputs ``module`` gives that layer over ``x``: ``module_is="base"`` (the baseline's inputs,
    ``other`` compressed) or ``"new"`` (``module`` compressed, ``other`` the baseline: the
    compressed model's own inputs)."""
    import torch

    from lwdsl.semantics.hessian import Gram, output_error

    grams: dict[str, Gram] = {}
    mods = dict(module.named_modules())
    hooks = [mods[n].register_forward_pre_hook(
        lambda _m, inp, n=n: grams.setdefault(n, Gram(inp[0].shape[-1])).update(inp[0].detach().float().numpy()))
        for n in names]
    try:
        with torch.no_grad():
            for s in range(0, len(x), 16):
                module(torch.as_tensor(x[s : s + 16]))
    finally:
        for h in hooks:
            h.remove()
    mine = {n: mods[n].weight.detach().float().numpy() for n in names}
    pairs = {n: (mine[n], other[f"{n}.weight"]) if module_is == "base" else (other[f"{n}.weight"], mine[n]) for n in names}
    return {n: output_error(w, w_new, grams[n].h) for n, (w, w_new) in pairs.items()}


def ppl(be, handle, ctx) -> float:
    """Test perplexity: exp of the mean token cross-entropy of lwdsl's evaluation."""
    return float(np.exp(be.evaluate(handle, ctx)[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibrate", type=int, default=128)
    ap.add_argument("--baseline-epochs", type=int, default=8)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--lwdsl-only", action="store_true",
                    help="lwdsl's rows only (no llm-compressor needed); a full-grid row is set against its narrow one")
    args = ap.parse_args()

    import torch
    import transformers

    if args.lwdsl_only:
        llmcompressor = compressed_tensors = None
    else:
        import llmcompressor
        import compressed_tensors
        from datasets import Dataset as HFDataset
        from llmcompressor import oneshot

    from int8_bench import cpu_line  # noqa: E402 - same folder
    from lwdsl.backend import StepContext, get_backend
    from lwdsl.data.builtin import load_data
    from lwdsl.runner.pipeline import _baseline, run
    from lwdsl.runner.progress import NullBar
    from lwdsl.semantics.order import calibration_indices

    torch.set_num_threads(1)
    against = "lwdsl only" if args.lwdsl_only else (f"lwdsl vs llm-compressor {llmcompressor.__version__} "
                                                     f"(compressed-tensors {compressed_tensors.__version__})")
    print(f"# {against}, torch {torch.__version__}, transformers {transformers.__version__}, 1 thread")
    print(f"CPU: {cpu_line()}")
    data = load_data("pydoc")
    be = get_backend("torch")
    ctx = StepContext(data=data, seed=0, index=0, progress=lambda total, what: NullBar(), warn=lambda m: None)
    from lwdsl.data.text import pydoc_text, pydoc_tokenizer

    tok, _, _ = pydoc_tokenizer(pydoc_text())  # the data's own BPE tokenizer (oneshot wants a processor)
    processor = transformers.PreTrainedTokenizerFast(tokenizer_object=tok)
    idx = calibration_indices(len(data.train_x), args.calibrate, 0)
    calib = np.ascontiguousarray(data.train_x[idx])
    print(f"data: {data.name}, {len(data.train_x)} training and {len(data.test_x)} test sequences of {data.input_shape[0]} tokens; "
          f"calibration: the same {len(idx)} training sequences for both (lwdsl's calibration_indices, seed 0)")

    # the baseline, trained once by lwdsl and cached; then every lwdsl run starts from it
    start = time.perf_counter()
    torch.manual_seed(0)  # as a run seeds the model's initialisation
    base = be.load_model("tiny-llama", data.input_shape, data.num_classes)
    info = _baseline(be, base, "tiny-llama", ctx, args.baseline_epochs, say=lambda m: None)
    ckpt = Path(info["path"])
    print(f"baseline: tiny-llama, {args.baseline_epochs} epochs ({info['source']}, {time.perf_counter() - start:.0f} s), "
          f"{ckpt.name}; test perplexity {ppl(be, base, ctx):.2f}")
    names = [n for n, m in base.module.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]

    print("\n| method | tool | test perplexity | mean layer error | max layer error | layers lower than the other tool's | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|")
    narrow: dict[str, dict[str, float]] = {}  # lwdsl-only: each method's layer errors, for its full-grid row
    for method in args.methods.split(","):
        step, (kind, kw) = METHODS[method.strip()]
        # lwdsl
        t0 = time.perf_counter()
        res = run(step.format(n=args.calibrate) + "\n", "tiny-llama", backend="torch", data="pydoc", checkpoint=ckpt, quiet=True,
                  latency=False)
        lw_s = time.perf_counter() - t0
        lw_state = {k: v.detach().float().numpy() for k, v in res.model.module.state_dict().items()}  # the weights it computes with
        w = lw_state[f"{names[0]}.weight"]
        print(f"  ({method}: lwdsl's {names[0]} holds {len(np.unique(w[0, :32]))} distinct values in its first 32 weights, "
              f"{float((w == 0).mean()):.1%} zeros)")
        if args.lwdsl_only:  # against the narrow grid's row of the same method when it ran
            errs = narrow[method.strip()] = layer_errors(base.module, names, calib, lw_state)
            base_row = narrow.get(method.strip().removesuffix(" full")) if method.strip().endswith(" full") else None
            lower = f"{sum(errs[n] < base_row[n] for n in names)} of {len(names)} (vs narrow)" if base_row else ""
            print(f"| {method} | lwdsl | {ppl(be, res.model, ctx):.2f} | {np.mean(list(errs.values())):.4f} | "
                  f"{max(errs.values()):.4f} | {lower} | {lw_s:.0f} |")
            sys.stdout.flush()
            continue
        # llm-compressor on a plain transformers Llama with the baseline's weights
        plain = transformers.LlamaForCausalLM(copy.deepcopy(base.module.config))
        plain.load_state_dict(base.module.state_dict())
        plain.eval()
        folder = Path(tempfile.mkdtemp(prefix="lwdsl-llmc-"))
        plain.save_pretrained(folder)  # oneshot reads the model's config from its folder
        plain.config.name_or_path = str(folder)
        ds = HFDataset.from_dict({"input_ids": calib.tolist(), "attention_mask": np.ones_like(calib).tolist()})
        t0 = time.perf_counter()
        oneshot(model=plain, processor=processor, dataset=ds, recipe=[modifier(kind, kw)], num_calibration_samples=len(calib),
                max_seq_length=calib.shape[1], pad_to_max_length=False)
        lc_s = time.perf_counter() - t0
        shutil.rmtree(folder, ignore_errors=True)
        lc_state = {k: v.detach().float().numpy() for k, v in plain.state_dict().items() if k in lw_state}
        lc_state.update(fake_quantized(plain))  # its quantized layers' weights as its forward computes with them
        lc = be.load_model("tiny-llama", data.input_shape, data.num_classes, checkpoint=ckpt)
        be.load_state(lc, lc_state)
        head = lc_state["lm_head.weight"]
        if not np.array_equal(head, base.module.lm_head.weight.detach().numpy()):
            print(f"  ({method}: llm-compressor changed lm_head although ignore=['lm_head'] was given: "
                  f"{float((head == 0).mean()):.1%} zeros; a row with the head put back follows)")
        rows = {}
        for tool, state, handle, secs in (("lwdsl", lw_state, res.model, lw_s), ("llm-compressor", lc_state, lc, lc_s)):
            errs = layer_errors(base.module, names, calib, state)
            rows[tool] = (ppl(be, handle, ctx), errs, secs)
        if not np.array_equal(head, base.module.lm_head.weight.detach().numpy()):
            back = be.load_model("tiny-llama", data.input_shape, data.num_classes, checkpoint=ckpt)
            be.load_state(back, {**lc_state, "lm_head.weight": base.module.lm_head.weight.detach().numpy()})
            rows["llm-compressor, head put back"] = (ppl(be, back, ctx), rows["llm-compressor"][1], lc_s)
        for tool, other in (("lwdsl", "llm-compressor"), ("llm-compressor", "lwdsl"), ("llm-compressor, head put back", "lwdsl")):
            if tool not in rows:
                continue
            perplexity, errs, secs = rows[tool]
            lower = sum(errs[n] < rows[other][1][n] for n in names)
            print(f"| {method} | {tool} | {perplexity:.2f} | {np.mean(list(errs.values())):.4f} | {max(errs.values()):.4f} | "
                  f"{lower} of {len(names)} | {secs:.0f} |")
        sys.stdout.flush()
    print(f"\n(load average {os.getloadavg()[0]:.1f} at the end, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
