"""The int8 ONNX file, written once for any backend that exports its float model to ONNX: the
rewrite of a float32 ONNX model into ONNX Runtime's QDQ form with lwdsl's own codes and scales
(:func:`rewrite`, :func:`build`), the ONNX Runtime session, inventory and evaluation, and
:class:`OnnxEngine`, the :class:`~lwdsl.backend.engines.Engine` the core writes, measures and
reports. A backend gives only its float exporter (torch: ``torch.onnx.export``,
:mod:`lwdsl.backends.torch_backend.int8_engine`) and a fingerprint of its model. Measured with
``bench/int8_bench.py``: the file is level with ORT's documented ``quant_pre_process`` +
``quantize_static`` U8S8 file on LeNet-5, ResNet-18 and MobileNetV2, every weighted layer int8.

The artifact is the model exported by the backend's ONNX exporter (float32), then rewritten: for each
quantized layer (``handle.quant``) whose Conv/Gemm node reads the weight initializer
``<layer>.weight``:

- the weight becomes ``DequantizeLinear(codes int8, scale, zero point 0, axis 0)``: our codes
  and scales, nothing recomputed (:class:`OnnxEngine` reads them back for the core to count the
  codes equal to the canonical ones);
- ``static``/``qat`` layers (``handle.act``): the bias becomes int32 codes at ``scale_x *
  scale_w`` (as ONNX Runtime's own quantizer does), and the activations are quantized as ONNX
  Runtime's ``QDQQuantizer`` places them (:func:`_activations`), so int8 tensors flow from layer
  to layer: every tensor between int8 ops (static Conv/Gemm, Add, Concat, MaxPool, AveragePool,
  GlobalAveragePool, Flatten/Reshape/Transpose/Squeeze/Unsqueeze) gets one
  ``QuantizeLinear``/``DequantizeLinear`` pair (uint8) shared by its readers. A layer's input
  has lwdsl's scale and zero point; the same pair is carried unchanged through ops whose output
  values are input values (max pool, flatten, ...) and through a Relu/Clip that the quantizer
  clamps exactly as it does (that Relu/Clip is dropped, as ORT's quantizer does); any other
  tensor of the region (a layer output feeding an addition or a concatenation, a sum, a pooled
  mean) is ranged by the core's observer (the step's ``observer=``) on the step's own
  calibration images, in the file with quantized weights and float activations (as the step
  calibrates). ONNX Runtime fuses these groups into QLinearConv / QGemm / QLinearAdd /
  QLinearConcat / QLinearGlobalAveragePool (int8 kernels): on ResNet-18 and MobileNetV2 every
  weighted layer runs int8. A reader that runs float (a layer left float, a constant operand)
  keeps the float tensor, and a layer that therefore cannot emit int8 runs float in ONNX
  Runtime; ``info["why_float"]`` names it with the reason;
- ``dynamic`` layers: ``DynamicQuantizeLinear`` (uint8, the batch's own range) feeds
  ``ConvInteger`` / ``MatMulInteger`` with our codes; the int32 result is scaled back by
  ``scale_x * scale_w`` and the float bias added;
- ``weights_only`` layers: int8 weights only (a 4x smaller file); the kernels are float.

A quantized layer the rewrite cannot find (its weight folded or transposed by the exporter) stays
float in the artifact and is named in the report, never silently.

``export onnx`` is :func:`export_onnx` (this file, or the float one with 16-bit cast weights).

All ONNX Runtime warnings stay inside this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..data.stream import chunks, eval_batch
from ..errors import LwdslError
from ..semantics.casts import half_bits
from .context import StepContext
from .engines import NOT_QUANTIZED, Engine, EngineFile, Inventory, export_file, last_built

__all__ = ["OnnxEngine", "rewrite", "build", "onnx_file", "export_onnx", "half_onnx", "runtime_ops", "session", "run_onnx", "INT8_OPS", "FLOAT_OPS",
           "INPUT", "OUTPUT", "OPSET"]

#: The opset of the float file a backend exports, and its input and output names.
OPSET = 17
INPUT, OUTPUT = "input", "logits"


def _onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise LwdslError(
            "the int8 ONNX engine and `export onnx` need onnx and onnxruntime",
            hint="pip install 'lwdsl[torch]' (or: pip install onnx onnxruntime onnxscript)",
        ) from None
    import onnx

    return onnx


def _weight_consumers(nodes: list) -> dict[str, Any]:
    """initializer name -> the Conv/Gemm node reading it as its weight (input 1), and the
    MatMul reading ``<layer>.weight_t`` (a language model's linear layer, ``[in, out]``)."""
    out = {}
    for node in nodes:
        if node.op_type == "Conv" or (
            node.op_type == "Gemm" and any(a.name == "transB" and a.i == 1 for a in node.attribute)
        ) or (node.op_type == "MatMul" and len(node.input) > 1 and node.input[1].endswith(".weight_t")):
            if len(node.input) > 1:
                out[node.input[1]] = node
    return out


def _weight_name(layer: str, consumers: dict[str, Any]) -> str:
    """The initializer holding ``layer``'s weight: ``<layer>.weight`` (Conv, Gemm) or
    ``<layer>.weight_t`` (a MatMul's ``[in, out]``)."""
    return f"{layer}.weight_t" if f"{layer}.weight_t" in consumers else f"{layer}.weight"


_BUILT: dict[str, Any] = {}


def build(handle: Any, export: Callable[[Any], Any], fingerprint: Callable[[Any], str]) -> tuple[Any, dict[str, Any]]:
    """(the int8 ONNX model of ``handle``: ``export(handle)`` rewritten by :func:`rewrite`, its
    info). A run asks for it several times per step (artifact report, latency at two batch
    sizes): the last one built is kept and reused while ``fingerprint`` (the weights and
    :meth:`~lwdsl.backend.handle.QuantState.digest`: the calibration images too) is unchanged."""
    return last_built(_BUILT, fingerprint(handle), lambda: rewrite(export(handle), handle))


def rewrite(model: Any, handle: Any) -> tuple[Any, dict[str, Any]]:
    """``model`` (the float32 ONNX model of ``handle``, its weighted layers reading the
    initializers ``<layer>.weight``) rewritten in place as the module's docstring says; returns
    (it, info: ``int8`` layer -> how it runs, ``float`` quantized layers the rewrite could not
    find, ``why_float`` layer -> why it runs float)."""
    onnx = _onnx()
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    all_nodes = list(graph.node)  # one wrapper per node for the whole rewrite: id() is its key
    consumers = _weight_consumers(all_nodes)
    new_nodes: dict[int, list] = {}  # id(node) -> nodes to insert before it
    drop: set[str] = set()
    info: dict[str, Any] = {"int8": {}, "float": [], "why_float": {}}
    added: list = []
    removed: set[int] = set()
    static: dict[str, tuple[str, Any]] = {}  # output of a static layer's node -> (layer, its input quantization)
    inputs: dict[str, Any] = {}  # output of a static MatMul (a language model's linear) -> its input quantization
    for layer, q in handle.quant.items():
        wname = _weight_name(layer, consumers)
        node = consumers.get(wname)
        if node is None or wname not in inits:
            info["float"].append(layer)
            info["why_float"][layer] = "its weight was folded or transposed by the exporter: the rewrite cannot find it"
            continue
        mode = handle.qstate.mode.get(layer, "weights_only")
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
        matmul = node.op_type == "MatMul"  # B is [in, out]: the codes transposed, one scale per column
        axis = [] if q.axis is None else [helper.make_attribute("axis", 1 if matmul else 0)]
        codes = np.asarray(q.codes, dtype=np.int8)
        held = f"{p}.weight_quantized_t" if matmul else f"{p}.weight_quantized"
        added += [
            numpy_helper.from_array(np.ascontiguousarray(codes.T) if matmul else codes, held),
            numpy_helper.from_array(scale, f"{p}.weight_scale"),
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{p}.weight_zero_point"),
        ]
        dq = helper.make_node(
            "DequantizeLinear",
            [held, f"{p}.weight_scale", f"{p}.weight_zero_point"],
            [f"{p}.weight_dequantized"],
            name=f"{p}.weight_DequantizeLinear",
        )
        dq.attribute.extend(axis)
        pre.append(dq)
        drop.add(wname)
        node.input[1] = f"{p}.weight_dequantized"
        if aq is not None and matmul:
            inputs[node.output[0]] = aq
            info["int8"][layer] = "static"
        elif aq is not None:
            static[node.output[0]] = (layer, aq)
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
            info["why_float"][layer] = "weights_only: int8 weights, float kernel"
        new_nodes.setdefault(id(node), []).extend(pre)
    nodes = []
    for node in all_nodes:
        nodes.extend(new_nodes.get(id(node), []))
        if id(node) not in removed:
            nodes.append(node)
    used = {i for n in nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name not in drop or t.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    if static:
        _activations(model, handle, static, info)
    if inputs:
        _matmul_inputs(model, inputs, info)
    if handle.quant:
        for wname in consumers:
            layer = wname.rsplit(".weight", 1)[0] if ".weight" in wname else wname
            if layer not in handle.quant:
                info["why_float"].setdefault(layer, NOT_QUANTIZED)
    onnx.checker.check_model(model)
    return model, info


#: Ops that ONNX Runtime runs on int8 tensors between Q/DQ pairs (its QDQ selectors, as placed by
#: its own ``QDQQuantizer``): ``_SAME`` output values are input values (one quantization for
#: both: int8 MaxPool, or no op at all); ``_ACTIVATION`` Relu/Clip are dropped where the
#: quantizer of their output already clamps as they do (ORT's ``QDQRemovableActivation``);
#: ``_OWN`` make new values and need their own output range (QLinearAdd, QLinearConcat,
#: QLinearAveragePool, QLinearGlobalAveragePool).
_SAME = ("MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze")
_ACTIVATION = ("Relu", "Clip")
_OWN = ("Add", "Concat", "AveragePool", "GlobalAveragePool")


def _constants(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _act_inputs(node: Any, consts: dict[str, np.ndarray]) -> Optional[list[str]]:
    """The activation inputs of a node of the int8 region, None if one is a constant (an Add
    of a constant tensor stays float)."""
    ins = list(node.input) if node.op_type in ("Add", "Concat") else [node.input[0]]
    return None if any(not i or i in consts for i in ins) else ins


def _removable(node: Any, aq: Any, consts: dict[str, np.ndarray]) -> bool:
    """True if quantizing with ``aq`` after ``node`` (Relu, or Clip with constant bounds) gives
    the same codes as without it: ``q(lo) == qmin`` and ``q(hi) == qmax`` (q monotone), so the
    node can go (float32 division, half to even, as QuantizeLinear)."""
    lo, hi = 0.0, np.inf
    if node.op_type == "Clip":
        bounds = [consts.get(i) if i else None for i in list(node.input[1:3]) + [""] * (3 - len(node.input))]
        if any(i and i not in consts for i in node.input[1:3]):
            return False
        lo = -np.inf if bounds[0] is None else float(np.asarray(bounds[0]).reshape(-1)[0])
        hi = np.inf if bounds[1] is None else float(np.asarray(bounds[1]).reshape(-1)[0])

    def code(v: float) -> int:
        if np.isinf(v):
            return aq.qmin if v < 0 else aq.qmax
        return int(np.clip(np.rint(np.float32(v) / np.float32(aq.scale)) + aq.zero_point, aq.qmin, aq.qmax))

    return code(lo) == aq.qmin and code(hi) == aq.qmax


def _observe(model: Any, handle: Any, names: list[str]) -> dict[str, Any]:
    """The core's ``RangeObserver`` (the step's method) on each tensor of ``names`` of ``model``
    (weights quantized, activations float: as the step calibrated) over the step's own
    calibration images; returns tensor -> ``act_qparams`` of its range."""
    import onnx

    from lwdsl.semantics.activations import RangeObserver, act_qparams

    calib = handle.qstate.calib
    x_all, idx = calib.train_x, calib.indices
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    for name in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = session(probe, 1)
    dtype = np.int64 if sess.get_inputs()[0].type == "tensor(int64)" else np.float32  # token ids or images
    observers = {name: RangeObserver(calib.observer) for name in names}
    step = max(1, min(256, int(2_000_000 // max(1, int(np.prod(handle.input_shape))))))
    for start in range(0, len(idx), step):
        x = np.ascontiguousarray(x_all[idx[start : start + step]], dtype=dtype)
        for name, value in zip(names, sess.run(names, {INPUT: x})):
            observers[name].update(value)
    return {name: act_qparams(*ob.range()) for name, ob in observers.items()}


def _activations(model: Any, handle: Any, by_output: dict[str, tuple[str, Any]], info: dict[str, Any]) -> None:
    """Place the activation Q/DQ pairs as ONNX Runtime's own QDQ quantizer does, so int8 tensors
    flow from layer to layer: every tensor between int8 ops (static Conv/Gemm, the ops above) gets
    one QuantizeLinear/DequantizeLinear pair that all its readers share. Its (scale, zero point):
    a static layer's input: the step's (lwdsl's calibration); carried unchanged through ``_SAME``
    ops and removable activations; any other (a layer output that feeds an addition, a sum, a
    pooled tensor): the core observer on the step's calibration images. A region op with a float
    reader (or a constant operand) stays float, and so does what only it would make int8."""
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes = list(graph.node)
    static = {id(n): by_output[n.output[0]] for n in nodes if n.output and n.output[0] in by_output}
    consts = _constants(graph)
    order = {id(n): k for k, n in enumerate(nodes)}
    producer = {o: n for n in nodes for o in n.output}
    readers: dict[str, list] = {}
    for n in nodes:
        for i in dict.fromkeys(n.input):
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    region = {id(n) for n in nodes if n.op_type in _SAME + _ACTIVATION + _OWN and _act_inputs(n, consts) is not None}
    seeds: dict[str, Any] = {}  # a static layer's input tensor -> its quantization
    own_pair: dict[int, Any] = {}  # a static layer whose input tensor already has another quantization
    for n in nodes:
        if id(n) in static:
            t, aq = n.input[0], static[id(n)][1]
            if seeds.setdefault(t, aq) != aq:
                own_pair[id(n)] = aq
    unobservable: set[str] = set()

    def int8_reader(n: Any, t: str) -> bool:
        if id(n) in static:
            return n.input[0] == t and id(n) not in own_pair
        return id(n) in region and t in (_act_inputs(n, consts) or [])

    def plan() -> set[str]:
        while True:
            quantized = set(seeds)
            for n in nodes:
                if id(n) in static or id(n) in region:
                    t = n.output[0]
                    if t not in outputs and t not in unobservable and readers.get(t) and all(int8_reader(r, t) for r in readers[t]):
                        quantized.add(t)
            drop = set()
            for n in nodes:
                if id(n) in region and not (set(_act_inputs(n, consts)) <= quantized and n.output[0] in quantized):
                    drop.add(id(n))
            if not drop:
                return quantized
            region.difference_update(drop)

    def propagate(params: dict[str, Any], quantized: set[str]) -> None:
        changed = True
        while changed:
            changed = False
            for n in nodes:
                if id(n) not in region or n.op_type in _OWN:
                    continue
                i, o = n.input[0], n.output[0]
                if o in params and i not in params and i in quantized and len(readers[i]) == 1 and (
                    n.op_type in _SAME or _removable(n, params[o], consts)
                ):
                    params[i] = params[o]
                    changed = True
                elif n.op_type in _SAME and i in params and o not in params and o in quantized:
                    params[o] = params[i]
                    changed = True

    while True:
        quantized = plan()
        params = dict(seeds)
        propagate(params, quantized)
        pending = [t for t in quantized if t not in params]
        if not pending or handle.qstate.calib is not None:
            break
        unobservable.update(pending)  # a model loaded already quantized: no images to range them on
    observed = _observe(model, handle, sorted(pending)) if pending else {}
    rank = lambda t: order[id(producer[t])] if t in producer else -1  # noqa: E731
    used_observed = 0
    for t in sorted(pending, key=rank, reverse=True):  # the latest first: a sum takes its Relu's range
        if t not in params:
            params[t] = observed[t]
            used_observed += 1
            propagate(params, quantized)

    for n in nodes:  # a static Conv with a float output is not fused: ONNX Runtime runs it in float
        fused = n.output[0] in quantized and all(int8_reader(r, n.output[0]) for r in readers.get(n.output[0], []))
        if id(n) in static and n.op_type == "Conv" and not fused:
            t = n.output[0]
            if t in outputs:
                why = "its output is a graph output (kept float)"
            elif t in unobservable:
                why = "its output's range is unknown (the calibration images are not at hand)"
            else:
                floats = sorted({f"{r.op_type} {r.name}".strip() for r in readers.get(t, []) if not int8_reader(r, t)}
                                or {f"{r.op_type} {r.name}".strip() for r in readers.get(t, [])})
                why = f"its output feeds {', '.join(floats)}, which runs in float"
            info["why_float"][static[id(n)][0]] = why + ": ONNX Runtime fuses QLinearConv only with an int8 output"

    # removable activations go: their readers read the quantized input
    alias: dict[str, str] = {}
    gone: set[int] = set()
    for n in nodes:
        if id(n) in region and n.op_type in _ACTIVATION:
            i, o = n.input[0], n.output[0]
            if (o in quantized and params.get(i) == params.get(o) and _removable(n, params[o], consts)
                    and len(readers[i]) == 1 and all(int8_reader(r, o) for r in readers.get(o, []))):
                alias[o] = i
                gone.add(id(n))

    def base(t: str) -> str:
        while t in alias:
            t = alias[t]
        return t

    added, after, before = [], {}, {}

    def pair(t: str, aq: Any, tag: str) -> tuple[list, str]:
        zp_type = np.uint8 if aq.qmin >= 0 else np.int8
        added.append(numpy_helper.from_array(np.asarray(aq.scale, np.float32), f"{tag}_scale"))
        added.append(numpy_helper.from_array(np.asarray(aq.zero_point, zp_type), f"{tag}_zero_point"))
        qdq = [
            helper.make_node("QuantizeLinear", [t, f"{tag}_scale", f"{tag}_zero_point"], [f"{tag}_quantized"], name=f"{tag}_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [f"{tag}_quantized", f"{tag}_scale", f"{tag}_zero_point"], [f"{tag}_dequantized"],
                             name=f"{tag}_DequantizeLinear"),
        ]
        return qdq, f"{tag}_dequantized"

    dq_of: dict[str, str] = {}
    for t in sorted(quantized, key=rank):
        if t in alias:
            continue
        qdq, dq_of[t] = pair(t, params[t], t)
        if t in producer:
            after.setdefault(id(producer[t]), []).extend(qdq)
        else:
            before.setdefault(-1, []).extend(qdq)
    for n in nodes:
        if id(n) in gone:
            continue
        if id(n) in own_pair:
            qdq, dq = pair(n.input[0], own_pair[id(n)], f"{static[id(n)][0]}.input")
            before.setdefault(id(n), []).extend(qdq)
            n.input[0] = dq
            continue
        for k, t in enumerate(n.input):
            if t and base(t) in dq_of and int8_reader(n, t):
                n.input[k] = dq_of[base(t)]
    out = list(before.get(-1, []))
    for n in nodes:
        if id(n) in gone:
            continue
        out.extend(before.get(id(n), []))
        out.append(n)
        out.extend(after.get(id(n), []))
    del graph.node[:]
    graph.node.extend(out)
    graph.initializer.extend(added)

    info["activations"] = {
        "quantized_tensors": len(dq_of),
        "observed": used_observed,
        "removed_activations": len(gone),
        "int8_region_ops": sum(1 for n in nodes if id(n) in region and id(n) not in gone),
    }


def _matmul_inputs(model: Any, inputs: dict[str, Any], info: dict[str, Any]) -> None:
    """A language model's static linear layers (MatMul on ``<layer>.weight_t``): each reads its
    input through one QuantizeLinear/DequantizeLinear pair with lwdsl's calibrated (scale, zero
    point), shared by the layers reading the same tensor with the same pair (q/k/v of one norm),
    placed before the first of them. Their outputs stay float (the float Add of a bias, the
    attention between), as the simulated W8A8 model computes: ONNX Runtime fuses each
    DequantizeLinear pair -> MatMul into ``MatMulIntegerToFloat`` (uint8 x int8 kernels)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes = list(graph.node)
    pairs: dict[tuple[str, float, int], str] = {}  # (tensor, scale, zero point) -> its dequantized name
    before: dict[int, list] = {}
    added = []
    for node in nodes:
        aq = inputs.get(node.output[0]) if node.op_type == "MatMul" else None
        if aq is None:
            continue
        t = node.input[0]
        key = (t, float(aq.scale), int(aq.zero_point))
        if key not in pairs:
            tag = f"{t}_{len(pairs)}" if any(k[0] == t for k in pairs) else t
            zp_type = np.uint8 if aq.qmin >= 0 else np.int8
            added += [numpy_helper.from_array(np.asarray(aq.scale, np.float32), f"{tag}_scale"),
                      numpy_helper.from_array(np.asarray(aq.zero_point, zp_type), f"{tag}_zero_point")]
            before.setdefault(id(node), []).extend([
                helper.make_node("QuantizeLinear", [t, f"{tag}_scale", f"{tag}_zero_point"], [f"{tag}_quantized"],
                                 name=f"{tag}_QuantizeLinear"),
                helper.make_node("DequantizeLinear", [f"{tag}_quantized", f"{tag}_scale", f"{tag}_zero_point"],
                                 [f"{tag}_dequantized"], name=f"{tag}_DequantizeLinear"),
            ])
            pairs[key] = f"{tag}_dequantized"
        node.input[0] = pairs[key]
    out = []
    for node in nodes:
        out.extend(before.get(id(node), []))
        out.append(node)
    del graph.node[:]
    graph.node.extend(out)
    graph.initializer.extend(added)
    info["activations"] = {"quantized_tensors": len(pairs), "observed": 0, "removed_activations": 0, "int8_region_ops": 0}


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


def _codes_in(model: Any, info: dict[str, Any]) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for layer in info["int8"]:
        if f"{layer}.weight_quantized" in inits:
            out[layer] = numpy_helper.to_array(inits[f"{layer}.weight_quantized"])
        else:
            out[layer] = numpy_helper.to_array(inits[f"{layer}.weight_quantized_t"]).T
    return out


#: ONNX Runtime ops that compute in int8 (after its graph optimizations).
INT8_OPS = {
    "QLinearConv", "QGemm", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
    "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat", "QLinearSigmoid",
    "QLinearLeakyRelu",
}
#: Ops with weights that compute in float32 when they survive the optimizations.
FLOAT_OPS = {"Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul", "ConvTranspose"}


def runtime_ops(data: bytes) -> dict[str, int]:
    """Op type -> count in the graph a 1-thread ONNX Runtime session of ``data`` really runs,
    after its optimizations fused the Q/DQ groups: ``QLinearConv`` means int8 kernels, a
    ``Conv`` that is left means float."""
    return _runtime_graph(data)[0]


def _runtime_graph(data: bytes) -> tuple[dict[str, int], int]:
    """(:func:`runtime_ops`, how many of its :data:`FLOAT_OPS` nodes read a weight: an
    initializer (or one widened by a DequantizeLinear / Cast), as a layer's kernel does; a
    language model's attention MatMuls multiply two activations and are no weighted layer)."""
    import tempfile

    onnx = _onnx()
    with tempfile.TemporaryDirectory(prefix="lwdsl-ort-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        session(data, 1, optimized_to=optimized)
        graph = onnx.load(str(optimized)).graph
    inits = {t.name for t in graph.initializer}
    inits |= {n.output[0] for n in graph.node if n.op_type in ("DequantizeLinear", "Cast", "Transpose") and n.input
              and n.input[0] in inits}  # a weight kept in int8 (or 16 bits) and widened for a float kernel
    counts: dict[str, int] = {}
    weighted = 0
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
        weighted += int(node.op_type in FLOAT_OPS and any(i in inits for i in node.input[1:2]))
    return dict(sorted(counts.items())), weighted


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
        [sess.run(None, {name: np.ascontiguousarray(xb, dtype=np.float32)})[0] for _, xb in chunks(x, eval_batch(x.shape[1:], batch))]
    )


def onnx_file(model: Any, info: dict[str, Any]) -> EngineFile:
    """The file of an ONNX model of :func:`build` (or a rewrite of it that keeps its int8
    initializers): its bytes, its int8 codes, the layers it runs in float with why."""
    return EngineFile(model.SerializeToString(), _codes_in(model, info), dict(info.get("why_float", {})))


class OnnxEngine(Engine):
    """A deployable ONNX file in ONNX Runtime (CPU): a backend gives ``export(handle)``, the
    handle's float32 ONNX model (its fp32 file), and ``fingerprint(handle)``, a digest of what
    the model depends on; the int8 file is :func:`build` of them."""

    format, runtime = "onnx", "onnxruntime"

    def __init__(self, export: Callable[[Any], Any], fingerprint: Callable[[Any], str], tokens: bool = False) -> None:
        self.export, self.fingerprint, self.tokens = export, fingerprint, tokens

    def build(self, handle: Any) -> EngineFile:
        return onnx_file(*build(handle, self.export, self.fingerprint))

    def float_file(self, handle: Any) -> bytes:
        return self.export(handle).SerializeToString()

    def load(self, data: bytes, threads: int = 1) -> Callable[[np.ndarray], Callable[[], np.ndarray]]:
        sess = session(data, threads)
        name = sess.get_inputs()[0].name
        dtype = np.int64 if sess.get_inputs()[0].type == "tensor(int64)" else np.float32  # token ids or images

        def bind(x: np.ndarray) -> Callable[[], np.ndarray]:
            feed = {name: np.ascontiguousarray(x, dtype=dtype)}
            return lambda: sess.run(None, feed)[0]

        return bind

    def inventory(self, data: bytes, handle: Any) -> Inventory:
        ops, weighted = _runtime_graph(data)
        dtype = {**{op: "int8" for op in INT8_OPS}, **{op: "float32" for op in FLOAT_OPS}}
        return Inventory({f"{op} ({dtype[op]})" if op in dtype else op: n for op, n in ops.items()},
                         sum(n for op, n in ops.items() if op in INT8_OPS), weighted)


def half_onnx(model: Any, handle: Any) -> tuple[Any, dict[str, Any]]:
    """A copy of the float ONNX ``model`` of ``handle`` with each cast layer's weight initializer
    ``<layer>.weight`` stored as FLOAT16/BFLOAT16 (the core's 16-bit patterns) under
    ``<layer>.weight_<dtype>`` and read through ``Cast(to=FLOAT)`` into ``<layer>.weight``
    again. Returns (the model, ``{"half": layer -> dtype, "float": cast layers not found}``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    info: dict[str, Any] = {"half": {}, "float": []}
    casts = []
    for layer, dtype in handle.qstate.casts.items():
        name = f"{layer}.weight"
        if name not in inits:
            info["float"].append(layer)
            continue
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        kind = TensorProto.FLOAT16 if dtype == "fp16" else TensorProto.BFLOAT16
        half = helper.make_tensor(f"{name}_{dtype}", kind, list(w.shape), half_bits(w, dtype).tobytes(), raw=True)
        graph.initializer.remove(inits[name])
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [name], name=f"{name}_Cast", to=TensorProto.FLOAT))
        info["half"][layer] = dtype
    for node in reversed(casts):  # initializer-only inputs: first in the node list is topological
        graph.node.insert(0, node)
    return out, info


def export_onnx(engine: OnnxEngine, handle: Any, path: Path, ctx: StepContext) -> dict[str, Any]:
    """``export onnx`` of ``handle`` (its masks applied) to ``path``: float32 ONNX for a float model,
    cast layers' weights in 16 bits (:func:`half_onnx`: ONNX Runtime's CPU kernels compute in float32
    either way, the gain is size), the int8 QDQ file for a quantized one. Returns the ``artifact``
    summary (:func:`~lwdsl.backend.engines.export_file`, with the half layers and the float ops)."""
    model, info = build(handle, engine.export, engine.fingerprint)
    halves: dict[str, Any] = {}
    if handle.qstate.casts:
        model, halves = half_onnx(model, handle)
        if halves["float"]:
            ctx.warn(f"export onnx: cast layers {', '.join(halves['float'])} stay float32 in the ONNX file (their weight "
                     "initializer was not found)")
    built = onnx_file(model, info)
    summary = export_file(engine, built, path, handle, ctx)
    if halves.get("half"):
        summary["weights_dtype"] = ", ".join(sorted({"float16" if d == "fp16" else "bfloat16" for d in halves["half"].values()}))
        summary["half_layers"] = len(halves["half"])
    if handle.quant:
        if summary["float_ops"] > len(built.runs_float):
            summary["runs_float_unexplained"] = summary["float_ops"] - len(built.runs_float)
        if info["float"]:
            ctx.warn(f"export onnx: layers {', '.join(info['float'])} stay float32 in the ONNX file")
        if summary["float_ops"] and any(m != "weights_only" for m in handle.qstate.mode.values()):
            why = "; ".join(f"{layer}: {reason}" for layer, reason in built.runs_float.items())
            extra = summary.get("runs_float_unexplained")
            ctx.warn(f"export onnx: ONNX Runtime runs {summary['float_ops']} weighted op(s) of the int8 file in float32"
                     + (f" ({why})" if why else "")
                     + (f"; {extra} more for reasons the rewrite did not foresee" if extra else "")
                     + f" (ops: {', '.join(f'{k} x{v}' for k, v in summary['ops'].items())})")
    return summary


