"""int8 against fp32 on the torch side: lwdsl's artifact beside the flows a user builds by hand.

For each model (``lenet5`` on 1x28x28, ``torchvision:resnet18`` and ``torchvision:mobilenet_v2``
on synthetic 3x224x224, 1000 classes, random weights: speed and size do not depend on training),
batch 1 and 32, 1 and 2 threads, median latency (ms) and artifact size of:

- ``torch fp32``: eager, ``torch.inference_mode``;
- ``ORT fp32``: the float ONNX export in ONNX Runtime;
- ``torch.ao FX``: ``prepare_fx``/``convert_fx`` with the x86 default qconfig mapping (static,
  per-channel weights), calibrated on the same images (the deprecated flow, silenced here);
- ``ORT qs S8S8`` / ``ORT qs U8S8rr``: ``onnxruntime.quantization.quantize_static`` on the float
  ONNX file, QDQ, per-channel; int8 activations, or uint8 with ``reduce_range`` (the by-hand
  ONNX flows);
- ``lwdsl int8 ORT``: ``quantize int8 mode=static`` through the backend (batch norms folded,
  codes from the core), timed as the ONNX Runtime artifact ``export onnx`` writes;
- ``lwdsl int8 torch.ao``: the same step's codes and activation ranges on PyTorch's x86
  quantized kernels (backends/torch_backend/ao_engine.py; only where the CPU has VNNI/AMX);
  ``lwdsl run`` reports the faster of the two at each batch size;
- ``lwdsl prune+int8``: ``prune l2 50% structured=filters remove=true on conv`` (channels that
  meet at a residual addition or a depthwise conv are removed together, as one group), then
  the same int8 step (pruning and quantization multiply).

Ratios are against torch fp32 at the same batch and threads, measured in the same run. The
CPU's flags and the kernels each engine picks are printed first, since int8 speed depends on
them (VNNI / AMX give int8 dot products; AVX2 alone caps int8 near 2x fp32).

    python bench/int8_bench.py [--models lenet5,resnet18,mobilenet_v2] [--threads 1,2]
                               [--batches 1,32] [--calibrate 32] [--budget 2]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fnmatch
import io
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from lwdsl.backend import Dataset, StepContext, get_backend
from lwdsl.progress import NullBar
from lwdsl.specs import PruneSpec, QuantizeSpec

MODELS = {
    "lenet5": ("lenet5", (1, 28, 28), 10, "conv*"),
    "resnet18": ("torchvision:resnet18", (3, 224, 224), 1000, "*"),
    "mobilenet_v2": ("torchvision:mobilenet_v2", (3, 224, 224), 1000, "*"),
}


def cpu_line() -> str:
    flags = set()
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8"]
    have = [f for f in wanted if f in flags]
    return f"{model}; {os.cpu_count()} cores; flags: {' '.join(have) or 'none of ' + ' '.join(wanted)}"


def median_ms(fn, budget_s: float, min_runs: int = 5, max_runs: int = 200) -> float:
    for _ in range(2):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_runs or (len(times) < max_runs and time.perf_counter() < deadline):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def size_of_torch(module: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return len(buf.getvalue())


def ort_session(model_bytes: bytes, threads: int):
    from lwdsl.backends.torch_backend.int8_engine import session

    return session(model_bytes, threads)


def torch_ao_fx(module: torch.nn.Module, calib: torch.Tensor):
    """The by-hand torch.ao FX static flow (x86), its deprecation notices kept out of the output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        torch.backends.quantized.engine = "x86"
        m = copy.deepcopy(module).eval()
        prepared = prepare_fx(m, get_default_qconfig_mapping("x86"), (calib[:1],))
        with torch.inference_mode():
            for i in range(0, len(calib), 8):
                prepared(calib[i : i + 8])
        return convert_fx(prepared)


def ort_quantize_static(float_bytes: bytes, calib: np.ndarray, activation: str, reduce_range: bool) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        src.write_bytes(float_bytes)
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            quantize_static(
                str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                activation_type=QuantType.QInt8 if activation == "s8" else QuantType.QUInt8, weight_type=QuantType.QInt8,
            )
        return dst.read_bytes()


def lwdsl_artifact(ref, shape, classes, calib: np.ndarray, prune_pattern):
    """(onnx bytes, info) of lwdsl's int8 artifact, optionally after structured removal."""
    from lwdsl.backends.torch_backend.int8_engine import build_onnx

    backend = get_backend("torch")
    handle = backend.load_model(ref, shape, classes)
    data = Dataset("synthetic", calib, np.zeros(len(calib), np.int64), calib[:1], np.zeros(1, np.int64), classes)
    warned: list[str] = []
    ctx = StepContext(data=data, seed=0, index=0, progress=lambda total, description: NullBar(), warn=warned.append)
    if prune_pattern:
        layers = [l.name for l in backend.layers(handle) if l.kind == "conv" and fnmatch.fnmatchcase(l.name, prune_pattern)]
        handle = backend.apply(handle, PruneSpec(method="l2", amount=0.5, structured="filters", remove=True), layers, ctx)
    layers = [l.name for l in backend.layers(handle) if l.kind in ("conv", "linear")]
    t0 = time.perf_counter()
    handle = backend.apply(handle, QuantizeSpec(dtype="int8", mode="static", calibrate=len(calib)), layers, ctx)
    seconds = time.perf_counter() - t0
    model, info = build_onnx(handle)
    from lwdsl.backends.torch_backend import ao_engine

    ok, why = ao_engine.usable(handle)
    ao = ao_engine.build(handle)[0] if ok else None
    return model.SerializeToString(), info, backend.stats(handle).params, seconds, warned, (ao, why)


