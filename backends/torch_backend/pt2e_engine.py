"""The torch backend's second int8 engine: a ``torch.export`` program (``.pt2``) quantized by
PT2E for inductor's x86 int8 kernels, holding lwdsl's own codes, scales and input ranges
(:class:`Pt2eEngine`; ``export pt2e`` writes it, optional: ``pip install 'lwdsl[pt2e]'``).
torchao's documented x86 flow (``torch.export``, ``X86InductorQuantizer``, ``prepare_pt2e`` on
the step's calibration images, ``convert_pt2e``), then lwdsl's numbers put in
(:func:`_put_numbers`), the float weights dropped and ``lwdsl.json`` mapping layers to constants;
:meth:`Pt2eEngine.load` compiles it as a user would (:data:`COMPILE`, one graph per batch size).
Why, how, when it falls back to the ONNX file, and what it measured: docs/semantics.md ("PT2E
engine") and docs/results.md.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
from typing import Any, Callable, Optional

import numpy as np
import torch

from lwdsl.backend.engines import Engine, EngineFile, Inventory, last_built
from lwdsl.backend.threads import cpu_flags, quiet_logs
from lwdsl.errors import LwdslError

from .handle import TorchModel

__all__ = ["PT2E", "Pt2eEngine", "torchao_missing", "cpu_refusal", "build_program", "one_relu_per_call", "COMPILE"]

#: What lwdsl stores inside the file (``torch.export.save``'s extra files): layer -> constants.
META = "lwdsl.json"

#: The inductor settings a user (and :meth:`Pt2eEngine.load`) compiles the loaded program with, as
#: torchao documents for x86 (``torch._inductor.config.freezing = True``: the int8 weights are
#: packed for oneDNN once; ``torch.compile(..., options=...)`` alone does not freeze them).
COMPILE = {"freezing": True}

_Q = "quantized_decomposed"


def torchao_missing() -> Optional[str]:
    """Why ``export pt2e`` cannot run here (None when torchao's PT2E flow imports)."""
    try:
        with _quiet():  # torchao's import logs a notice about its enums through torch's pytree logger
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e  # noqa: F401
            import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401
    except Exception as exc:  # ImportError, or a torchao built for another torch
        return f"export pt2e needs torchao's PT2E flow ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return None


def _need_torchao() -> None:
    why = torchao_missing()
    if why:
        raise LwdslError(why, hint="pip install 'lwdsl[pt2e]' (torchao)")


def cpu_refusal() -> Optional[str]:
    """Why this CPU should not run inductor's int8 kernels (None with VNNI or AMX int8)."""
    flags = cpu_flags()
    vnni = getattr(torch.cpu, "_is_vnni_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if (vnni is not None and vnni()) or (amx is not None and amx()) or flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return None
    return ("this CPU has no VNNI or AMX int8 dot-product instructions: inductor's int8 kernels would not beat "
            "ONNX Runtime's there")


def _quiet() -> Any:
    """Keep torch.export's, torchao's and inductor's warnings and logging out of the run's output."""
    return quiet_logs("torch._dynamo", "torch._inductor", "torch.export", "torch._export", "torch.fx",
                      "torch.utils._pytree", "torch.utils.cpp_extension", "torchao")


def one_relu_per_call(module: torch.nn.Module) -> torch.nn.Module:
    """torchvision's residual blocks call one ReLU module twice (three times in a bottleneck);
    PT2E's quantizer then finds an "input partition with more than one output node". Give each
    call its own ReLU (the same maths); other modules are left as they are."""
    try:
        from torchvision.models.resnet import BasicBlock, Bottleneck
    except ImportError:
        return module

    def basic(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu_out(self.bn2(self.conv2(out)) + identity)

    def bottleneck(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu_mid(self.bn2(self.conv2(out)))
        return self.relu_out(self.bn3(self.conv3(out)) + identity)

    for m in module.modules():
        if isinstance(m, (BasicBlock, Bottleneck)):
            m.relu_mid, m.relu_out = torch.nn.ReLU(), torch.nn.ReLU()
            m.forward = (basic if isinstance(m, BasicBlock) else bottleneck).__get__(m)
    return module


def _layout(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x.contiguous()


def _export(module: torch.nn.Module, example: torch.Tensor) -> Any:
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))


def _layer_of(node: Any) -> Optional[str]:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else None


def _is(node: Any, op: str) -> bool:
    return getattr(node, "op", None) == "call_function" and str(node.target).startswith(f"{_Q}.{op}")


#: ops whose output values are input values: a quantization PT2E shares across them
_SHARED = ("aten.max_pool2d", "aten.flatten", "aten.view", "aten.reshape", "aten._unsafe_view", "aten.squeeze", "aten.unsqueeze")


def _set_pair(q: Any, scale: float, zp: int, done: set[int]) -> None:
    """Give the ``quantize_per_tensor`` node ``q`` and every ``dequantize_per_tensor`` reading it
    (scale, zero point); carried back through a shared op whose input pair had the same values."""
    old = (q.args[1], q.args[2])
    if id(q) in done:
        return
    done.add(id(q))
    q.args = (q.args[0], scale, zp, *q.args[3:])
    for dq in list(q.users):
        if _is(dq, "dequantize_per_tensor"):
            dq.args = (dq.args[0], scale, zp, *dq.args[3:])
    src = q.args[0]
    if getattr(src, "op", None) == "call_function" and str(src.target).startswith(_SHARED):
        up = src.args[0]
        if _is(up, "dequantize_per_tensor") and (up.args[1], up.args[2]) == old and _is(up.args[0], "quantize_per_tensor"):
            _set_pair(up.args[0], scale, zp, done)


def _put_numbers(gm: torch.fx.GraphModule, handle: TorchModel) -> dict[str, dict[str, str]]:
    """lwdsl's codes, scales and input quantization into the converted graph (module docstring,
    step 3). Returns layer -> the names of its constants (codes, scale)."""
    where: dict[str, dict[str, str]] = {}
    done: set[int] = set()
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or str(node.target) not in ("aten.conv2d.default", "aten.linear.default", "aten.conv1d.default"):
            continue
        layer = _layer_of(node)
        if layer not in handle.quant:
            continue
        q = handle.quant[layer]
        wdq = node.args[1]
        if not _is(wdq, "dequantize_per_channel") or any(a.op != "get_attr" for a in wdq.args[:3]):
            raise LwdslError(f"PT2E left layer {layer}'s weight in a form lwdsl cannot rewrite")
        codes_name, scale_name, zp_name = (a.target for a in wdq.args[:3])
        old = getattr(gm, codes_name)
        codes = torch.from_numpy(np.ascontiguousarray(q.codes, dtype=np.int8))
        if tuple(old.shape) != tuple(codes.shape):
            raise LwdslError(f"layer {layer}: PT2E's int8 weight has shape {tuple(old.shape)}, lwdsl's codes {tuple(codes.shape)}")
        channels = codes.shape[0]
        scale = torch.from_numpy(np.broadcast_to(np.asarray(q.scale, np.float32).reshape(-1), (channels,)).copy())
        setattr(gm, codes_name, codes)
        setattr(gm, scale_name, scale)
        setattr(gm, zp_name, torch.zeros(channels, dtype=getattr(gm, zp_name).dtype))
        wdq.args = (*wdq.args[:3], 0, -128, 127, torch.int8)
        where[layer] = {"codes": codes_name, "scale": scale_name}
        aq = handle.act.get(layer)
        xdq = node.args[0]
        if aq is not None and _is(xdq, "dequantize_per_tensor") and _is(xdq.args[0], "quantize_per_tensor"):
            xq = xdq.args[0]
            if id(xq) in done and (xq.args[1], xq.args[2]) != (float(aq.scale), int(aq.zero_point)):
                with gm.graph.inserting_after(xq):  # two layers read one tensor with different ranges: a pair of its own
                    xq = gm.graph.call_function(xq.target, tuple(xq.args), dict(xq.kwargs))
                with gm.graph.inserting_after(xq):
                    mine = gm.graph.call_function(xdq.target, (xq, *xdq.args[1:]), dict(xdq.kwargs))
                node.replace_input_with(xdq, mine)
            _set_pair(xq, float(aq.scale), int(aq.zero_point), done)
    gm.graph.lint()
    gm.recompile()
    return where


def _drop_unused(gm: torch.fx.GraphModule) -> None:
    """Remove the parameters and buffers no node reads (the float weights convert_pt2e leaves)."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in [k for k, _ in gm.named_parameters()] + [k for k, _ in gm.named_buffers()]:
        if name in used:
            continue
        owner, _, leaf = name.rpartition(".")
        mod = gm.get_submodule(owner) if owner else gm
        mod._parameters.pop(leaf, None)
        mod._buffers.pop(leaf, None)


def refusal(handle: TorchModel) -> Optional[str]:
    """Why ``handle``'s model has no PT2E int8 file (None when it has one, or is float)."""
    if not handle.quant:
        return None
    from .layers import weighted_layers

    not_static = sorted(n for n in handle.quant if handle.qstate.mode.get(n) not in ("static", "qat") or n not in handle.act)
    if not_static:
        return (f"PT2E's x86 flow runs int8 layers with calibrated activations (quantize int8, mode static or qat); "
                f"{', '.join(not_static)} {'is' if len(not_static) == 1 else 'are'} not")
    kinds = ("Conv2d", "Linear")
    left = [n for n, m in weighted_layers(handle.module) if type(m).__name__ in kinds and n not in handle.quant]
    if left:
        return (f"X86InductorQuantizer quantizes every conv and linear layer; {', '.join(left)} "
                f"{'is' if len(left) == 1 else 'are'} not quantized by the recipe")
    if handle.qstate.calib is None:
        return "the calibration images are not at hand (a model loaded already quantized)"
    return None


def build_program(handle: TorchModel) -> tuple[Any, dict[str, Any]]:
    """(the exported program of ``handle``'s model: PT2E int8 with lwdsl's numbers, or float;
    lwdsl's map: ``layers`` -> constant names, ``int8`` -> mode per layer).

    Raises:
        LwdslError: torchao is missing, or the model has no PT2E form (:func:`refusal`).
    """
    why = refusal(handle)
    if why:
        raise LwdslError(why)
    module = one_relu_per_call(copy.deepcopy(handle.module).eval())
    shape = tuple(handle.input_shape)
    if not handle.quant:
        with _quiet(), torch.no_grad():
            return _export(module, _layout(torch.zeros(2, *shape))), {"layers": {}, "int8": {}}
    _need_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    calib = _layout(torch.from_numpy(np.ascontiguousarray(handle.qstate.calibration_images(), dtype=np.float32)))
    example = _layout(torch.zeros(2, *shape))  # torch.export.save keeps the example's storage: never the calibration images
    with _quiet():
        try:
            exported = _export(module, example).module()
            quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
            prepared = prepare_pt2e(exported, quantizer)
            with torch.no_grad():
                for i in range(0, len(calib), 32):
                    prepared(calib[i : i + 32])
            converted = convert_pt2e(prepared)
        except LwdslError:
            raise
        except Exception as exc:  # torch.export or the quantizer cannot take this model
            raise LwdslError(f"PT2E cannot quantize this model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
        where = _put_numbers(converted, handle)
        missing = sorted(set(handle.quant) - set(where))
        if missing:
            raise LwdslError(f"PT2E did not quantize layers {', '.join(missing)} (their weights were not found in its graph)")
        _drop_unused(converted)
        with torch.no_grad():
            program = _export(converted, example)
    return program, {"layers": where, "int8": {n: handle.qstate.mode[n] for n in where}}


def save(program: Any, meta: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    with _quiet():
        torch.export.save(program, buf, extra_files={META: json.dumps(meta, sort_keys=True)})
    return buf.getvalue()


def read(data: bytes) -> tuple[Any, dict[str, Any]]:
    """(the exported program in ``data``, lwdsl's map stored beside it)."""
    extra = {META: ""}
    with _quiet():
        program = torch.export.load(io.BytesIO(data), extra_files=extra)
    return program, json.loads(extra[META] or "{}")


def _tensors(program: Any) -> dict[str, torch.Tensor]:
    return {**dict(program.state_dict), **dict(program.constants)}


def codes_in(data: bytes) -> dict[str, np.ndarray]:
    """Layer -> the int8 codes the file holds (read back from the saved program)."""
    program, meta = read(data)
    tensors = _tensors(program)
    return {layer: tensors[names["codes"]].numpy() for layer, names in meta.get("layers", {}).items() if names["codes"] in tensors}


_BUILT: dict[str, Any] = {}
_LOADED: dict[tuple[str, int], Any] = {}


class Pt2eEngine(Engine):
    """``export pt2e``: the PT2E program (module docstring) in ``torch.compile`` (inductor, x86
    int8 kernels through oneDNN); its fp32 is the float model exported and compiled the same way."""

    format, runtime = "pt2e", "torch.compile (inductor)"

    def build(self, handle: TorchModel) -> EngineFile:
        from .int8_engine import _fingerprint

        def make() -> EngineFile:
            data = save(*build_program(handle))
            return EngineFile(data, codes_in(data) if handle.quant else {}, {})

        return last_built(_BUILT, _fingerprint(handle), make)

    def float_file(self, handle: TorchModel) -> bytes:
        module = one_relu_per_call(copy.deepcopy(handle.module).eval())
        with _quiet(), torch.no_grad():
            return save(_export(module, _layout(torch.zeros(2, *handle.input_shape))), {"layers": {}, "int8": {}})

    def compiled(self, data: bytes) -> Callable[[torch.Tensor], torch.Tensor]:
        """The program in ``data`` loaded and compiled as a user would (kept while it is the last one)."""
        key = (hashlib.sha1(data).hexdigest(), len(data))
        if key not in _LOADED:
            if len(_LOADED) >= 2:
                _LOADED.clear()
            if torchao_missing() is None:
                import torchao.quantization.pt2e  # noqa: F401  registers the quantized ops' inductor lowerings
            program, _ = read(data)
            _LOADED[key] = torch.compile(program.module(), dynamic=False)  # one graph per batch size
        return _LOADED[key]

    def load(self, data: bytes, threads: int = 1) -> Callable[[np.ndarray], Callable[[], np.ndarray]]:
        import torch._inductor.config as inductor_config

        model = self.compiled(data)
        threads = max(1, int(threads))

        def bind(x: np.ndarray) -> Callable[[], np.ndarray]:
            xt = _layout(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
            first = [True]

            def run() -> np.ndarray:
                before = torch.get_num_threads()
                if before != threads:
                    torch.set_num_threads(threads)
                try:
                    if first[0]:  # inductor compiles for this batch size here (as a user's first call does)
                        with _quiet(), torch.no_grad(), inductor_config.patch(COMPILE):
                            out = model(xt)
                        first[0] = False
                    else:
                        with torch.no_grad():
                            out = model(xt)
                    return out.numpy()
                finally:
                    if before != threads:
                        torch.set_num_threads(before)

            return run

        return bind

    def inventory(self, data: bytes, handle: TorchModel) -> Inventory:
        """The program's ops before inductor fuses them: each int8 weight's dequantize counts as
        an int8 weighted op (inductor lowers the dequantize-conv/linear group to a oneDNN int8
        kernel); a conv/linear reading a float weight counts as float."""
        program, _ = read(data)
        ops: dict[str, int] = {}
        int8 = flt = 0
        for node in program.graph.nodes:
            if node.op != "call_function":
                continue
            name = str(node.target).split(".")[1] if str(node.target).startswith(("aten.", f"{_Q}.")) else str(node.target)
            if name in ("conv2d", "linear", "conv1d", "convolution", "addmm", "mm"):
                w = node.args[1] if len(node.args) > 1 else None
                if _is(w, "dequantize_per_channel") or _is(w, "dequantize_per_tensor"):
                    name, int8 = f"{name} (int8)", int8 + 1
                else:
                    name, flt = f"{name} (float32)", flt + 1
            ops[name] = ops.get(name, 0) + 1
        return Inventory(dict(sorted(ops.items())), int8, flt)


#: The engine ``export pt2e`` writes and measures.
PT2E = Pt2eEngine()
