"""lwdsl's deployable int8 ONNX file against ONNX Runtime's own documented best flows, in one harness.

For each model (``lenet5`` trained briefly on real MNIST, 1x28x28; ``torchvision:resnet18`` and
``torchvision:mobilenet_v2`` on synthetic 3x224x224, 1000 classes, random weights: speed and
size do not depend on training), at each batch size and thread count, the median latency (ms)
and size of:

- ``torch fp32``: eager, ``torch.inference_mode`` (the ratios' base);
- ``ORT fp32``: the float ONNX export in ONNX Runtime (what the runtime gives without int8);
- ``ORT U8S8`` (ONNX Runtime's documented flow, its best by hand on x86):
  ``onnxruntime.quantization.shape_inference.quant_pre_process`` on the float file, then
  ``quantize_static`` with QDQ format, ``per_channel=True``, uint8 activations, int8 weights,
  MinMax calibration on the same images lwdsl calibrates on, ``reduce_range=False``;
- ``ORT S8S8``: the same with int8 activations;
- ``lwdsl file``: ``quantize int8 mode=static`` through the backend (norms folded, codes from
  the core, activation ranges from the core's observers), the bytes ``export onnx`` writes
  (int8_engine.build_onnx);
- ``lwdsl file, ORT-optimised`` (``--optimized``): the same file after ONNX Runtime's extended
  graph optimizations, saved (the form ``export onnx`` could ship if it ran faster);
- with ``--pt2e`` (``pip install 'lwdsl[pt2e]'``: torchao): ``PT2E x86 inductor``, torchao's
  documented x86 flow by hand (``torch.export``, ``X86InductorQuantizer`` default config,
  ``prepare_pt2e``/``convert_pt2e``, ``torch.compile(dynamic=False)`` with inductor freezing, one
  compiled graph per batch size; torchvision's residual blocks get one ReLU per call, which
  PT2E's quantizer needs), and ``lwdsl PT2E file``: the ``.pt2`` file ``export pt2e`` writes
  (pt2e_engine.py: the same flow with lwdsl's codes, scales and input ranges put in), saved,
  loaded back from disk with ``torch.export.load`` and compiled the same way;
- with ``--torch-ao``: ``torch.ao FX`` (``prepare_fx``/``convert_fx``, x86 default qconfig
  mapping) and ``lwdsl torch.ao`` (the in-process engine with lwdsl's codes).

OpenMP's idle threads spin briefly, then sleep (``OMP_WAIT_POLICY=PASSIVE``,
``GOMP_SPINCOUNT=10000``, set before torch loads, as ``lwdsl run`` sets them; printed first): on
the shared 2-core machine torch's 2-thread timings were otherwise up to 10x slower, and
400x in one run.

Timing: the core protocol (``lwdsl.backend.timing.median_ms``) with a small budget, in
``--rounds`` interleaved rounds (every flow once per round, so a load spike on the shared machine
hits all of them); the figure is the median of the rounds' medians. Ratios (``x``) are against
torch fp32 at the same batch and threads in the same run; the last row is the speed of lwdsl's
file (the faster of its two forms with ``--optimized``) over that of the fastest ORT by-hand
int8 file, paired: that ratio within each round, then the median over rounds (1.00 = level,
target >= 0.95); with ``--pt2e``, the same for lwdsl's PT2E file against PT2E by hand.
Each ONNX file's op inventory is the graph ONNX Runtime really runs (after its fusions): int8
ops, weighted ops left in float. The CPU's flags come first (int8 speed depends on them: VNNI /
AMX give int8 dot products).

    LWDSL_DATA=/path/to/data python bench/int8_bench.py [--models lenet5,resnet18,mobilenet_v2]
        [--threads 1,2 (the default)] [--batches 1,32] [--calibrate 16] [--rounds 5] [--budget 0.3]
        [--optimized] [--torch-ao] [--pt2e]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from lwdsl.backend.threads import quiet_openmp

#: before torch loads its OpenMP runtime, as `lwdsl run` does (idle threads spin briefly, then
#: sleep): on a shared machine, spinning idle threads made 2-thread torch timings up to 10x
#: slower (400x in one run)
OPENMP = quiet_openmp()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lwdsl.backend import Dataset, StepContext, get_backend
from lwdsl.backend.timing import Protocol, median_ms
from lwdsl.runner.progress import NullBar
from lwdsl.language.specs import QuantizeSpec

MODELS = {
    "lenet5": ("lenet5", (1, 28, 28), 10),
    "resnet18": ("torchvision:resnet18", (3, 224, 224), 1000),
    "mobilenet_v2": ("torchvision:mobilenet_v2", (3, 224, 224), 1000),
}

ORT_SETTINGS = {
    "ORT U8S8": "quant_pre_process(defaults) + quantize_static(QDQ, per_channel=True, activation=QUInt8, weight=QInt8, "
                "MinMax, reduce_range=False)",
    "ORT S8S8": "quant_pre_process(defaults) + quantize_static(QDQ, per_channel=True, activation=QInt8, weight=QInt8, "
                "MinMax, reduce_range=False)",
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
    load = ""
    with contextlib.suppress(OSError):
        load = f"; load {Path('/proc/loadavg').read_text().split()[0]}"
    return f"{model}; {os.cpu_count()} cores{load}; flags: {' '.join(have) or 'none of ' + ' '.join(wanted)}"


def size_of_torch(module: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return len(buf.getvalue())


def ort_best(float_bytes: bytes, calib: np.ndarray, activation: str) -> bytes:
    """ONNX Runtime's documented static flow: pre-process, then QDQ per-channel quantize_static."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = Path(tmp) / "f.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "q.onnx"
        src.write_bytes(float_bytes)
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            quant_pre_process(str(src), str(pre))
            quantize_static(
                str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
                activation_type=QuantType.QInt8 if activation == "s8" else QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        return dst.read_bytes()


def ort_optimized(data: bytes) -> bytes:
    """ONNX Runtime's extended graph optimizations of ``data`` (QDQ groups fused), saved."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "opt.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(out)
        opts.log_severity_level = 3
        ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        return out.read_bytes()


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


PT2E_SETTINGS = ("torch.export + torchao X86InductorQuantizer (get_default_x86_inductor_quantization_config: static, "
                 "per-channel weights) + prepare_pt2e / convert_pt2e + torch.compile(dynamic=False) with inductor freezing, "
                 "one graph per batch size (torchao's documented x86 CPU flow), channels-last inputs (the NHWC int8 "
                 "kernels need them)")
PT2E_FILE_SETTINGS = ("lwdsl's export pt2e file: the flow above with lwdsl's codes, scales and input ranges, saved without "
                      "float copies (torch.export.save), loaded back from disk (torch.export.load) and compiled the same way")


def torch_pt2e(module: torch.nn.Module, calib: torch.Tensor, batches: list[int]):
    """PT2E by hand, as torchao documents it for x86 CPUs (PT2E_SETTINGS); one compiled model
    per batch size (static shapes). None when torchao is not installed."""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    except ImportError:
        return None
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    calib = calib.contiguous(memory_format=torch.channels_last)  # inductor's int8 convolutions are NHWC
    from lwdsl.backends.torch_backend.pt2e_engine import one_relu_per_call

    m = one_relu_per_call(copy.deepcopy(module).eval())
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(m, (calib[:2],), dynamic_shapes=({0: batch},)).module()
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for i in range(0, len(calib), 8):
            prepared(calib[i : i + 8])
    converted = convert_pt2e(prepared)
    return converted, _compiled(converted, calib, batches)


def _compiled(module, calib: torch.Tensor, batches: list[int]) -> dict:
    """One ``torch.compile(dynamic=False)`` graph of ``module`` per batch size, compiled here."""
    compiled = {}
    with torch.no_grad():
        for b in batches:
            c = torch.compile(module, dynamic=False)
            c(calib[:1].repeat(b, *([1] * (calib.dim() - 1))).contiguous(memory_format=torch.channels_last))
            compiled[b] = c
    return compiled


def lwdsl_pt2e(handle, calib: torch.Tensor, batches: list[int]):
    """(the loaded program, compiled per batch, file size, codes read back from the file) of the
    ``.pt2`` file ``export pt2e`` writes, saved to disk and loaded back as a user does."""
    import torch._inductor.config as inductor_config

    from lwdsl.backends.torch_backend.pt2e_engine import PT2E, codes_in

    inductor_config.freezing = True
    data = PT2E.build(handle).data
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt2"
        path.write_bytes(data)
        program = torch.export.load(str(path)).module()
    return program, _compiled(program, calib.contiguous(memory_format=torch.channels_last), batches), len(data), codes_in(data)


def mnist_lenet5(backend, ctx_for, epochs: int):
    """(handle trained ``epochs`` on a 10k MNIST subset, the data set: full test set)."""
    from lwdsl.language.specs import TrainingOptions
    from lwdsl.data.builtin import load_data

    mnist = load_data("mnist", download=False)
    rng = np.random.default_rng(0)
    tr = rng.permutation(len(mnist.train_x))[:10_000]
    data = Dataset("mnist-10k", mnist.train_x[tr], mnist.train_y[tr], mnist.test_x, mnist.test_y, 10)
    torch.manual_seed(0)
    handle = backend.load_model("lenet5", (1, 28, 28), 10)
    backend.train(handle, TrainingOptions(epochs=epochs, lr=0.02, momentum=0.9), ctx_for(data))
    return handle, data


def run_model(key: str, args) -> None:
    from lwdsl.backend.engines import codes_agreement
    import torch_ao_peer as ao_engine  # bench/torch_ao_peer.py, beside this script
    from lwdsl.backends.torch_backend.int8_engine import build_onnx, export_float, onnx_file, run_onnx, runtime_ops, session

    ref, shape, classes = MODELS[key]
    backend = get_backend("torch")
    warned: list[str] = []

    def ctx_for(data):
        return StepContext(data=data, seed=0, index=0, progress=lambda total, description: NullBar(), warn=warned.append)

    t0 = time.perf_counter()
    if key == "lenet5":
        handle, data = mnist_lenet5(backend, ctx_for, args.lenet_epochs)
        calibrate = 512
    else:
        torch.manual_seed(0)
        handle = backend.load_model(ref, shape, classes)
        calib = torch.randn(args.calibrate, *shape, generator=torch.Generator().manual_seed(0)).numpy()
        data = Dataset("synthetic", calib, np.zeros(len(calib), np.int64), calib[:1], np.zeros(1, np.int64), classes)
        calibrate = len(calib)
    ctx = ctx_for(data)
    module = copy.deepcopy(handle.module).eval()  # the float model every flow starts from
    layers = [l.name for l in backend.layers(handle) if l.kind in ("conv", "linear")]
    handle = backend.apply(handle, QuantizeSpec(dtype="int8", mode="static", calibrate=calibrate), layers, ctx)
    calib = np.ascontiguousarray(handle.qstate.calibration_images(), dtype=np.float32)  # the same images for every flow
    model, info = build_onnx(handle)
    ours = model.SerializeToString()
    equal, total, _ = codes_agreement(onnx_file(model, info).codes, handle.quant)
    float_onnx = export_float(module, shape).SerializeToString()

    flows: dict[str, tuple[str, object, int]] = {}  # name -> (kind, model, bytes)
    flows["torch fp32"] = ("torch", module, size_of_torch(module))
    flows["ORT fp32"] = ("onnx", float_onnx, len(float_onnx))
    for name, act in (("ORT U8S8", "u8"), ("ORT S8S8", "s8")):
        blob = ort_best(float_onnx, calib, act)
        flows[name] = ("onnx", blob, len(blob))
    flows["lwdsl file"] = ("onnx", ours, len(ours))
    if args.optimized:
        opt = ort_optimized(ours)
        flows["lwdsl file, ORT-optimised"] = ("onnx", opt, len(opt))
    if args.torch_ao:
        fx = torch_ao_fx(module, torch.from_numpy(calib))
        flows["torch.ao FX"] = ("torch", fx, size_of_torch(fx))
        ok, why = ao_engine.usable(handle)
        if ok:
            ao = ao_engine.build(handle)[0]
            flows["lwdsl torch.ao"] = ("torch", ao, size_of_torch(ao))
    pt2e = mine_pt2e = None
    if args.pt2e:
        from lwdsl.backends.torch_backend.pt2e_engine import torchao_missing

        if torchao_missing():
            print(f"PT2E: {torchao_missing()} (pip install 'lwdsl[pt2e]'): its rows are left out")
        else:
            try:
                pt2e = torch_pt2e(module, torch.from_numpy(calib), args.batches)
                flows["PT2E x86 inductor"] = ("pt2e", pt2e[1], size_of_torch(pt2e[0]))
            except Exception as exc:  # a peer that fails is said, with its error, not hidden
                print(f"PT2E by hand failed on {ref}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            try:
                mine_pt2e = lwdsl_pt2e(handle, torch.from_numpy(calib), args.batches)
                flows["lwdsl PT2E file"] = ("pt2e", mine_pt2e[1], mine_pt2e[2])
            except Exception as exc:
                print(f"lwdsl PT2E file failed on {ref}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    setup = time.perf_counter() - t0

    print(f"\n## {ref} ({'x'.join(map(str, shape))}, {classes} classes); {len(calib)} calibration images; setup {setup:.0f} s")
    print(f"lwdsl file: {len(info['int8'])} quantized layers, codes equal {equal:,} / {total:,}; "
          f"activations: {info.get('activations', {})}")
    if info.get("why_float"):
        for layer, why in info["why_float"].items():
            print(f"  runs float: {layer}: {why}")
    for w in warned:
        print(f"  warning: {w}")
    print("\nop inventory (the graph ONNX Runtime runs, 1 thread):")
    from lwdsl.backends.torch_backend.int8_engine import FLOAT_OPS, INT8_OPS

    for name, (kind, obj, _) in flows.items():
        if kind == "onnx":
            ops = runtime_ops(obj)
            i8 = sum(n for op, n in ops.items() if op in INT8_OPS)
            f32 = sum(n for op, n in ops.items() if op in FLOAT_OPS)
            shown = ", ".join(f"{op} {n}" for op, n in ops.items() if op in INT8_OPS or op in FLOAT_OPS)
            print(f"- {name}: int8 ops {i8}, float weighted ops {f32} ({shown})")
    for name, settings in ORT_SETTINGS.items():
        print(f"- {name} settings: {settings}")
    if pt2e is not None or mine_pt2e is not None:
        print(f"- PT2E x86 inductor settings: {PT2E_SETTINGS}")
    if mine_pt2e is not None:
        e, t_, _ = codes_agreement(mine_pt2e[3], handle.quant)
        print(f"- lwdsl PT2E file settings: {PT2E_FILE_SETTINGS}; {mine_pt2e[2] / 2**20:.2f} MiB, codes equal {e:,} / {t_:,}")

    if key == "lenet5":
        print("\naccuracy on the MNIST test set (10,000 images):")
        acc, _ = backend.evaluate(handle, ctx)
        print(f"- lwdsl's own evaluation (fake-quantized int8): {acc:.4f}")
        for name, (kind, obj, _) in flows.items():
            if kind == "onnx":
                logits = run_onnx(session(obj, 1), data.test_x)
            elif kind == "torch":
                with torch.inference_mode():
                    logits = np.concatenate([obj(torch.from_numpy(np.ascontiguousarray(data.test_x[i : i + 1000]))).numpy()
                                             for i in range(0, len(data.test_x), 1000)])
            else:  # PT2E: the converted model (or the loaded file), uncompiled (the same numbers)
                ref_model = pt2e[0] if name == "PT2E x86 inductor" else mine_pt2e[0]
                with torch.no_grad():
                    logits = np.concatenate([ref_model(torch.from_numpy(np.ascontiguousarray(data.test_x[i : i + 1000]))
                                                       .contiguous(memory_format=torch.channels_last)).numpy()
                                             for i in range(0, len(data.test_x), 1000)])
            print(f"- {name}: {float(np.mean(logits.argmax(1) == data.test_y)):.4f}")

    base_size = flows["torch fp32"][2]
    cols = [f"b{b}/t{t}" for t in args.threads for b in args.batches]
    results: dict[str, dict[str, float]] = {}
    paired: dict[str, float] = {}  # cell -> median over rounds of (fastest ORT int8 ms / lwdsl's file ms), same round
    paired_pt2e: dict[str, float] = {}  # the same, PT2E by hand / lwdsl's PT2E file
    for t in args.threads:
        torch.set_num_threads(t)
        for b in args.batches:
            x_t = torch.randn(b, *shape, generator=torch.Generator().manual_seed(1))
            x = x_t.numpy()
            calls = {}
            for name, (kind, obj, _) in flows.items():
                if kind == "torch":
                    def fn(obj=obj):
                        with torch.inference_mode():
                            obj(x_t)
                elif kind == "pt2e":
                    def fn(obj=obj[b], x_cl=x_t.contiguous(memory_format=torch.channels_last)):
                        with torch.no_grad():
                            obj(x_cl)
                else:
                    sess = session(obj, t)
                    feed = {sess.get_inputs()[0].name: x}

                    def fn(sess=sess, feed=feed):
                        sess.run(None, feed)
                calls[name] = fn
            rounds: dict[str, list[float]] = {name: [] for name in calls}
            for r in range(args.rounds):
                for name, fn in calls.items():
                    proto = Protocol(warmup=2 if r == 0 else 1, min_runs=2, max_runs=200, budget_s=args.budget)
                    rounds[name].append(median_ms(fn, proto))
            for name, ms in rounds.items():
                results.setdefault(name, {})[f"b{b}/t{t}"] = statistics.median(ms)
            mine = [n for n in rounds if n.startswith("lwdsl file")]
            paired[f"b{b}/t{t}"] = statistics.median(
                min(rounds[n][r] for n in ORT_SETTINGS) / min(rounds[n][r] for n in mine) for r in range(args.rounds)
            )
            if "lwdsl PT2E file" in rounds and "PT2E x86 inductor" in rounds:
                paired_pt2e[f"b{b}/t{t}"] = statistics.median(
                    rounds["PT2E x86 inductor"][r] / rounds["lwdsl PT2E file"][r] for r in range(args.rounds))
    print(f"\nlatency: median of {args.rounds} interleaved rounds (core protocol, {args.budget} s budget, >= 2 runs each); "
          "x = speed-up over torch fp32 in the same run")
    print("\n| flow | size | smaller | " + " | ".join(f"{c} ms | x" for c in cols) + " |")
    print("|---|---:|---:|" + "---:|---:|" * len(cols))
    for name, (_, _, size) in flows.items():
        row = [name, f"{size / 2**20:.2f} MiB", f"{base_size / size:.2f}x"]
        for c in cols:
            ms = results[name][c]
            row += [f"{ms:.2f}", f"{results['torch fp32'][c] / ms:.2f}x"]
        print("| " + " | ".join(row) + " |")
    row = ["lwdsl file / best ORT int8 (speed; paired per round)", "", ""]
    for c in cols:
        row += ["", f"{paired[c]:.2f}"]
    print("| " + " | ".join(row) + " |")
    if paired_pt2e:
        row = ["lwdsl PT2E file / PT2E by hand (speed; paired per round)", "", ""]
        for c in cols:
            row += ["", f"{paired_pt2e[c]:.2f}"]
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,resnet18,mobilenet_v2")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--calibrate", type=int, default=16, help="synthetic calibration images (224x224 models)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--budget", type=float, default=0.3, help="seconds of timed runs per flow per round (>= 2 runs)")
    parser.add_argument("--lenet-epochs", type=int, default=1)
    parser.add_argument("--optimized", action="store_true", help="also time lwdsl's file after ORT's graph optimizations")
    parser.add_argument("--torch-ao", action="store_true", help="also time torch.ao FX by hand and lwdsl's torch.ao engine")
    parser.add_argument("--pt2e", action="store_true", help="also time PT2E + X86InductorQuantizer + torch.compile by hand and "
                        "lwdsl's export pt2e file (needs lwdsl[pt2e])")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="To copy construct from a tensor")  # inductor's own, at each int8 compile
    import logging

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao's import notice on its enums
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found" on a CPU machine
    args.threads = [int(t) for t in args.threads.split(",")]
    args.batches = [int(b) for b in args.batches.split(",")]
    import onnxruntime

    print(f"# lwdsl's int8 files vs ONNX Runtime's and PT2E's documented flows\nCPU: {cpu_line()}")
    print(f"OpenMP: {OPENMP}")
    print(f"torch {torch.__version__} (CPU capability {torch.backends.cpu.get_cpu_capability()}); onnxruntime "
          f"{onnxruntime.__version__} (MLAS picks its int8 kernels from the flags above)")
    for key in args.models.split(","):
        run_model(key.strip(), args)


if __name__ == "__main__":
    main()
