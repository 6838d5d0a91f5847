"""MNIST accuracy and size of lenet5 after the low-bit weight forms (ternary, binary, int4,
int2), trained through the quantizer (``quantize FORM mode=qat epochs=E``), side by side per
backend.

Every run starts from the same cached 3-epoch baseline of its backend, on real MNIST
(``LWDSL_DATA``). Per form: the fp32 accuracy, the accuracy after the QAT step (lwdsl's own
evaluation: float kernels on ``codes * scale``), the gzip size of the run's ``.lwz`` (codes
packed: 2 bits for ternary and int2, 1 for binary, 4 for int4) and fp32 bytes / that size,
the latency at batch 1 (1 thread: float kernels, so the gain is size, not speed), and the
step's wall time. For reference: a public TWN reproduction reached 99.14% (fp32 99.25%) on
LeNet-5 in 10 epochs.

``--auto 2,4``: ``quantize auto budget=B`` against uniform ``int2``/``int4`` at the same
average bits, weights only (no training), so the comparison is the choice alone.

    LWDSL_DATA=../shared/data python bench/lowbit_bench.py [--backends torch,tensorflow]
        [--forms ternary,binary] [--epochs 10] [--auto 2,4] [--no-qat]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import lwdsl  # noqa: E402


def one(backend: str, recipe: str) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lwdsl-bench-") as tmp:
        result = lwdsl.run(recipe, "lenet5", backend=backend, data="mnist", quiet=True, out=Path(tmp) / "run")
    report = result.report
    report["wall_s"] = time.perf_counter() - t0
    return report


def auto(backends: list[str], budgets: list[int]) -> None:
    print("# `quantize auto budget=B` against uniform int<B> (weights only, no training), LeNet-5 on MNIST\n")
    print("| backend | budget | fp32 | uniform int<B> | auto | auto average bits | auto forms (conv1, conv2, fc1, fc2) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for be in backends:
        for budget in budgets:
            uni = one(be, f"quantize int{budget}")
            rep = one(be, f"quantize auto budget={budget}")
            base, u, a = uni["steps"][0]["metrics"], uni["steps"][1]["metrics"], rep["steps"][1]
            notes = a.get("auto_bits", {})
            forms = ", ".join(r["form"] for r in notes.get("layers", []))
            print(f"| {be} | {budget} | {100 * base['accuracy']:.2f}% | {100 * u['accuracy']:.2f}% "
                  f"| {100 * a['metrics']['accuracy']:.2f}% | {notes.get('average_bits', float('nan')):.2f} | {forms} |", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="torch,tensorflow")
    parser.add_argument("--forms", default="ternary,binary,int4,int2")
    parser.add_argument("--epochs", type=int, default=10, help="QAT epochs (the TWN reproduction used 10)")
    parser.add_argument("--auto", default="", help="budgets for quantize auto against uniform int<B>, e.g. 2,4")
    parser.add_argument("--no-qat", action="store_true", help="only the --auto comparison")
    args = parser.parse_args()
    if args.auto:
        auto(args.backends.split(","), [int(b) for b in args.auto.split(",")])
    if args.no_qat:
        return
    print(f"# low-bit LeNet-5 on MNIST: `quantize FORM mode=qat epochs={args.epochs}`\n")
    print("| backend | form | fp32 | after QAT | change (points) | gzip size | fp32 / gzip | lat b1 ms (fp32 -> form) | step s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for be in args.backends.split(","):
        for form in args.forms.split(","):
            rep = one(be, f"quantize {form} mode=qat epochs={args.epochs}")
            base, q = rep["steps"][0]["metrics"], rep["steps"][1]["metrics"]
            fp32_bytes = 4 * base["params"]
            lat = f"{base.get('latency_ms_b1') or 0:.3f} -> {q.get('latency_ms_b1') or 0:.3f}"
            print(f"| {be} | {form} | {100 * base['accuracy']:.2f}% | {100 * q['accuracy']:.2f}% "
                  f"| {100 * (q['accuracy'] - base['accuracy']):+.2f} | {q['size_gzip_bytes'] / 1024:.1f} KiB "
                  f"| {fp32_bytes / q['size_gzip_bytes']:.1f}x | {lat} | {q['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
