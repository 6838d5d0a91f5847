"""MNIST accuracy of lenet5 after ``quantize int8`` in each mode, both backends, and the
product's headline recipe per step, side by side.

Every run starts from the same cached 3-epoch baseline of its backend (``lwdsl train``), on
real MNIST (``LWDSL_DATA``). Per mode: the fp32 accuracy, lwdsl's own evaluation after the step
(fake quantization with the core's codes and ranges), and the accuracy of the deployable
artifact in its own runtime (``export onnx`` in ONNX Runtime on torch, ``export tflite`` in
LiteRT on tensorflow), with its size and latency (batch 1 and 32, 1 thread).

    LWDSL_DATA=../shared/data python bench/int8_accuracy.py [--backends torch,tensorflow]
                                                            [--modes dynamic,static,qat] [--headline]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


import lwdsl  # noqa: E402

EXPORT = {"torch": "onnx", "tensorflow": "tflite"}
HEADLINE = "prune global l1 0.2 | quantize int8 | distill T=2 alpha=0.5"


def one(backend: str, recipe: str, model: str = "lenet5", data: str = "mnist", latency: bool = True) -> dict:
    """One run of ``recipe`` in a temp folder (from the backend's cached 3-epoch baseline), its report."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lwdsl-bench-") as tmp:
        result = lwdsl.run(recipe, model, backend=backend, data=data, quiet=True, latency=latency, out=Path(tmp) / "run")
    report = result.report
    report["wall_s"] = time.perf_counter() - t0
    return report


def modes(backends, mode_list) -> None:
    print("\n## lenet5 on MNIST, `quantize int8 mode=M` then `export` (accuracy: lwdsl's evaluation / the artifact's runtime)\n")
    print("| backend | mode | fp32 | after quantize | artifact | change (points) | artifact size | lat b1 ms | lat b32 ms | int8 / float weighted ops | codes equal |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for be in backends:
        for mode in mode_list:
            extra = " epochs=1" if mode == "qat" else ""
            rep = one(be, f"quantize int8 mode={mode}{extra} | export {EXPORT[be]}")
            base, q, ex = rep["steps"][0], rep["steps"][1], rep["steps"][2]
            art = ex["artifacts"][0]
            codes = f"{art.get('codes_equal', 0):,}/{art.get('codes_total', 0):,}"
            print(f"| {be} | {mode} | {100 * base['metrics']['accuracy']:.2f}% | {100 * q['metrics']['accuracy']:.2f}% "
                  f"| {100 * art['accuracy']:.2f}% | {100 * (art['accuracy'] - base['metrics']['accuracy']):+.2f} "
                  f"| {art['size_bytes'] / 1024:.1f} KiB | {art['latency_ms_b1']:.3f} | {art['latency_ms_b32']:.3f} "
                  f"| {art['int8_ops']} / {art['float_ops']} | {codes} |")
            print(f"|  |  | ops: {', '.join(f'{k} x{v}' for k, v in art['ops'].items())} |")


def headline(backends) -> None:
    print(f"\n## The headline recipe `{HEADLINE}` on lenet5 / MNIST, per step\n")
    print("| backend | step | accuracy | non-zero | size (gzip) | lat b1 ms | lat b64 ms | s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for be in backends:
        rep = one(be, HEADLINE)
        for s in rep["steps"]:
            m = s["metrics"]
            print(f"| {be} | `{s['text']}` | {100 * m['accuracy']:.2f}% | {m['nonzero_params']:,} | {m['size_gzip_bytes'] / 1024:.1f} KiB "
                  f"| {m['latency_ms_b1']:.3f} | {m['latency_ms_b64']:.3f} | {m['seconds']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="torch,tensorflow")
    parser.add_argument("--modes", default="dynamic,static,qat")
    parser.add_argument("--headline", action="store_true", help="also run the headline recipe")
    parser.add_argument("--only-headline", action="store_true")
    args = parser.parse_args()
    from int8_bench import cpu_line

    print(f"# int8 accuracy on MNIST\nCPU: {cpu_line()}")
    backends = args.backends.split(",")
    if not args.only_headline:
        modes(backends, args.modes.split(","))
    if args.headline or args.only_headline:
        headline(backends)


if __name__ == "__main__":
    main()
