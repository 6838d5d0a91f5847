"""The int8 engines of the torch backend, and the first of them: an ONNX model whose quantized
layers run on ONNX Runtime's int8 CPU kernels, with lwdsl's own codes and scales.

Which engine runs a quantized model (:func:`engine`, what ``lwdsl run`` times and reports):
PyTorch's own x86 quantized kernels (ao_engine.py) where the CPU has VNNI or AMX int8 dot
products and every quantized layer is int8 static/qat, ONNX Runtime otherwise. Measured with
``bench/int8_bench.py`` (1 thread, ms, torch fp32 eager / ORT int8 / torch.ao with lwdsl's
codes): on a 2-core Xeon with AVX-512 VNNI and AMX, ResNet-18 batch 32: 1932 / 1415 / 142
(ORT's int8 is barely faster than fp32 there, torch.ao 13x); on the AVX2-only EPYC of earlier
sessions ORT's int8 and torch.ao's FX flow were level (1.34x and 1.26x fp32 at batch 32).
``export onnx`` always writes the ONNX Runtime model: a portable file, described below.

The artifact is the model exported by torch's ONNX exporter (float32), then rewritten: for each
quantized layer (``handle.quant``) whose Conv/Gemm node reads the weight initializer
``<layer>.weight``:

- the weight becomes ``DequantizeLinear(codes int8, scale, zero point 0, axis 0)``: our codes
  and scales, nothing recomputed (:func:`artifact_report` reads them back and counts the codes
  equal to the canonical ones with :func:`lwdsl.semantics.quant.agreement`);
- ``static``/``qat`` layers (``handle.act``): the input goes through ``QuantizeLinear`` /
  ``DequantizeLinear`` with our activation scale and zero point (uint8), and the bias becomes
  int32 codes at ``scale_x * scale_w`` (as ONNX Runtime's own quantizer does); ONNX Runtime
  fuses such groups into QLinearConv / QGemm (int8 kernels, int32 accumulation); the same
  Q/DQ is also put on the tensor the input comes from through MaxPool/Flatten/Reshape (and Relu
  when the zero point is 0), which changes no number and lets the producing layer emit int8;
- ``dynamic`` layers: ``DynamicQuantizeLinear`` (uint8, the batch's own range) feeds
  ``ConvInteger`` / ``MatMulInteger`` with our codes; the int32 result is scaled back by
  ``scale_x * scale_w`` and the float bias added;
- ``weights_only`` layers: int8 weights only (a 4x smaller file); the kernels are float.

A quantized layer the rewrite cannot find (its weight folded or transposed by the exporter) stays
float in the artifact and is named in the report, never silently.

All exporter and ONNX Runtime warnings stay inside this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from lwdsl.backend.timing import Protocol, fixed_input, median_ms
from lwdsl.errors import LwdslError
from lwdsl.semantics.codes import agreement

from .handle import TorchModel

__all__ = ["engine", "engine_report", "build_onnx", "artifact_report", "describe", "runtime_ops", "session", "run_onnx", "latency_ms", "OPSET"]

OPSET = 17
INPUT, OUTPUT = "input", "logits"


def _onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise LwdslError(
            "the torch backend's int8 engine and `export onnx` need onnx and onnxruntime",
            hint="pip install 'lwdsl[torch]' (or: pip install onnx onnxruntime onnxscript)",
        ) from None
    import onnx

    return onnx


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's deprecation notices and torch.onnx's logging for the block."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_float(module: torch.nn.Module, input_shape: tuple[int, ...]) -> Any:
    """The module as a float32 ONNX model (dynamic batch); hooks-free, eval mode."""
    onnx = _onnx()
    was_training = module.training
    module.eval()
    buf = io.BytesIO()
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                module,
                (torch.zeros(1, *input_shape),),
                buf,
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                do_constant_folding=True,
            )
    finally:
        module.train(was_training)
    return onnx.load_from_string(buf.getvalue())


def _weight_consumers(nodes: list) -> dict[str, Any]:
    """initializer name -> the Conv/Gemm node reading it as its weight (input 1)."""
    out = {}
    for node in nodes:
        if node.op_type == "Conv" or (
            node.op_type == "Gemm" and any(a.name == "transB" and a.i == 1 for a in node.attribute)
        ):
            if len(node.input) > 1:
                out[node.input[1]] = node
    return out


_BUILT: dict[str, tuple[Any, dict[str, Any]]] = {}


def _fingerprint(handle: TorchModel) -> str:
    """What the artifact depends on: every tensor of the module, the quantized layers' modes
    and activation parameters (hashing is far cheaper than exporting again)."""
    h = hashlib.sha1()
    for name, t in handle.module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    h.update(repr(sorted(handle.quant_mode.items())).encode())
    h.update(repr(sorted((k, a.scale, a.zero_point) for k, a in handle.act.items())).encode())
    return h.hexdigest()


def build_onnx(handle: TorchModel) -> tuple[Any, dict[str, Any]]:
    """(the ONNX model of ``handle``: float32, with the quantized layers rewritten as above,
    info: ``int8`` layer -> how it runs, ``float`` quantized layers the rewrite could not find).

    A run asks for it several times per step (artifact report, latency at two batch sizes):
    the last one built is kept and reused while the model is unchanged."""
    key = _fingerprint(handle)
    if key not in _BUILT:
        _BUILT.clear()
        _BUILT[key] = _build_onnx(handle)
    return _BUILT[key]


def _build_onnx(handle: TorchModel) -> tuple[Any, dict[str, Any]]:
    onnx = _onnx()
    from onnx import helper, numpy_helper

    model = export_float(handle.module, handle.input_shape)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    all_nodes = list(graph.node)  # one wrapper per node for the whole rewrite: id() is its key
    consumers = _weight_consumers(all_nodes)
    new_nodes: dict[int, list] = {}  # id(node) -> nodes to insert before it
    drop: set[str] = set()
    info: dict[str, Any] = {"int8": {}, "float": []}
    added: list = []
    removed: set[int] = set()
    pre_at: dict[int, list] = {}  # Q/DQ moved upstream, inserted before the chain's first node
    for layer, q in handle.quant.items():
        wname = f"{layer}.weight"
        node = consumers.get(wname)
        if node is None or wname not in inits:
            info["float"].append(layer)
            continue
        mode = handle.quant_mode.get(layer, "weights_only")
        aq = handle.act.get(layer)
        scale = np.asarray(q.scale, dtype=np.float32)
        pre, p = [], f"{layer}"
        has_bias = len(node.input) > 2 and node.input[2] in inits
        if mode == "dynamic" and aq is None:
            _dynamic(node, layer, q, scale, inits, has_bias, pre, added, helper, numpy_helper, graph)
            drop.add(wname)
            if has_bias:
                drop.add(node.input[2])
            info["int8"][layer] = "dynamic"
            new_nodes.setdefault(id(node), []).extend(pre)
            removed.add(id(node))
            continue
        axis = [] if q.axis is None else [helper.make_attribute("axis", 0)]
        added += [
            numpy_helper.from_array(np.asarray(q.codes, dtype=np.int8), f"{p}.weight_quantized"),
            numpy_helper.from_array(scale, f"{p}.weight_scale"),
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{p}.weight_zero_point"),
        ]
        dq = helper.make_node(
            "DequantizeLinear",
            [f"{p}.weight_quantized", f"{p}.weight_scale", f"{p}.weight_zero_point"],
            [f"{p}.weight_dequantized"],
            name=f"{p}.weight_DequantizeLinear",
        )
        dq.attribute.extend(axis)
        pre.append(dq)
        drop.add(wname)
        node.input[1] = f"{p}.weight_dequantized"
        if aq is not None:
            added += [
                numpy_helper.from_array(np.asarray(aq.scale, np.float32), f"{p}.input_scale"),
                numpy_helper.from_array(np.asarray(aq.zero_point, np.uint8), f"{p}.input_zero_point"),
            ]
            x = node.input[0]
            pre.append(
                helper.make_node(
                    "QuantizeLinear", [x, f"{p}.input_scale", f"{p}.input_zero_point"], [f"{p}.input_quantized"],
                    name=f"{p}.input_QuantizeLinear",
                )
            )
            pre.append(
                helper.make_node(
                    "DequantizeLinear", [f"{p}.input_quantized", f"{p}.input_scale", f"{p}.input_zero_point"],
                    [f"{p}.input_dequantized"], name=f"{p}.input_DequantizeLinear",
                )
            )
            node.input[0] = f"{p}.input_dequantized"
            _quantize_upstream(all_nodes, x, aq, p, pre_at, helper)
            if has_bias:
                b = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
                bscale = (np.float32(aq.scale) * scale).astype(np.float32)
                bscale = np.broadcast_to(bscale, b.shape).astype(np.float32)
                bq = np.clip(np.rint(b / bscale.astype(np.float64)), -(2**31) + 1, 2**31 - 1).astype(np.int32)
                added += [
                    numpy_helper.from_array(bq, f"{p}.bias_quantized"),
                    numpy_helper.from_array(bscale, f"{p}.bias_scale"),
                    numpy_helper.from_array(np.zeros(b.shape, np.int32), f"{p}.bias_zero_point"),
                ]
                bdq = helper.make_node(
                    "DequantizeLinear", [f"{p}.bias_quantized", f"{p}.bias_scale", f"{p}.bias_zero_point"],
                    [f"{p}.bias_dequantized"], name=f"{p}.bias_DequantizeLinear",
                )
                bdq.attribute.extend([helper.make_attribute("axis", 0)])
                pre.append(bdq)
                drop.add(node.input[2])
                node.input[2] = f"{p}.bias_dequantized"
            info["int8"][layer] = "static"
        else:
            info["int8"][layer] = "weights_only"
        new_nodes.setdefault(id(node), []).extend(pre)
    nodes = []
    for node in all_nodes:
        nodes.extend(pre_at.get(id(node), []))
        nodes.extend(new_nodes.get(id(node), []))
        if id(node) not in removed:
            nodes.append(node)
    used = {i for n in nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name not in drop or t.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    onnx.checker.check_model(model)
    return model, info


#: ops that commute with the activation quantizer (monotone, value-preserving); Relu only when
#: the zero point is qmin (then quantizing clamps at 0 exactly as Relu does).
_COMMUTE = ("MaxPool", "Flatten", "Reshape")


def _quantize_upstream(all_nodes: list, x: str, aq: Any, p: str, pre_at: dict, helper: Any) -> None:
    """Also quantize-dequantize, with the same parameters, the tensor from which ``x`` comes
    through a chain of ops that commute with the quantizer (MaxPool, Flatten, Reshape, Relu):
    the numbers do not change (``q(maxpool(q(t))) == q(maxpool(t))``, ``q`` idempotent), but the
    producing Conv/Gemm now has a quantized output and runs as QLinearConv/QGemm."""
    producer = {o: n for n in all_nodes for o in n.output}
    uses: dict[str, int] = {}
    for n in all_nodes:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    first, t = None, x  # x's only reader is now the new QuantizeLinear (not in the graph yet)
    while t in producer and uses.get(t, 0) == (0 if t == x else 1):
        n = producer[t]
        if not (n.op_type in _COMMUTE or (n.op_type == "Relu" and aq.zero_point == aq.qmin)):
            break
        first, t = n, n.input[0]
    if first is None or t not in producer or uses.get(t, 0) != 1:
        return
    pre_at.setdefault(id(first), []).extend(
        [
            helper.make_node(
                "QuantizeLinear", [t, f"{p}.input_scale", f"{p}.input_zero_point"], [f"{p}.upstream_quantized"],
                name=f"{p}.upstream_QuantizeLinear",
            ),
            helper.make_node(
                "DequantizeLinear", [f"{p}.upstream_quantized", f"{p}.input_scale", f"{p}.input_zero_point"],
                [f"{p}.upstream_dequantized"], name=f"{p}.upstream_DequantizeLinear",
            ),
        ]
    )
    first.input[0] = f"{p}.upstream_dequantized"


def _dynamic(node, layer, q, scale, inits, has_bias, pre, added, helper, numpy_helper, graph) -> None:
    """Rewrite ``node`` (Conv or Gemm transB=1) to quantize its input at run time and run
    ConvInteger / MatMulInteger on our codes (the caller removes ``node``)."""
    p = layer
    x, out = node.input[0], node.output[0]
    codes = np.asarray(q.codes, dtype=np.int8)
    pre.append(helper.make_node("DynamicQuantizeLinear", [x], [f"{p}.xq", f"{p}.xs", f"{p}.xz"], name=f"{p}.DynamicQuantizeLinear"))
    added.append(numpy_helper.from_array(np.asarray(0, np.int8), f"{p}.weight_zero_point"))
    if node.op_type == "Conv":
        added.append(numpy_helper.from_array(codes, f"{p}.weight_quantized"))
        integer = helper.make_node(
            "ConvInteger", [f"{p}.xq", f"{p}.weight_quantized", f"{p}.xz", f"{p}.weight_zero_point"], [f"{p}.acc"],
            name=f"{p}.ConvInteger",
        )
        integer.attribute.extend(node.attribute)
        shape = (1, -1) + (1,) * (codes.ndim - 2)
    else:  # Gemm with transB=1: MatMulInteger wants B as [in, out]; alpha/beta are 1 from Linear
        added.append(numpy_helper.from_array(np.ascontiguousarray(codes.T), f"{p}.weight_quantized_t"))
        integer = helper.make_node(
            "MatMulInteger", [f"{p}.xq", f"{p}.weight_quantized_t", f"{p}.xz", f"{p}.weight_zero_point"], [f"{p}.acc"],
            name=f"{p}.MatMulInteger",
        )
        shape = (-1,)
    wscale = scale.reshape(shape) if scale.ndim == 1 else scale
    added.append(numpy_helper.from_array(np.ascontiguousarray(wscale), f"{p}.weight_scale"))
    pre += [
        integer,
        helper.make_node("Cast", [f"{p}.acc"], [f"{p}.accf"], to=1, name=f"{p}.Cast"),
        helper.make_node("Mul", [f"{p}.xs", f"{p}.weight_scale"], [f"{p}.scale"], name=f"{p}.ScaleMul"),
        helper.make_node("Mul", [f"{p}.accf", f"{p}.scale"], [f"{p}.y" if has_bias else out], name=f"{p}.Mul"),
    ]
    if has_bias:
        b = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
        added.append(numpy_helper.from_array(b.reshape(shape) if node.op_type == "Conv" else b, f"{p}.bias_float"))
        pre.append(helper.make_node("Add", [f"{p}.y", f"{p}.bias_float"], [out], name=f"{p}.BiasAdd"))


def _codes_in(model: Any, handle: TorchModel, info: dict[str, Any]) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for layer in info["int8"]:
        if f"{layer}.weight_quantized" in inits:
            out[layer] = numpy_helper.to_array(inits[f"{layer}.weight_quantized"])
        else:
            out[layer] = numpy_helper.to_array(inits[f"{layer}.weight_quantized_t"]).T
    return out


def artifact_report(handle: TorchModel, model: Optional[Any] = None, info: Optional[dict] = None) -> dict[str, Any]:
    """What the int8 artifact holds: how each quantized layer runs, the layers left float in it,
    and how many of its weight codes equal the canonical ones (``agreement``)."""
    if model is None:
        model, info = build_onnx(handle)
    equal = total = 0
    for layer, codes in _codes_in(model, handle, info).items():
        e, t = agreement(codes, handle.quant[layer].codes)
        equal, total = equal + e, total + t
    report = {"engine": "onnxruntime", "layers": dict(info["int8"]), "codes_equal": equal, "codes_total": total}
    if info["float"]:
        report["float_in_artifact"] = list(info["float"])
    return report


#: ONNX Runtime ops that compute in int8 (after its graph optimizations).
INT8_OPS = {
    "QLinearConv", "QGemm", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
    "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat", "QLinearSigmoid",
    "QLinearLeakyRelu",
}
#: Ops with weights that compute in float32 when they survive the optimizations.
FLOAT_OPS = {"Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul", "ConvTranspose"}


def runtime_ops(data: bytes) -> tuple[Any, dict[str, int]]:
    """(a 1-thread session of ``data``, op type -> count in the graph that session really runs,
    after ONNX Runtime's optimizations fused the Q/DQ groups): ``QLinearConv`` means int8
    kernels, a ``Conv`` that is left means float."""
    import tempfile

    onnx = _onnx()
    with tempfile.TemporaryDirectory(prefix="lwdsl-ort-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        sess = session(data, 1, optimized_to=optimized)
        graph = onnx.load(str(optimized)).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return sess, dict(sorted(counts.items()))


def describe(data: bytes, handle: TorchModel, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """What an ONNX artifact is, measured by its own runtime: size, the ops ONNX Runtime runs
    (int8 or float), top-1 accuracy on ``x, y``, median latency at batch 1 and 32 (1 thread)."""
    sess, ops = runtime_ops(data)
    dtype = {**{op: "int8" for op in INT8_OPS}, **{op: "float32" for op in FLOAT_OPS}}
    out: dict[str, Any] = {
        "format": "onnx",
        "runtime": "onnxruntime",
        "size_bytes": len(data),
        "ops": {f"{op} ({dtype[op]})" if op in dtype else op: n for op, n in ops.items()},
        "int8_ops": sum(n for op, n in ops.items() if op in INT8_OPS),
        "float_ops": sum(n for op, n in ops.items() if op in FLOAT_OPS),
    }
    if len(x):
        out["accuracy"] = float(np.mean(np.argmax(run_onnx(sess, x), axis=1) == y))
    for batch in (1, 32):
        out[f"latency_ms_b{batch}"] = _time_session(sess, batch, handle.input_shape)
    return out


def _time_session(sess: Any, batch: int, input_shape: tuple[int, ...], *, warmup: int = 3, min_runs: int = 10,
                  max_runs: int = 200, budget_s: float = 1.0) -> float:
    feed = {sess.get_inputs()[0].name: fixed_input(batch, input_shape)}
    return median_ms(lambda: sess.run(None, feed), Protocol(warmup, min_runs, max_runs, budget_s))


def session(model: Any, threads: int = 1, optimized_to: Optional[Path] = None) -> Any:
    """An ONNX Runtime CPU session of ``model`` (a ModelProto, bytes or a path); with
    ``optimized_to``, the graph it runs after its optimizations is saved there."""
    _onnx()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if optimized_to is not None:
        opts.optimized_model_filepath = str(optimized_to)
    data = model if isinstance(model, (bytes, str, Path)) else model.SerializeToString()
    return ort.InferenceSession(str(data) if isinstance(data, Path) else data, opts, providers=["CPUExecutionProvider"])


def run_onnx(sess: Any, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Logits of ``x`` (NCHW float32) from an ONNX Runtime session, in batches."""
    name = sess.get_inputs()[0].name
    return np.concatenate(
        [sess.run(None, {name: np.ascontiguousarray(x[i : i + batch], dtype=np.float32)})[0] for i in range(0, len(x), batch)]
    )


_AO: dict[str, tuple[Any, dict[str, Any], str]] = {}


def engine(handle: TorchModel) -> tuple[str, Any, dict[str, Any], str]:
    """(engine name, its int8 model, info, why not torch.ao) for ``handle``: the torch.ao
    module where :func:`ao_engine.usable`, else the ONNX model. A model torch.ao cannot take
    (fx cannot trace it) falls back to ONNX Runtime, with the reason."""
    from . import ao_engine

    ok, why = ao_engine.usable(handle)
    if ok:
        calib = hashlib.sha1(np.ascontiguousarray(handle.calib[1]).tobytes()).hexdigest()
        key = f"{_fingerprint(handle)}:{id(handle.calib[0])}:{calib}:{handle.calib[2]}"
        if key not in _AO:
            _AO.clear()
            try:
                module, info = ao_engine.build(handle)
                _AO[key] = (module, info, "")
            except Exception as exc:  # fx/torch.ao refuse some models: say so and use ONNX Runtime
                _AO[key] = (None, {}, f"torch.ao could not take this model ({type(exc).__name__}: {exc})".strip())
        module, info, why = _AO[key]
        if module is not None:
            return ao_engine.ENGINE, module, info, ""
    model, info = build_onnx(handle)
    return "onnxruntime", model, info, why


def engine_report(handle: TorchModel, x: Optional[np.ndarray] = None, y: Optional[np.ndarray] = None) -> dict[str, Any]:
    """What runs the int8 model: :func:`artifact_report` of the ONNX model and, where torch.ao
    is usable, its report too (``engines``: name -> report, each with its top-1 ``accuracy``
    on ``x, y`` when given and its latency at batch 1 and 32, 1 thread); ``engine`` names the
    engine that is faster at batch 32 (the one whose report is at the top level), and
    ``why_not_torch_ao`` says why torch.ao is absent."""
    from . import ao_engine

    onnx_model, onnx_info = build_onnx(handle)
    reports = {"onnxruntime": artifact_report(handle, onnx_model, onnx_info)}
    sess = session(onnx_model, 1)
    runners = {"onnxruntime": (lambda v: run_onnx(sess, v), lambda b: _time_session(sess, b, handle.input_shape))}
    name, model, info, why = engine(handle)
    if name == ao_engine.ENGINE:
        reports[name] = ao_engine.artifact_report(handle, model, info)
        runners[name] = (lambda v: ao_engine.run(model, v), lambda b: ao_engine.latency_ms(model, b, handle.input_shape, 1))
    for key, (run, timer) in runners.items():
        if x is not None and len(x):
            reports[key]["accuracy"] = float(np.mean(np.argmax(run(x), axis=1) == y))
        for b in (1, 32):
            reports[key][f"latency_ms_b{b}"] = round(timer(b), 4)
    best = min(reports, key=lambda k: reports[k]["latency_ms_b32"])
    out = {**reports[best], "engine": best, "engines": reports}
    if why:
        out["why_not_torch_ao"] = why
    return out


def latency_ms(handle: TorchModel, batch: int, input_shape: tuple[int, ...], threads: int, *, warmup: int = 3,
               min_runs: int = 10, max_runs: int = 200, budget_s: float = 1.0) -> float:
    """Median milliseconds of the int8 model at ``batch`` (same protocol as latency.py) in the
    faster of the two engines where torch.ao is usable (both are timed: on a VNNI/AMX CPU
    ONNX Runtime wins small models at batch 1, torch.ao large batches and large models), else
    in ONNX Runtime."""
    from . import ao_engine

    kw = dict(warmup=warmup, min_runs=min_runs, max_runs=max_runs, budget_s=budget_s)
    onnx_model, _ = build_onnx(handle)
    ort_ms = _time_session(session(onnx_model, threads), batch, input_shape, **kw)
    name, model, _, _ = engine(handle)
    if name == ao_engine.ENGINE:
        return min(ort_ms, ao_engine.latency_ms(model, batch, input_shape, threads, **kw))
    return ort_ms