def run_model(key: str, threads_list, batches, n_calib: int, budget: float) -> None:
    from lwdsl.backends.torch_backend.int8_engine import export_float
    from lwdsl.backends.torch_backend.models import build_model

    ref, shape, classes, prune_pattern = MODELS[key]
    torch.manual_seed(0)
    module = build_model(ref, shape, classes).eval()
    gen = torch.Generator().manual_seed(0)
    calib_t = torch.randn(n_calib, *shape, generator=gen)
    calib = calib_t.numpy()
    float_onnx = export_float(module, shape).SerializeToString()

    artifacts: dict[str, tuple[str, object, int]] = {}  # name -> (kind, model, bytes)
    artifacts["torch fp32"] = ("torch", module, size_of_torch(module))
    artifacts["ORT fp32"] = ("onnx", float_onnx, len(float_onnx))
    fx = torch_ao_fx(module, calib_t)
    artifacts["torch.ao FX"] = ("torch", fx, size_of_torch(fx))
    s8 = ort_quantize_static(float_onnx, calib, "s8", False)
    artifacts["ORT qs S8S8"] = ("onnx", s8, len(s8))
    u8 = ort_quantize_static(float_onnx, calib, "u8", True)
    artifacts["ORT qs U8S8rr"] = ("onnx", u8, len(u8))
    ours, info, _, secs, warned, (ao, why) = lwdsl_artifact(ref, shape, classes, calib, None)
    artifacts["lwdsl int8 ORT"] = ("onnx", ours, len(ours))
    if ao is not None:
        artifacts["lwdsl int8 torch.ao"] = ("torch", ao, size_of_torch(ao))
    print(f"\n## {ref} ({'x'.join(map(str, shape))}, {classes} classes)")
    print(f"lwdsl int8: {len(info['int8'])} layers int8 in the artifact, float: {info['float'] or 'none'}; quantize step {secs:.1f} s")
    print(f"lwdsl int8 torch.ao: {'built from the same codes' if ao is not None else 'not used: ' + why}")
    for w in warned:
        print(f"  warning: {w}")
    params = None
    if prune_pattern:
        pruned, pinfo, params, _, _, (pao, _) = lwdsl_artifact(ref, shape, classes, calib, prune_pattern)
        artifacts["lwdsl prune+int8 ORT"] = ("onnx", pruned, len(pruned))
        if pao is not None:
            artifacts["lwdsl prune+int8 torch.ao"] = ("torch", pao, size_of_torch(pao))
    dense_params = sum(p.numel() for p in module.parameters())
    if params:
        print(f"lwdsl prune+int8: structured 50% on conv ({prune_pattern}), params {dense_params:,} -> {params:,}")

    base_size = artifacts["torch fp32"][2]
    cols = [f"b{b}/t{t}" for t in threads_list for b in batches]
    print("\n| flow | size | smaller | " + " | ".join(f"{c} ms | x" for c in cols) + " |")
    print("|---|---:|---:|" + "---:|---:|" * len(cols))
    results: dict[str, dict[str, float]] = {}
    for t in threads_list:
        torch.set_num_threads(t)
        for b in batches:
            x_t = torch.randn(b, *shape, generator=torch.Generator().manual_seed(1))
            x = x_t.numpy()
            for name, (kind, obj, _) in artifacts.items():
                if kind == "torch":
                    def fn(obj=obj):
                        with torch.inference_mode():
                            obj(x_t)
                else:
                    sess = ort_session(obj, t)
                    feed = {sess.get_inputs()[0].name: x}

                    def fn(sess=sess, feed=feed):
                        sess.run(None, feed)
                results.setdefault(name, {})[f"b{b}/t{t}"] = median_ms(fn, budget)
    for name, (_, _, size) in artifacts.items():
        row = [name, f"{size / 2**20:.2f} MiB", f"{base_size / size:.2f}x"]
        for c in cols:
            ms = results[name][c]
            row += [f"{ms:.2f}", f"{results['torch fp32'][c] / ms:.2f}x"]
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,resnet18,mobilenet_v2")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--calibrate", type=int, default=32, help="synthetic calibration images")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed runs per cell (at least 5 runs)")
    args = parser.parse_args()
    import onnxruntime

    print(f"# int8 vs fp32 (torch side)\nCPU: {cpu_line()}")
    print(f"torch {torch.__version__} (CPU capability {torch.backends.cpu.get_cpu_capability()}, quantized engines "
          f"{', '.join(torch.backends.quantized.supported_engines)}); onnxruntime {onnxruntime.__version__} "
          f"(MLAS picks its int8 kernels from the flags above: VNNI/AMX when present)")
    for key in args.models.split(","):
        run_model(key.strip(), [int(t) for t in args.threads.split(",")], [int(b) for b in args.batches.split(",")],
                  args.calibrate, args.budget)


if __name__ == "__main__":
    main()
