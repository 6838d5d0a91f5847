"""``sequential=true`` against one calibration pass, on a trained tiny Llama (torch).

For each method (SparseGPT 70% and 2:4, GPTQ int4 and int2 in groups of 32; weight-only, the
head left dense and float), both modes from the same cached baseline and the same calibration
sequences. Prints the test perplexity (lwdsl's own evaluation), the calibration passes, the
wall time, and each layer's relative output error ``||X (W - W')^T||^2 / ||X W^T||^2`` measured
on the inputs the layer really gets in the compressed model (``X`` from the compressed model's
forward over the calibration sequences, ``W`` the baseline's weight): the error that
sequential calibration minimises and one pass does not see.

    LWDSL_DATA=../shared/data python bench/sequential_bench.py [--calibrate 128] [--baseline-epochs 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = {
    "SparseGPT 70%": 'prune sparsegpt 70% calibrate={n} except "lm_head"',
    "SparseGPT 2:4": 'prune sparsegpt 50% nm=2:4 calibrate={n} except "lm_head"',
    "GPTQ int4 g32": 'quantize int4 method=gptq group=32 calibrate={n} except "lm_head"',
    "GPTQ int2 g32": 'quantize int2 method=gptq group=32 calibrate={n} except "lm_head"',
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibrate", type=int, default=128)
    ap.add_argument("--baseline-epochs", type=int, default=8)
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()

    import torch

    from int8_bench import cpu_line  # noqa: E402 - same folder
    from llmc_bench import layer_errors  # noqa: E402 - same folder
    from lwdsl.backend import StepContext, get_backend
    from lwdsl.data.builtin import load_data
    from lwdsl.runner.pipeline import _baseline, run
    from lwdsl.runner.progress import NullBar
    from lwdsl.semantics.order import calibration_indices

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    print(f"# sequential=true against one calibration pass, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"CPU: {cpu_line()}; load {open('/proc/loadavg').read().split()[:3]}")
    data = load_data("pydoc")
    be = get_backend("torch")
    ctx = StepContext(data=data, seed=0, index=0, progress=lambda total, what: NullBar(), warn=lambda m: None)
    calib = np.ascontiguousarray(data.train_x[calibration_indices(len(data.train_x), args.calibrate, 0)])
    start = time.perf_counter()
    torch.manual_seed(0)
    base = be.load_model("tiny-llama", data.input_shape, data.num_classes)
    info = _baseline(be, base, "tiny-llama", ctx, args.baseline_epochs, say=lambda m: None)
    ckpt = Path(info["path"])
    base_state = {k: v.detach().float().numpy() for k, v in base.module.state_dict().items()}
    names = [n for n, m in base.module.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    print(f"baseline: tiny-llama, {args.baseline_epochs} epochs ({info['source']}, {time.perf_counter() - start:.0f} s), "
          f"test perplexity {np.exp(be.evaluate(base, ctx)[1]):.2f}; {len(calib)} calibration sequences, "
          f"{len(names)} layers")
    print("\n| method | calibration | passes | test perplexity | mean layer error on its real inputs | max | "
          "layers lower than the other mode | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for method in args.methods.split(","):
        rows = {}
        for mode in ("one pass", "sequential"):
            text = METHODS[method.strip()].format(n=args.calibrate) + (" sequential=true" if mode == "sequential" else "")
            t0 = time.perf_counter()
            res = run(text + "\n", "tiny-llama", backend="torch", data="pydoc", checkpoint=ckpt, quiet=True, latency=False)
            secs = time.perf_counter() - t0
            row = res.report["steps"][-1]
            errs = layer_errors(res.model.module, names, calib, base_state, module_is="new")
            rows[mode] = (row["calibration"].get("passes", 1), float(np.exp(be.evaluate(res.model, ctx)[1])), errs, secs)
        for mode, other in (("one pass", "sequential"), ("sequential", "one pass")):
            passes, ppl, errs, secs = rows[mode]
            lower = sum(errs[n] < rows[other][2][n] for n in names)
            print(f"| {method} | {mode} | {passes} | {ppl:.2f} | {np.mean(list(errs.values())):.4f} | "
                  f"{max(errs.values()):.4f} | {lower} of {len(names)} | {secs:.1f} |")
    print(f"\nload after: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
