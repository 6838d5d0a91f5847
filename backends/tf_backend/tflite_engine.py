"""TFLite: conversion with the TensorFlow converter (:func:`convert`: float32; full integer after
``quantize int8 mode=static|qat``, the step's calibration images as representative data, float
input and output; dynamic-range after ``dynamic``/``weights_only``; float16 after ``quantize
fp16``; ``per_tensor`` switches per-channel off), and the file in the LiteRT interpreter
(:class:`LiteRtEngine`, the primitive the core's :mod:`lwdsl.backend.engines` writes, measures
and reports; its fp32 is the plain float32 conversion). The rules, the code agreement and what
is measured: docs/semantics.md, "Quantization on the tensorflow backend"; the report read from
the flatbuffer: :mod:`lwdsl.backend.tflite_report`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import numpy as np

from lwdsl.backend import StepContext
from lwdsl.backend.engines import Engine, EngineFile, Inventory, fingerprint, last_built
from lwdsl.backend.tflite_report import (WEIGHTED, OpInfo, TfliteReport, layer_of, runs_float, tflite_inventory,
                                          tflite_notes)
from lwdsl.errors import LwdslError

from ._tf import quiet_stderr, quiet_stdout, tf
from .handle import KerasHandle
from .layers import nhwc

__all__ = ["LITERT", "LiteRtEngine", "convert", "artifact", "inspect_model", "interpreter", "TfliteReport", "report"]

_REP_BATCH = 1  # the calibrator feeds one example at a time


def _litert() -> Any:
    try:
        with quiet_stderr():
            from ai_edge_litert import interpreter as litert
            from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # pragma: no cover - comes with the tensorflow extra
        raise LwdslError(
            "evaluating a .tflite file needs LiteRT (the ai-edge-litert package)",
            hint="pip install 'lwdsl[tensorflow]' (or pip install ai-edge-litert)",
        ) from exc
    return litert, schema


def _fingerprint(handle: KerasHandle) -> str:
    """The core's :func:`~lwdsl.backend.engines.fingerprint` of the model's weights."""
    return fingerprint(enumerate(handle.model.get_weights()), handle.qstate)


_BUILT: dict[str, tuple[bytes, str]] = {}
_FLOAT: dict[str, bytes] = {}


def artifact(handle: KerasHandle, io: str = "float32") -> tuple[bytes, str]:
    """:func:`convert`, kept while the model is unchanged (a run times it at two batch sizes and
    the export step reports on it)."""
    return last_built(_BUILT, _fingerprint(handle) + io, lambda: convert(handle, io))


def convert(handle: KerasHandle, io: str = "float32", *, as_float: bool = False) -> tuple[bytes, str]:
    """The ``.tflite`` bytes of the handle's model and the conversion mode (``float32``,
    ``int8`` full integer, ``dynamic-range``, ``fp16``: a model cast by ``quantize fp16`` alone,
    ``supported_types=[tf.float16]``; a bf16 cast or a cast mixed with integer codes is refused). Full-integer conversion calibrates on the
    quantize step's calibration images (the reference its record keeps);
    ``io="int8"`` (full integer only) gives the model int8 input and output tensors;
    ``as_float``: the plain float32 conversion of the model as it is (its quantized kernels hold
    ``codes * scale``), the runtime's own fp32 of it."""
    model = handle.copy().finalize().model
    mode = None if as_float else handle.qstate.model_mode
    casts = {} if as_float else handle.qstate.casts
    if casts and (handle.quant or set(casts.values()) != {"fp16"}):
        raise LwdslError(
            "export tflite: a .tflite file holds float16 weights only for a model cast by `quantize fp16` alone: "
            + ("this one is also quantized to integer codes" if handle.quant else "bfloat16 weights have no TFLite form"),
            hint="quantize fp16 (for a float16 .tflite) or int8 (for an int8 one), not both; for bf16 write export "
            "keras or saved_model (float32 kernels holding the bf16 values; model.lwz keeps the 16 bits)",
        )
    if io == "int8" and mode not in ("static", "qat"):
        raise LwdslError(
            "export tflite io=int8 needs a fully integer model: the model is "
            + ("not quantized" if mode is None else f"quantized with mode={mode}, whose activations stay float"),
            hint="put `quantize int8 mode=static` (or mode=qat) before the export, or drop io=int8",
        )
    with quiet_stderr(), quiet_stdout():  # Keras 3: the converter exports a SavedModel first, which prints
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if mode is None and casts:  # float16 weights, dequantized to float32 at load (CPU kernels run float32)
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
            kind = "fp16"
        elif mode is None:
            kind = "float32"
        else:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            if handle.qstate.settings.granularity == "per_tensor":
                conv._experimental_disable_per_channel = True
            if mode in ("static", "qat"):
                images = nhwc(handle.qstate.calibration_images())

                def representative() -> Iterator[list[np.ndarray]]:
                    for start in range(0, len(images), _REP_BATCH):
                        yield [images[start : start + _REP_BATCH]]

                conv.representative_dataset = representative
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                if io == "int8":
                    conv.inference_input_type = tf.int8
                    conv.inference_output_type = tf.int8
                kind = "int8" if io == "float32" else "int8 (int8 input and output)"
            else:
                kind = "dynamic-range"
        data = conv.convert()
    return data, kind


