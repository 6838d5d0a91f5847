"""A language model's int8 ONNX Runtime file (issue 25): lwdsl's W8A8 file against ONNX Runtime's
fp32 and ONNX Runtime's own int8 made by hand, on tiny-llama with ``--data pydoc``.

Through ``lwdsl.run`` (torch backend; the baseline trained ``--baseline-epochs`` and cached in
LWDSL_CACHE): ``export onnx`` of the float baseline (the fp32 file), then ``RECIPE`` (default
``quantize int8 calibrate=128``; ``--smooth`` puts ``smoothquant alpha=0.5 calibrate=128`` before
it) whose step writes ``model-int8-step<N>.onnx``: lwdsl's int8 codes and calibrated input scales
in QDQ form, run by ONNX Runtime as ``MatMulIntegerToFloat``. Beside them, ONNX Runtime's
documented flows by hand on the fp32 file:

- ``ORT dynamic``: ``quant_pre_process`` then ``quantize_dynamic(weight_type=QuantType.QInt8)``
  (its documented default for transformers: U8S8, per-tensor weights, every MatMul with a
  constant B; the activations' range taken per call);
- ``ORT dynamic per-channel``: the same with ``per_channel=True``;
- ``ORT static QDQ``: ``quant_pre_process`` then ``quantize_static`` (QDQ, uint8 activations,
  int8 per-channel weights, MinMax over the same 128 training sequences lwdsl calibrates on,
  ``op_types_to_quantize=["MatMul"]``: lwdsl's W8A8 quantizes the linears' MatMuls; ORT's also
  takes the attention MatMuls of two activations).

Printed: each file's size, the ops ONNX Runtime runs int8 / weighted float, its perplexity on
the pydoc test sequences (next-token, ``lwdsl.backend.engines.lm_quality``) beside lwdsl's own
evaluation of the simulated model, and its latency at batch 1 and ``--batch`` (sequence length
128, 1 intra-op thread: the reports' setting) by the core's protocol
(``lwdsl.backend.timing.median_ms``, ``--budget`` s a figure) on ``fixed_tokens``, in
``--rounds`` interleaved rounds (every file once per round); the figure is the median of the
rounds. The last rows: lwdsl's file against the fastest by-hand int8 file, paired per round.
CPU model, flags and load are printed first.

    LWDSL_DATA=... LWDSL_CACHE=... python bench/lm_onnx_bench.py [--baseline-epochs 1] [--rounds 5]
        [--batch 8] [--smooth] [--budget 0.5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

import lwdsl
from lwdsl.backend.engines import lm_quality
from lwdsl.backend.onnx_int8 import runtime_ops, session
from lwdsl.backend.timing import Protocol, fixed_tokens, median_ms

MODEL = "tiny-llama"


def ort_by_hand(fp32: Path, out: Path, calib: np.ndarray, how: str) -> Path:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    if not pre.exists():
        quant_pre_process(str(fp32), str(pre))
    if how.startswith("dynamic"):
        quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=how.endswith("per-channel"))
        return out

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                    op_types_to_quantize=["MatMul"], extra_options={"ActivationSymmetric": False})
    return out


def inventory(path: Path) -> str:
    from lwdsl.backend.onnx_int8 import FLOAT_OPS, INT8_OPS

    ops = runtime_ops(path.read_bytes())
    int8 = sum(n for op, n in ops.items() if op in INT8_OPS)
    kinds = ", ".join(f"{op} x{n}" for op, n in ops.items() if op in INT8_OPS | FLOAT_OPS)
    return f"int8 ops {int8} ({kinds})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-epochs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--smooth", action="store_true")
    args = ap.parse_args()
    from int8_bench import cpu_line  # noqa: E402 - same folder

    print(f"CPU: {cpu_line()}")
    recipe = ("smoothquant alpha=0.5 calibrate=128\n" if args.smooth else "") + "quantize int8 calibrate=128\n"
    with tempfile.TemporaryDirectory(prefix="lm-onnx-bench-") as tmp:
        tmp = Path(tmp)
        lwdsl.run("export onnx\n", MODEL, backend="torch", data="pydoc", out=tmp / "fp32", baseline_epochs=args.baseline_epochs,
                  latency=False, quiet=True)
        result = lwdsl.run(recipe, MODEL, backend="torch", data="pydoc", out=tmp / "int8", baseline_epochs=args.baseline_epochs,
                           latency=False, quiet=True)
        steps = result.report["steps"]
        quant = steps[-1]
        lwdsl_ppl = quant["metrics"]["perplexity"]
        from lwdsl.data.builtin import load_data

        data = load_data("pydoc")
        vocab, seq = int(data.num_classes), int(data.input_shape[0])
        from lwdsl.semantics.order import calibration_indices

        calib = np.ascontiguousarray(data.train_x[calibration_indices(len(data.train_x), 128, 0)], dtype=np.int64)
        files = {"ORT fp32": tmp / "fp32" / "model.onnx", "lwdsl int8 file": tmp / "int8" / quant["int8_artifact"]["file"]}
        for how in ("dynamic", "dynamic per-channel", "static QDQ"):
            files[f"ORT {how}"] = ort_by_hand(files["ORT fp32"], tmp / f"ort-{how.replace(' ', '-')}.onnx", calib, how)
        print(f"{MODEL} on pydoc, sequence length {seq}, vocabulary {vocab}; recipe: {recipe.strip().replace(chr(10), ' | ')}; "
              f"baseline {args.baseline_epochs} epoch(s)")
        print(f"lwdsl's own evaluation (simulated W8A8 in torch): perplexity {lwdsl_ppl:.4f} "
              f"(float32 baseline {steps[0]['metrics']['perplexity']:.4f})")
        binds = {}
        for name, path in files.items():
            binds[name] = session(path.read_bytes(), 1)
            bind = _bind(binds[name])
            _, ppl = lm_quality(bind, data.test_x, data.test_y, vocab)
            print(f"  {name:24s} {path.stat().st_size / 1e6:6.2f} MB  perplexity {ppl:9.4f}  {inventory(path)}")
        protocol = Protocol(min_runs=5, budget_s=args.budget)
        batches = (1, args.batch)
        rounds: dict[tuple[str, int], list[float]] = {(n, b): [] for n in files for b in batches}
        for r in range(args.rounds):
            for b in batches:
                x = fixed_tokens(b, (seq,), vocab)
                for name in files:
                    rounds[(name, b)].append(median_ms(_bind(binds[name])(x), protocol))
        print(f"latency (ms, median of {args.rounds} interleaved rounds, 1 thread; load now "
              f"{Path('/proc/loadavg').read_text().split()[0]})")
        for b in batches:
            base = statistics.median(rounds[("ORT fp32", b)])
            for name in files:
                ms = statistics.median(rounds[(name, b)])
                print(f"  batch {b:3d}  {name:24s} {ms:9.3f} ms  {base / ms:5.2f}x vs ORT fp32")
            hand = [n for n in files if n.startswith("ORT ") and n != "ORT fp32"]
            best = min(hand, key=lambda n: statistics.median(rounds[(n, b)]))
            paired = statistics.median(t / l for t, l in zip(rounds[(best, b)], rounds[("lwdsl int8 file", b)]))
            print(f"  batch {b:3d}  lwdsl's file vs the fastest by hand ({best}): {paired:.2f}x (paired per round; 1.00 = level)")
        print(json.dumps({"note": "figures above", "load": Path("/proc/loadavg").read_text().split()[:3]}))


def _bind(sess):
    name = sess.get_inputs()[0].name

    def bind(x):
        feed = {name: np.ascontiguousarray(x, dtype=np.int64)}
        return lambda: sess.run(None, feed)[0]

    return bind


if __name__ == "__main__":
    main()
