"""int8 against fp32 on the TensorFlow side: TFLite artifacts timed in the LiteRT interpreter.

For ``lenet5`` (1x28x28) and ``keras:MobileNetV2`` (synthetic 3x224x224, 1000 classes, random
weights: speed and size do not depend on training), batch 1 and 32, 1 and 2 interpreter
threads, median latency (ms) and file size of:

- ``Keras fp32``: the model itself (``model(x)`` in a ``tf.function``, the backend's timer);
- ``TFLite fp32``: plain conversion;
- ``TFLite dyn (hand)`` / ``TFLite int8 (hand)``: what a user gets from the converter by hand
  (``Optimize.DEFAULT``; plus a representative data set and ``TFLITE_BUILTINS_INT8`` for full
  integer), on the same calibration images;
- ``lwdsl int8``: ``quantize int8 mode=static`` through the backend (codes from the core,
  batch norms folded), its ``.tflite`` artifact;
- ``lwdsl prune+int8`` (lenet5): ``prune l2 50% structured=filters remove=true`` on the
  convolutions, then the same int8 step.

Ratios are against TFLite fp32 at the same batch and threads, in the same run.

    python bench/tflite_bench.py [--models lenet5,mobilenet_v2] [--threads 1,2] [--batches 1,32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics


import numpy as np  # noqa: E402

from lwdsl.backend import Dataset, StepContext, get_backend  # noqa: E402
from lwdsl.runner.progress import NullBar  # noqa: E402
from lwdsl.language.specs import PruneSpec, QuantizeSpec  # noqa: E402

MODELS = {
    "lenet5": ("lenet5", (1, 28, 28), 10, "conv*"),
    "mobilenet_v2": ("keras:MobileNetV2", (3, 224, 224), 1000, None),
}


def _ctx(calib: np.ndarray, classes: int, warned: list) -> StepContext:
    data = Dataset("synthetic", calib, np.zeros(len(calib), np.int64), calib[:1], np.zeros(1, np.int64), classes)
    return StepContext(data=data, seed=0, index=0, progress=lambda total, what: NullBar(), warn=warned.append)


def by_hand(model, calib_nhwc: np.ndarray, full: bool) -> bytes:
    from lwdsl.backends.tf_backend._tf import quiet_stderr, quiet_stdout, tf

    with quiet_stderr(), quiet_stdout():
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if full:
            conv.representative_dataset = lambda: ([calib_nhwc[i : i + 1]] for i in range(len(calib_nhwc)))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return conv.convert()


def run_model(key: str, threads_list, batches, n_calib: int, rounds: int) -> None:
    from lwdsl.backends.tf_backend import tflite_engine
    from lwdsl.backends.tf_backend.layers import nhwc

    ref, shape, classes, prune_pattern = MODELS[key]
    backend = get_backend("tensorflow")
    calib = np.random.default_rng(0).standard_normal((n_calib, *shape)).astype(np.float32)
    warned: list[str] = []
    handle = backend.load_model(ref, shape, classes)
    keras_ms = {b: backend.latency_ms(handle, b, shape, 1) for b in batches}
    float_bytes, _ = tflite_engine.convert(handle)
    files = {"TFLite fp32": float_bytes}
    files["TFLite dyn (hand)"] = by_hand(handle.model, nhwc(calib), False)
    files["TFLite int8 (hand)"] = by_hand(handle.model, nhwc(calib), True)
    layers = [l.name for l in backend.layers(handle) if l.kind in ("conv", "linear")]
    ctx = _ctx(calib, classes, warned)
    handle = backend.apply(handle, QuantizeSpec(dtype="int8", mode="static", calibrate=n_calib), layers, ctx)
    files["lwdsl int8"], kind = tflite_engine.artifact(handle)
    notes = tflite_engine.report(files["lwdsl int8"], kind, handle, ctx)
    agree = notes.get("code_agreement", {})
    if prune_pattern:
        pruned = backend.load_model(ref, shape, classes)
        pctx = _ctx(calib, classes, warned)
        convs = [l.name for l in backend.layers(pruned) if l.kind == "conv"]
        pruned = backend.apply(pruned, PruneSpec(method="l2", amount=0.5, structured="filters", remove=True), convs, pctx)
        layers = [l.name for l in backend.layers(pruned) if l.kind in ("conv", "linear")]
        pruned = backend.apply(pruned, QuantizeSpec(dtype="int8", mode="static", calibrate=n_calib), layers, pctx)
        files["lwdsl prune+int8"], _ = tflite_engine.artifact(pruned)
    print(f"\n## {ref} ({'x'.join(map(str, shape))}, {classes} classes)")
    print(f"lwdsl int8: codes equal to the canonical ones {agree.get('equal', 0):,} / {agree.get('total', 0):,}; "
          f"float layers in the file: {notes.get('float_layers') or 'none'}; converter also quantized: "
          f"{len(notes.get('quantized_by_converter', []))} layers lwdsl left float")
    for w in dict.fromkeys(warned):
        print(f"  warning: {w}")
    print("Keras fp32 (1 thread): " + ", ".join(f"b{b} {keras_ms[b]:.2f} ms" for b in batches))
    cols = [(b, t) for t in threads_list for b in batches]
    # interleaved rounds: each round times every file in every cell (the core's protocol, 0.3 s
    # budget), so a change of load moves all flows alike; the table shows medians over rounds,
    # "paired" the median over rounds of (converter by hand ms / lwdsl ms) taken within a round
    from lwdsl.backend.timing import Protocol, fixed_input, median_ms

    protocol = Protocol(budget_s=0.3)
    bound = {(name, c): tflite_engine.LITERT.load(data, c[1])(fixed_input(c[0], shape)) for name, data in files.items() for c in cols}
    times: dict[tuple[str, tuple[int, int]], list[float]] = {k: [] for k in bound}
    for _ in range(rounds):
        for k, call in bound.items():
            times[k].append(median_ms(call, protocol))
    res = {name: {c: statistics.median(times[(name, c)]) for c in cols} for name in files}
    paired = {c: statistics.median(h / m for h, m in zip(times[("TFLite int8 (hand)", c)], times[("lwdsl int8", c)])) for c in cols}
    base = len(files["TFLite fp32"])
    print("\n| flow | size | smaller | " + " | ".join(f"b{b}/t{t} ms | x" for b, t in cols) + " |")
    print("|---|---:|---:|" + "---:|---:|" * len(cols))
    for name, data in files.items():
        row = [name, f"{len(data) / 2**20:.2f} MiB", f"{base / len(data):.2f}x"]
        for c in cols:
            row += [f"{res[name][c]:.2f}", f"{res['TFLite fp32'][c] / res[name][c]:.2f}x"]
        print("| " + " | ".join(row) + " |")
    print("| lwdsl int8 / converter int8 by hand (speed; paired per round) | | | "
          + " | ".join(f" | {paired[c]:.2f}" for c in cols) + " |")
    print(f"({rounds} interleaved rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,mobilenet_v2")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--calibrate", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    args = parser.parse_args()
    import ai_edge_litert

    from int8_bench import cpu_line  # noqa: E402 - same folder

    from lwdsl.backends.tf_backend._tf import tf

    print(f"# TFLite int8 vs fp32\nCPU: {cpu_line()}")
    print(f"tensorflow {tf.__version__}, ai-edge-litert {getattr(ai_edge_litert, '__version__', '?')} "
          "(LiteRT's XNNPACK delegate runs fp32 and int8; its int8 kernels use VNNI when present)")
    for key in args.models.split(","):
        run_model(key.strip(), [int(t) for t in args.threads.split(",")], [int(b) for b in args.batches.split(",")], args.calibrate, args.rounds)


if __name__ == "__main__":
    main()
