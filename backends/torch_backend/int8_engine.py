"""The torch backend's int8 engine: its float32 ONNX export (``torch.onnx.export``), the one
thing the core's ONNX engine (:mod:`lwdsl.backend.onnx_int8`: the QDQ rewrite with lwdsl's own
codes and scales, the ONNX Runtime session, inventory and evaluation) needs from torch, and a
fingerprint of the module. ``quantize int8`` writes this file, ``export onnx`` writes it, and the
latency a run prints for an int8 model is its latency in ONNX Runtime. A language model (token ids in,
:func:`.hf.takes_tokens`) is exported by ``torch.onnx``'s dynamo exporter (:func:`export_tokens`:
the TorchScript one cannot trace ``transformers``' mask code), its linear layers' weight
initializers renamed after the layers so the core's rewrite finds them. PyTorch's own x86 kernels
(bench/torch_ao_peer.py) run a model no file holds (torch.ao's model loads back only through
TorchScript, deprecated in torch 2.14): they are a peer in the bench, not an engine a run reports.

All exporter warnings stay inside this module.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from lwdsl.backend.onnx_int8 import (  # noqa: F401  (the engine's parts, importable from here as before)
    FLOAT_OPS, INPUT, INT8_OPS, OPSET, OUTPUT, OnnxEngine, _onnx, build, onnx_file, run_onnx, runtime_ops, session,
)
from lwdsl.backend.engines import fingerprint
from lwdsl.backend.threads import quiet_logs

from .handle import TorchModel
from .hf import takes_tokens

__all__ = ["ONNX", "OnnxEngine", "onnx_file", "build_onnx", "export_float", "export_tokens", "runtime_ops", "session",
           "run_onnx", "OPSET"]


def export_float(module: torch.nn.Module, input_shape: tuple[int, ...]) -> Any:
    """The module as a float32 ONNX model (dynamic batch); hooks-free, eval mode."""
    onnx = _onnx()
    was_training = module.training
    module.eval()
    buf = io.BytesIO()
    try:
        with quiet_logs("torch.onnx"), torch.no_grad():  # the exporter's notices and logging
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


#: The opset of a language model's file (the dynamo exporter's own; QDQ per axis needs 13).
TOKENS_OPSET = 18


def export_tokens(module: torch.nn.Module, input_shape: tuple[int, ...]) -> Any:
    """A model of token ids (int64 ``[batch, seq]`` in, logits out) as a float32 ONNX model:
    ``torch.onnx.export(dynamo=True)``, a dynamic batch and the fixed sequence length
    ``input_shape[0]`` (the run's: lwdsl's sequences are fixed-length, no padding). Each linear
    layer's weight initializer is renamed after its layer (the node's ``name_scopes`` metadata, its
    values checked equal to the module's weight): ``<layer>.weight_t`` (``[in, out]``) read by a
    MatMul, ``<layer>.weight`` (``[out, in]``) read by a ``Gemm`` with ``transB=1``; the core's
    rewrite (:func:`lwdsl.backend.onnx_int8.rewrite`) finds the layers by these names."""
    import numpy as np
    from onnx import numpy_helper

    _onnx()
    was_training = module.training
    module.eval()
    try:
        with quiet_logs("torch.onnx"), torch.no_grad():  # the exporter's notices and logging
            program = torch.onnx.export(
                module, (torch.zeros(2, *input_shape, dtype=torch.long),), dynamo=True, opset_version=TOKENS_OPSET,
                input_names=[INPUT], output_names=[OUTPUT], dynamic_shapes=({0: torch.export.Dim("batch")},),
                optimize=True, verbose=False,
            )
    finally:
        module.train(was_training)
    model = program.model_proto
    linears = {name: m for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)}
    inits = {t.name: t for t in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for i in node.input:
            readers[i] = readers.get(i, 0) + 1
    renamed: dict[str, str] = {}
    for node in model.graph.node:
        gemm = node.op_type == "Gemm" and any(a.name == "transB" and a.i == 1 for a in node.attribute)
        if not (node.op_type == "MatMul" or gemm) or len(node.input) < 2 or node.input[1] not in inits:
            continue
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        layer = next((s for s in reversed(_scopes(scopes)) if s in linears), None)
        b = node.input[1]
        if layer is None or readers.get(b) != 1 or b in renamed:
            continue
        w = linears[layer].weight.detach().numpy()
        held = numpy_helper.to_array(inits[b])
        if not np.array_equal(held, w if gemm else w.T):
            continue
        renamed[b] = f"{layer}.weight" if gemm else f"{layer}.weight_t"
        inits[b].name = renamed[b]
        node.input[1] = renamed[b]
    return model


def _scopes(text: str) -> list[str]:
    """The module names of the exporter's ``name_scopes`` metadata (a Python list as text)."""
    import ast

    try:
        got = ast.literal_eval(text) if text else []
    except (ValueError, SyntaxError):
        return []
    return [str(s) for s in got] if isinstance(got, (list, tuple)) else []


def _fingerprint(handle: TorchModel) -> str:
    """The core's :func:`~lwdsl.backend.engines.fingerprint` of every tensor of the module."""
    return fingerprint(((n, t.detach().numpy()) for n, t in handle.module.state_dict().items()), handle.qstate)


def _export(handle: TorchModel) -> Any:
    if takes_tokens(handle.module):
        return export_tokens(handle.module, handle.input_shape)
    return export_float(handle.module, handle.input_shape)


def build_onnx(handle: TorchModel) -> tuple[Any, dict[str, Any]]:
    """(the int8 ONNX model of ``handle``, info): :func:`lwdsl.backend.onnx_int8.build` of its
    float export (the last one built is reused while the model is unchanged)."""
    return build(handle, _export, _fingerprint)


#: The engine the quantize flow, the latency and ``export onnx`` use (images or token ids).
ONNX = OnnxEngine(_export, _fingerprint, tokens=True)
