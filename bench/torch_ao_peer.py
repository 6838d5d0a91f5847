"""The torch.ao peer (bench code, not part of the product): lwdsl's int8 codes on PyTorch's own quantized CPU kernels (the ``x86``
quantized engine: oneDNN and FBGEMM), for ``bench/int8_bench.py --torch-ao``.

It is not an engine a run reports: its model exists only in memory (``torch.save`` writes it,
loading it back fails; its one serialisation, TorchScript, is deprecated in torch 2.14, as is
``torch.ao.quantization`` itself), and the latency a run prints is that of a file the run wrote
(:mod:`lwdsl.backend.engines`: the ONNX file of int8_engine.py). The bench times it beside
torch.ao FX by hand and the ONNX file. :func:`usable` says where it runs: a CPU whose flags
include ``avx512_vnni``, ``avx_vnni`` or ``amx_int8`` (on AVX2 only, FBGEMM's u8 x s8 products can
saturate 16-bit intermediates with full-range activations; PyTorch's own x86 qconfig shrinks
activations to 7 bits there), every quantized layer an int8 ``static``/``qat`` layer
(weight-only and dynamic layers, and the low-bit forms, have no such kernels here), and the
step's calibration images at hand.

How it is built (:func:`build`), with no number of its own where lwdsl has one:

1. the module (batch norms folded by ``quantize``; the ``nn.Identity`` left in their place is
   dropped from a ``torch.fx`` trace so conv+relu, linear+relu and add+relu fuse) goes through
   ``prepare_fx`` with one qconfig per quantized layer: activations observed by the core's
   :class:`~lwdsl.semantics.quant.RangeObserver` (the step's ``observer=``) and
   :func:`~lwdsl.semantics.quant.act_qparams`; the float layers get none and stay float;
2. it runs the step's own calibration images (same indices) and ``convert_fx`` makes it int8;
3. each quantized layer's weight is replaced by lwdsl's codes and scales (``set_weight_bias``;
   the bias stays float and the kernel quantizes it at ``scale_x * scale_w`` as lwdsl does);
4. each quantized layer's input quantization is set to ``handle.act[layer]``: on the op that
   produces it (the ``quantize_per_tensor`` of the input, the previous quantized layer, a
   quantized addition) when only ops that commute exactly with the quantizer lie between (max
   pooling, flatten, reshape, dropout, a relu when the zero point is 0, a relu6 when also the
   range ends at or below 6), otherwise by a requantize inserted just before the layer.

What torch.ao quantizes and lwdsl's semantics keeps float (a layer's output that feeds an
addition, the sum, the logits) gets its range from the same core observer on the same images:
those are the engine's only numbers of its own, and its outputs differ from lwdsl's fake
quantization by them (``tests/backends/test_torch_ao_peer.py`` bounds the difference).

All torch.ao deprecation notices stay inside this module.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import nn

from lwdsl.data.stream import chunks, eval_batch
from lwdsl.semantics.quant import ActQuant, RangeObserver, act_qparams

from lwdsl.backends.torch_backend.handle import TorchModel

__all__ = ["ENGINE", "cpu_int8_flags", "usable", "build", "run"]

ENGINE = "torch.ao x86"

#: CPU flags that give int8 dot products without 16-bit saturation.
_INT8_DOT = ("avx512_vnni", "avx_vnni", "amx_int8")


@lru_cache(maxsize=1)
def cpu_int8_flags() -> tuple[str, ...]:
    """The int8 dot-product flags of this CPU (from /proc/cpuinfo; empty elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return tuple(f for f in _INT8_DOT if f in flags)
    return ()


def usable(handle: TorchModel) -> tuple[bool, str]:
    """(whether this engine runs ``handle``'s int8 model, why not when it does not)."""
    if "x86" not in torch.backends.quantized.supported_engines:
        return False, "this torch build has no x86 quantized engine"
    if not cpu_int8_flags():
        return False, "the CPU has no VNNI/AMX int8 dot products"
    if not handle.quant:
        return False, "no quantized layer"
    for layer, q in handle.quant.items():
        if handle.qstate.mode.get(layer) not in ("static", "qat") or q.bits != 8 or layer not in handle.act:
            return False, f"layer {layer} is not an int8 static/qat layer"
    if handle.qstate.calib is None:
        return False, "the calibration images are not at hand (a model loaded already quantized)"
    return True, ""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _observer_class(method: str) -> type:
    from torch.ao.quantization.observer import MinMaxObserver

    class CoreObserver(MinMaxObserver):
        """torch.ao's observer interface around the core's RangeObserver and act_qparams."""

        def __init__(self, **_: Any) -> None:
            super().__init__(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
            self.core = RangeObserver(method)
            self.seen = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.core.update(x.detach().to(torch.float32).numpy())
            self.seen = True
            return x

        def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
            aq = act_qparams(*self.core.range()) if self.seen else ActQuant(1.0, 0)
            return torch.tensor([aq.scale], dtype=torch.float32), torch.tensor([aq.zero_point], dtype=torch.int32)

    return CoreObserver


def _traced(module: nn.Module) -> torch.fx.GraphModule:
    """An fx trace of ``module`` without its ``nn.Identity`` calls (folded norms)."""
    gm = torch.fx.symbolic_trace(module)
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Identity):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.recompile()
    return gm


#: fx ops between a producer and a quantized layer that leave the quantized values unchanged.
_COMMUTE_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Flatten, nn.Dropout, nn.Identity)
_COMMUTE_FUNCS = {torch.flatten, torch.reshape, nn.functional.max_pool2d, nn.functional.dropout}
_COMMUTE_METHODS = {"flatten", "view", "reshape", "contiguous"}


