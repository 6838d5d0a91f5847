"""Run the conformance cases on both backends and write docs/conformance.md.

The cases are those of tests/conformance/cases.py (the suite asserts on the same ones). Each
row is one op and option: what each backend does with it and whether their results agree
(bit-identical canonical weights for pruning; losses and weights within the stated
tolerances for training). Ops a backend does not run are listed with its own reason.

    python bench/conformance_table.py [--out docs/conformance.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lwdsl.backends.tf_backend._tf  # noqa: E402,F401  (before torch's Triton: see tf_backend/_tf.py)
from lwdsl.language.formatter import step_to_text  # noqa: E402
from lwdsl.language.specs import DistillSpec, ExportSpec, QuantizeSpec  # noqa: E402
from tests.conformance import cases as C  # noqa: E402


def _spec_text(case: C.PruneCase) -> str:
    parts = [f"{k}={v['n']}:{v['m']}" if k == "nm" else f"{k}={v}" for k, v in case.spec.items()]
    return "prune " + " ".join(parts) + (f" on {', '.join(case.layers)}" if case.layers else "")


def _support_rows() -> list[str]:
    rows = []
    steps = [DistillSpec()] + [ExportSpec(format=f) for f in ("onnx", "torch", "tflite", "saved_model", "keras")]
    for step in steps:
        what = f"{step.op} {getattr(step, 'format', getattr(step, 'dtype', ''))}".strip()
        cells = []
        for name in C.BACKENDS:
            reason = C.backend(name).unsupported(step)
            cells.append("runs" if reason is None else f"not run: {reason}")
        compared = _COMPARED_IN_TESTS.get(step.op, "not compared")
        rows.append(f"| {what} | | {cells[0]} | {cells[1]} | {compared} |")
    rows.append("| quantize (batch-norm folding) | conv, depthwise, linear | runs | runs | "
                + _COMPARED_IN_TESTS["fold"] + " |")
    rows.append("| prune structured=filters remove=true across residual adds and depthwise convs (resnet8, "
                "a MobileNetV2-style net) | coupled groups | runs | runs | " + _COMPARED_IN_TESTS["groups"] + " |")
    rows.append("| quantize auto budget=1.5, 3, 6 (lenet5, seedcnn, half pruned) | per_channel | runs | runs | "
                + _COMPARED_IN_TESTS["auto"] + " |")
    return rows


#: Ops the suite compares in their own conformance tests (too slow to rerun for this table).
_COMPARED_IN_TESTS = {
    "auto": "compared in tests/conformance/test_quantize_parity.py: each backend measures the sensitivity on its own "
    "logits (same calibration images): within 2e-3 (relative); the core's choice, forms, codes and scales identical",
    "distill": "compared in tests/conformance/test_distill_parity.py: every loss term within 1e-6 (relative) of the "
    "numpy reference; 20+ steps of every form agree like fine-tuning",
    "fold": "compared in tests/conformance/test_fold_parity.py: folded weights, codes and scales bit-identical",
    "groups": "compared in tests/conformance/test_group_parity.py: same groups, bit-identical kept indices and "
    "weights, logits within 1e-4",
}


def _quant_forms() -> list[QuantizeSpec]:
    """int8 in every mode and granularity, then every weight form both backends run."""
    from lwdsl.backend import support_table

    specs = [QuantizeSpec(dtype="int8", mode=m, granularity=g, calibrate=128) for m in ("dynamic", "static") for g in ("per_channel", "per_tensor")]
    both = set.intersection(*(set(support_table(b).runs.get("quantize", ())) for b in C.BACKENDS))
    for dtype in ("int4", "int2", "ternary", "binary", "cluster"):
        if f"{dtype}/weights_only" in both:
            specs.append(QuantizeSpec(dtype=dtype, weights_only=True))
    return specs


def _quantize_rows() -> tuple[list[str], int]:
    """From one planted canonical state, each backend quantizes every conv/linear layer; the
    packed canonical states must be bit-identical (activation ranges: within 1e-5 of the
    range's width, each framework's own forward pass)."""
    import numpy as np

    rows, failures = [], 0
    data = C.dataset(256, 64)
    for model in ("lenet5", "seedcnn"):
        state = C.planted_state(model)
        for spec in _quant_forms():
            out = {}
            for name in C.BACKENDS:
                be = C.backend(name)
                handle = be.load_model(model, C.SHAPE, 10)
                be.load_state(handle, state)
                layers = [i.name for i in be.layers(handle) if i.kind in ("conv", "linear")]
                out[name] = be.state(be.finalize(be.apply(handle, spec, layers, C.context(data))))
            a, b = out["torch"], out["tensorflow"]
            bad, worst = sorted(set(a) ^ set(b)), 0.0
            for k in sorted(set(a) & set(b)):
                x, y = np.ascontiguousarray(a[k]), np.ascontiguousarray(b[k])
                if x.dtype != y.dtype or x.shape != y.shape:
                    bad.append(k)
                elif ".act." in k and x.dtype == np.float32:
                    worst = max(worst, float(np.max(np.abs(x - y) / np.maximum(np.abs(x), 1e-30), initial=0)))
                elif not np.array_equal(x.view(np.uint8), y.view(np.uint8)):
                    bad.append(k)
            ok = not bad and worst <= 1e-5
            failures += not ok
            codes = sum(int(np.asarray(v).size) for k, v in a.items() if k.endswith(".weight.codes"))
            detail = (f"{codes:,} code bytes, scales and biases: every bit the same"
                      + (f"; activation scales within {worst:.1e} (relative)" if ".act." in "".join(a) else "")) if ok else f"differ: {', '.join(bad[:3])}"
            text = step_to_text(spec)
            rows.append(f"| `{text}` ({model}) | {spec.granularity} | runs | runs | {'identical' if ok else 'DIFFERENT'} | {detail} |")
    return rows, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "conformance.md")
    args = parser.parse_args()
    start = time.perf_counter()
    lines = [
        "# Conformance: torch vs tensorflow",
        "",
        "Generated by `python bench/conformance_table.py` from the cases in",
        "`tests/conformance/cases.py` (the test suite asserts on the same cases). Both backends load",
        "the same canonical weights (with planted ties), run the same step, and their results are",
        "compared. Tolerances: " + ", ".join(f"{k} {v:g}" for k, v in C.TOLERANCE.items())
        + f", Adam weights lr x {C.STEPS} (see docs/semantics.md).",
        "",
        "| op | option | torch | tensorflow | status | detail |",
        "|---|---|---|---|---|---|",
    ]
    failures = 0
    for case in C.PRUNE_CASES:
        o = C.prune_outcome(case)
        failures += not o.ok
        detail = o.detail or f"{int(o.figures['zeros']):,} zero weights, every bit the same"
        lines.append(f"| `{_spec_text(case)}` ({case.model}) | {case.option} | runs | runs | {o.status} | {detail} |")
    for case in C.TRAIN_CASES:
        o = C.train_outcome(case)
        failures += not o.ok
        opts = f"{case.spec.op} {case.spec.optimizer} lr={case.spec.lr:g} batch={case.spec.batch}"
        lines.append(f"| `{opts}` (lenet5) | {case.id}{' ' + case.batch_note if case.batch_note else ''} | runs | runs | {o.status} | {o.detail} |")
    qrows, qfail = _quantize_rows()
    lines += qrows
    failures += qfail
    lines += _support_rows()
    lines += ["", f"{failures} case(s) not identical or out of tolerance; generated in {time.perf_counter() - start:.0f} s.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out} ({failures} failing)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
