"""The torch backend's int8 engine: its float32 ONNX export (``torch.onnx.export``), the one
thing the core's ONNX engine (:mod:`lwdsl.backend.onnx_int8`: the QDQ rewrite with lwdsl's own
codes and scales, the ONNX Runtime session, inventory and evaluation) needs from torch, and a
fingerprint of the module. ``quantize int8`` writes this file, ``export onnx`` writes it, and the
latency a run prints for an int8 model is its latency in ONNX Runtime. PyTorch's own x86 kernels
(bench/torch_ao_peer.py) run a model no file holds (torch.ao's model loads back only through
TorchScript, deprecated in torch 2.14): they are a peer in the bench, not an engine a run reports.

All exporter warnings stay inside this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import warnings
from typing import Any, Iterator

import torch

from lwdsl.backend.onnx_int8 import (  # noqa: F401  (the engine's parts, importable from here as before)
    FLOAT_OPS, INPUT, INT8_OPS, OPSET, OUTPUT, OnnxEngine, _onnx, build, onnx_file, run_onnx, runtime_ops, session,
)

from .handle import TorchModel

__all__ = ["ONNX", "OnnxEngine", "onnx_file", "build_onnx", "export_float", "runtime_ops", "session", "run_onnx", "OPSET"]


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


def _export(handle: TorchModel) -> Any:
    return export_float(handle.module, handle.input_shape)


def build_onnx(handle: TorchModel) -> tuple[Any, dict[str, Any]]:
    """(the int8 ONNX model of ``handle``, info): :func:`lwdsl.backend.onnx_int8.build` of its
    float export (the last one built is reused while the model is unchanged)."""
    return build(handle, _export, _fingerprint)


#: The engine the quantize flow, the latency and ``export onnx`` use.
ONNX = OnnxEngine(_export, _fingerprint)