def _type_names(schema: Any) -> dict[int, str]:
    return {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


def _op_names(schema: Any) -> dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def inspect_model(data: bytes, handle: KerasHandle) -> TfliteReport:
    """Ops, dtypes and the weights of every conv/dense op of a ``.tflite`` model of ``handle``."""
    _, schema = _litert()
    model = schema.Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    types, opnames = _type_names(schema), _op_names(schema)
    views = {v.name: v for v in handle.views()}
    order = [v.name for v in handle.views() if v.kind in ("conv", "linear")]
    out = TfliteReport()

    def tensor(i: int) -> Any:
        return graph.Tensors(int(i)) if i >= 0 else None

    def dtype(t: Any) -> str:
        return "-" if t is None else types.get(t.Type(), str(t.Type()))

    pending = list(order)
    widened: dict[int, Any] = {}  # DEQUANTIZE output tensor -> its float16 input (fp16 files)
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = opnames.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        ins = [tensor(i) for i in op.InputsAsNumpy()]
        outs = [tensor(i) for i in op.OutputsAsNumpy()]
        if name == "DEQUANTIZE" and ins and ins[0] is not None and ins[0].Type() == schema.TensorType.FLOAT16:
            widened[int(op.OutputsAsNumpy()[0])] = ins[0]
        layer = None
        if name in WEIGHTED and len(ins) > 1 and ins[1] is not None:
            w = ins[1]
            half = widened.get(int(op.InputsAsNumpy()[1]))
            if half is not None:
                w = half
            layer = layer_of(w.Name().decode(), order)
            if layer is None and pending:
                layer = pending[0]  # model order, when the names do not tell
            if layer in pending:
                pending.remove(layer)
            if w.Type() == schema.TensorType.INT8 and layer in views:
                raw = model.Buffers(w.Buffer()).DataAsNumpy()
                shape = tuple(int(d) for d in w.ShapeAsNumpy())
                if isinstance(raw, np.ndarray) and raw.size == int(np.prod(shape)):
                    got = _keras_layout(raw.view(np.int8).reshape(shape), name, views[layer])
                    if got is not None:
                        out.codes[layer] = got
                        q = w.Quantization()
                        out.scales[layer] = q.ScaleAsNumpy().astype(np.float32) if q is not None else np.zeros(0, np.float32)
            elif half is not None and layer in views:
                raw = model.Buffers(w.Buffer()).DataAsNumpy()
                shape = tuple(int(d) for d in w.ShapeAsNumpy())
                if isinstance(raw, np.ndarray) and raw.size == 2 * int(np.prod(shape)):
                    got = _keras_layout(raw.view(np.uint16).reshape(shape), name, views[layer])
                    if got is not None:
                        out.halves[layer] = got
            elif layer is not None and w.Type() != schema.TensorType.INT8:
                out.float_layers.append(layer)
        out.ops.append(OpInfo(name, layer, tuple(dtype(t) for t in ins), tuple(dtype(t) for t in outs)))
    return out


def _keras_layout(weights: np.ndarray, op: str, view: Any) -> Optional[np.ndarray]:
    """A TFLite weight tensor (``[out, in]`` dense, ``[out, *k, in]`` conv: Keras ``(*k, in, out)``
    moved) in the canonical layout; None when its size is not the layer's."""
    kshape = tuple(int(d) for d in view.weight.variable.shape)
    keras = weights.T if op == "FULLY_CONNECTED" else np.moveaxis(weights, 0, -1)
    if int(np.prod(kshape)) != keras.size:
        return None
    return np.ascontiguousarray(view.weight.to_canon(keras.reshape(kshape)))


def interpreter(data: bytes, threads: int = 1) -> Any:
    """A LiteRT interpreter of the model (its delegate's log line kept off stderr)."""
    litert, _ = _litert()
    with quiet_stderr():
        it = litert.Interpreter(model_content=data, num_threads=threads)
    return it


def report(data: bytes, kind: str, handle: KerasHandle, ctx: StepContext) -> dict[str, Any]:
    """The notes of one ``.tflite`` artifact (:func:`lwdsl.backend.tflite_report.tflite_notes`)."""
    views = handle.view_map()
    return tflite_notes(inspect_model(data, handle), len(data), kind, handle.quant, handle.qstate.casts,
                        lambda name: views[name].weight.canonical() if name in views else None, ctx.warn)


class LiteRtEngine(Engine):
    """The tensorflow backend's deployable file: the ``.tflite`` of :func:`artifact` in LiteRT;
    its fp32 is the plain float32 conversion of the same model."""

    format, runtime = "tflite", "litert"
    codes_note = ("the converter derives each scale from max|w| again, which moved where training after quantize (or "
                  "method=gptq's codes) left a channel without a code at +-127")

    def build(self, handle: KerasHandle) -> EngineFile:
        data, kind = artifact(handle)
        return self.file_of(data, kind, handle)

    def file_of(self, data: bytes, kind: str, handle: KerasHandle) -> EngineFile:
        """The engine's view of ``.tflite`` bytes of ``handle`` converted as ``kind``."""
        info = inspect_model(data, handle)
        return EngineFile(data, dict(info.codes), runs_float(info, handle.quant, kind == "dynamic-range"))

    def float_file(self, handle: KerasHandle) -> bytes:
        # kept beside the int8 file: a quantize step and its export both ask
        return last_built(_FLOAT, _fingerprint(handle), lambda: convert(handle, as_float=True)[0])

    def load(self, data: bytes, threads: int = 1) -> Callable[[np.ndarray], Callable[[], np.ndarray]]:
        it = interpreter(data, threads)
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        shape: list[Any] = [None]

        def bind(x: np.ndarray) -> Callable[[], np.ndarray]:
            xb = np.ascontiguousarray(nhwc(x), dtype=np.float32)
            if shape[0] != xb.shape:
                with quiet_stderr():
                    it.resize_tensor_input(inp["index"], list(xb.shape))
                    it.allocate_tensors()
                shape[0] = xb.shape
            if inp["dtype"] != np.float32:  # int8 input: quantized with the model's own input parameters
                scale, zp = inp["quantization"]
                xb = np.clip(np.rint(xb / scale) + zp, -128, 127).astype(inp["dtype"])
            it.set_tensor(inp["index"], xb)

            def call() -> np.ndarray:
                it.invoke()
                return it.get_tensor(out["index"])

            return call

        return bind

    def inventory(self, data: bytes, handle: KerasHandle) -> Inventory:
        return tflite_inventory(inspect_model(data, handle))


#: The engine the quantize flow, the latency and ``export tflite`` use.
LITERT = LiteRtEngine()