def _commutes(gm: torch.fx.GraphModule, node: torch.fx.Node, aq: ActQuant) -> bool:
    relu_ok = aq.zero_point == aq.qmin  # quantizing then clamps at 0 exactly as relu does
    top = aq.scale * (aq.qmax - aq.zero_point)  # and at this value: a relu6 above it changes nothing
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if isinstance(mod, nn.Hardtanh):  # nn.ReLU6 is a Hardtanh(0, 6)
            return relu_ok and mod.min_val == 0 and top <= mod.max_val
        return isinstance(mod, _COMMUTE_MODULES) or (relu_ok and isinstance(mod, nn.ReLU))
    if node.op == "call_function":
        if node.target is nn.functional.relu6:
            return relu_ok and top <= 6
        return node.target in _COMMUTE_FUNCS or (relu_ok and node.target in (torch.relu, nn.functional.relu))
    if node.op == "call_method":
        return node.target in _COMMUTE_METHODS or (relu_ok and node.target == "relu")
    return False


def _qparam_args(node: torch.fx.Node) -> Optional[tuple[torch.fx.Node, torch.fx.Node]]:
    """The (scale, zero point) get_attr arguments of a quantize_per_tensor or quantized op."""
    attrs = [a for a in node.args if isinstance(a, torch.fx.Node) and a.op == "get_attr"]
    scale = [a for a in attrs if "scale" in str(a.target)]
    zp = [a for a in attrs if "zero_point" in str(a.target)]
    return (scale[0], zp[0]) if len(scale) == 1 and len(zp) == 1 else None


def _output_qparams(gm: torch.fx.GraphModule, node: torch.fx.Node) -> Optional[tuple[float, int]]:
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if hasattr(mod, "scale") and hasattr(mod, "zero_point"):
            return float(mod.scale), int(mod.zero_point)
        return None
    if node.op == "call_function":
        args = _qparam_args(node)
        if args is not None:
            return float(getattr(gm, args[0].target)), int(getattr(gm, args[1].target))
    return None


def _set_output_qparams(gm: torch.fx.GraphModule, node: torch.fx.Node, aq: ActQuant) -> None:
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        mod.scale, mod.zero_point = float(aq.scale), int(aq.zero_point)
        return
    scale, zp = _qparam_args(node)
    setattr(gm, scale.target, torch.tensor(aq.scale, dtype=torch.float32))
    setattr(gm, zp.target, torch.tensor(aq.zero_point, dtype=torch.int64))


