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

``--auto 2,4``: ``quantize auto budget=B`` (bits per layer from the measured sensitivity: KL
of the outputs on 256 calibration images, one layer at a time quantized) against uniform
``int2``/``int4`` at the same average bits, weights only (no training), so the comparison is
the choice alone; ``--auto-models lenet5:mnist,lenet300:mnist,...`` runs it on several models and
data sets (each from its backend's 3-epoch baseline).

``--latency``: the CPU's flags (avx2, avx512f, avx512_vnni, amx_tile from /proc/cpuinfo), then
per backend and weight form (``quantize FORM``, weights only, from the same baseline) the
median latency at batch 1 and 64 (1 thread) of the fp32 model and of the quantized one, timed
alternately in this one process (3 rounds, the median): in the framework (float kernels on
``codes * scale``) and in the deployable runtime (torch: ONNX Runtime, the weights as int8
containers behind DequantizeLinear, or 16-bit ones behind Cast; tensorflow: LiteRT, the
dynamic-range or float16 ``.tflite``). No int4/int2/ternary/binary CPU kernel exists in either
runtime: those forms run float (or, in LiteRT, int8 hybrid) kernels, so their gain is size.

    LWDSL_DATA=../shared/data python bench/lowbit_bench.py [--backends torch,tensorflow]
        [--forms ternary,binary] [--epochs 10] [--auto 2,4] [--auto-models lenet5:mnist,...] [--no-qat] [--latency]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


import lwdsl  # noqa: E402


from int8_accuracy import one  # noqa: E402  (one run in a temp folder, its report)


def auto(backends: list[str], budgets: list[int], cases: list[str]) -> None:
    print("# `quantize auto budget=B` against uniform int<B> (weights only, no training)\n")
    print("| backend | model on data | budget | fp32 | uniform int<B> | auto | auto average bits | auto forms (in layer order) |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for be in backends:
        for case in cases:
            model, _, data = case.partition(":")
            data = data or "mnist"
            for budget in budgets:
                uni = one(be, f"quantize int{budget}", model, data, latency=False)
                rep = one(be, f"quantize auto budget={budget}", model, data, latency=False)
                base, u, a = uni["steps"][0]["metrics"], uni["steps"][1]["metrics"], rep["steps"][1]
                notes = a.get("auto_bits", {})
                forms = ", ".join(r["form"] for r in notes.get("layers", []))
                print(f"| {be} | {model} on {data} | {budget} | {100 * base['accuracy']:.2f}% | {100 * u['accuracy']:.2f}% "
                      f"| {100 * a['metrics']['accuracy']:.2f}% | {notes.get('average_bits', float('nan')):.2f} | {forms} |", flush=True)
    print()


def cpu_flags() -> str:
    """Which of avx2, avx512f, avx512_vnni, amx_tile /proc/cpuinfo lists (and the model name)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    flags = set()
    model = ""
    for line in text.splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
        elif line.startswith("model name") and not model:
            model = line.split(":", 1)[1].strip()
    wanted = ("avx2", "avx512f", "avx512_vnni", "amx_tile")
    have = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in wanted)
    return f"{model}: {have}; {os.cpu_count()} logical cores"


def _median_ms(call, budget_s: float = 0.25, min_runs: int = 10, max_runs: int = 200) -> float:
    for _ in range(3):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_runs or (len(times) < max_runs and time.perf_counter() < deadline):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def _torch_timers(be, handle, batch: int):
    """(framework timer, runtime timer, what the runtime runs) of a torch handle at ``batch``."""
    import torch

    from lwdsl.backend.onnx_int8 import half_onnx
    from lwdsl.backends.torch_backend.int8_engine import build_onnx, export_float, session

    module = handle.module.eval()
    x = torch.randn(batch, *handle.input_shape, generator=torch.Generator().manual_seed(0))

    def eager():
        with torch.inference_mode():
            module(x)

    if handle.quant:
        model, what = build_onnx(handle)[0], "ORT: int8 weights -> DequantizeLinear -> float32 Conv/Gemm"
    elif handle.qstate.casts:
        model, _ = half_onnx(export_float(module, handle.input_shape), handle)
        what = "ORT: 16-bit weights -> Cast -> float32 Conv/Gemm"
    else:
        model, what = export_float(module, handle.input_shape), "ORT: float32"
    sess = session(model, 1)
    feed = {sess.get_inputs()[0].name: x.numpy()}
    return eager, (lambda: sess.run(None, feed)), what


def _tf_timers(be, handle, batch: int):
    """(framework timer, runtime timer, what the runtime runs) of a Keras handle at ``batch``."""
    from lwdsl.backends.tf_backend import tflite_engine
    from lwdsl.backends.tf_backend._tf import tf
    from lwdsl.backends.tf_backend.layers import nhwc
    from lwdsl.errors import LwdslError

    model = handle.model
    shape = tuple(int(d) for d in model.input_shape[1:])
    x = tf.constant(np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32))
    forward = tf.function(lambda t: model(t, training=False))

    def keras():
        forward(x).numpy()

    try:
        data, kind = tflite_engine.convert(handle)
    except LwdslError:  # bf16: no TFLite form
        return keras, None, "no .tflite (bf16 has no TFLite form)"
    it = tflite_engine.interpreter(data, 1)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], [batch, *shape])
    it.allocate_tensors()
    it.set_tensor(inp["index"], np.ascontiguousarray(nhwc(np.zeros((batch, shape[-1], *shape[:-1]), np.float32))))
    what = {"float32": "LiteRT: float32", "fp16": "LiteRT: float16 weights -> DEQUANTIZE -> float32 kernels",
            "dynamic-range": "LiteRT dynamic-range: int8 weights, int8 hybrid kernels"}.get(kind, f"LiteRT {kind}")
    return keras, it.invoke, what


def latency(backends: list[str], forms: list[str]) -> None:
    from lwdsl.backend import get_backend

    print("# CPU latency of what runs, fp32 beside each form (1 thread, median ms, 3 alternating rounds)\n")
    print(f"CPU: {cpu_flags()}\n")
    print("| backend | form | runs in | what runs | b1 fp32 | b1 form | b64 fp32 | b64 form | form / fp32 (b64) |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for name in backends:
        be = get_backend(name)
        fw = "torch eager" if name == "torch" else "Keras (tf.function)"
        for form in forms:
            with tempfile.TemporaryDirectory(prefix="lwdsl-bench-") as tmp:
                step = "quantize int8 weights_only" if form == "int8" else f"quantize {form}"
                result = lwdsl.run(step, "lenet5", backend=name, data="mnist", quiet=True, out=Path(tmp) / "run")
                lock = json.loads((Path(tmp) / "run" / "lwdsl.lock.json").read_text())
            base = be.load_model("lenet5", (1, 28, 28), 10, checkpoint=Path(lock["baseline"]["path"]))
            timers = _torch_timers if name == "torch" else _tf_timers
            rows: dict[str, dict[str, list[float]]] = {}
            whats = {}
            for batch in (1, 64):
                f_fw, f_rt, _ = timers(be, base, batch)
                q_fw, q_rt, what = timers(be, result.model, batch)
                whats["rt"] = what
                for _ in range(3):  # alternate, so drift in the machine's load hits both alike
                    for key, call in (("fw fp32", f_fw), ("fw form", q_fw), ("rt fp32", f_rt), ("rt form", q_rt)):
                        if call is not None:
                            rows.setdefault(key, {}).setdefault(batch, []).append(_median_ms(call))
            for where, label in (("fw", fw), ("rt", "runtime")):
                def ms(key, batch):
                    vals = rows.get(f"{where} {key}", {}).get(batch)
                    return statistics.median(vals) if vals else None

                cells = [ms(k, b) for b in (1, 64) for k in ("fp32", "form")]
                ratio = f"{cells[3] / cells[2]:.2f}x" if cells[2] and cells[3] else "-"
                what = "float32 kernels on the rounded weights" if where == "fw" else whats["rt"]
                fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
                print(f"| {name} | {form} | {label} | {what} | " + " | ".join(fmt(c) for c in cells) + f" | {ratio} |", flush=True)
    print("\nint4, int2, ternary and binary have no CPU kernel in torch, ONNX Runtime or LiteRT: they run float32 "
          "kernels on codes * scale (LiteRT: its int8 hybrid kernels on int8 containers), so their gain is size, "
          "not speed; fp16/bf16 weights are widened to float32 at load.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="torch,tensorflow")
    parser.add_argument("--forms", default="ternary,binary,int4,int2")
    parser.add_argument("--epochs", type=int, default=10, help="QAT epochs (the TWN reproduction used 10)")
    parser.add_argument("--auto", default="", help="budgets for quantize auto against uniform int<B>, e.g. 2,4")
    parser.add_argument("--auto-models", default="lenet5:mnist",
                        help="MODEL:DATA cases of --auto, e.g. lenet5:mnist,lenet5:fashion_mnist,lenet300:mnist,seedcnn:mnist")
    parser.add_argument("--no-qat", action="store_true", help="skip the QAT table")
    parser.add_argument("--latency", default="", help="forms to time beside fp32, e.g. int8,int4,int2,ternary,binary,fp16,bf16")
    args = parser.parse_args()
    if args.latency:
        latency(args.backends.split(","), args.latency.split(","))
    if args.auto:
        auto(args.backends.split(","), [int(b) for b in args.auto.split(",")], args.auto_models.split(","))
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