def _set_inputs(gm: torch.fx.GraphModule, act: dict[str, ActQuant]) -> dict[str, str]:
    """Give each quantized layer of ``act`` exactly its input quantization (step 4 above).
    Returns layer -> how: ``producer`` (set on the op that makes the tensor) or ``requantize``."""
    how: dict[str, str] = {}
    owner: dict[torch.fx.Node, ActQuant] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node.target not in act:
            continue
        aq = act[node.target]
        src = node.args[0]
        while isinstance(src, torch.fx.Node) and _commutes(gm, src, aq) and src.args:
            src = src.args[0]
        settable = isinstance(src, torch.fx.Node) and _output_qparams(gm, src) is not None
        if settable and (src not in owner or owner[src] == aq):
            _set_output_qparams(gm, src, aq)
            owner[src] = aq
            how[node.target] = "producer"
            continue
        with gm.graph.inserting_before(node):
            deq = gm.graph.call_method("dequantize", (node.args[0],))
            req = gm.graph.call_function(torch.quantize_per_tensor, (deq, float(aq.scale), int(aq.zero_point), torch.quint8))
        node.args = (req,) + tuple(node.args[1:])
        how[node.target] = "requantize"
    gm.recompile()
    return how


def _set_weights(gm: torch.fx.GraphModule, handle: TorchModel) -> None:
    """Step 3: lwdsl's codes and scales in place of the observer's."""
    for layer, q in handle.quant.items():
        mod = gm.get_submodule(layer)
        codes = torch.from_numpy(np.ascontiguousarray(q.codes, dtype=np.int8))
        scale = np.asarray(q.scale, dtype=np.float64)
        if q.axis is None:
            qw = torch._make_per_tensor_quantized_tensor(codes, float(scale), 0)
        else:
            s = torch.from_numpy(scale.reshape(-1).copy())
            qw = torch._make_per_channel_quantized_tensor(codes, s, torch.zeros(len(s), dtype=torch.int64), int(q.axis))
        mod.set_weight_bias(qw, mod.bias())


def build(handle: TorchModel) -> tuple[torch.fx.GraphModule, dict[str, Any]]:
    """(the int8 module of ``handle``, info: ``int8`` layer -> how its input quantization was
    set). Raises whatever fx or torch.ao raise for a model they cannot take."""
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.observer import PerChannelMinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    calib = handle.qstate.calib
    x_all, idx, method = calib.train_x, calib.indices, calib.observer
    with _quiet():
        torch.backends.quantized.engine = "x86"
        weight = PerChannelMinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127
        )
        qconfig = QConfig(activation=_observer_class(method), weight=weight)
        mapping = QConfigMapping().set_global(qconfig)
        module = copy.deepcopy(handle.module).eval()
        for name, mod in module.named_modules():  # a conv/linear left float by the recipe stays float
            if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and name not in handle.quant:
                mapping.set_module_name(name, None)
        gm = _traced(module)
        example = torch.as_tensor(x_all[idx[:1]])
        prepared = prepare_fx(gm, mapping, (example,))
        with torch.inference_mode():
            for start in range(0, len(idx), 256):
                prepared(torch.as_tensor(x_all[idx[start : start + 256]]))
        qm = convert_fx(prepared)
        _set_weights(qm, handle)
        how = _set_inputs(qm, {k: v for k, v in handle.act.items() if k in handle.quant})
    return qm, {"int8": how, "float": []}


def run(module: torch.nn.Module, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Logits of ``x`` from the int8 module, in batches."""
    with _quiet(), torch.inference_mode():
        return np.concatenate(
            [module(torch.as_tensor(np.ascontiguousarray(xb, dtype=np.float32))).numpy()
             for _, xb in chunks(x, eval_batch(x.shape[1:], batch))]
        )
