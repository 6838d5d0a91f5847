"""``export``: write a deployable artifact of the current model into the run folder.

The handler resolves the path (:meth:`lwdsl.language.specs.ExportSpec.artifact_name`, inside the run
folder) and calls the format's writer from :data:`EXPORTERS`; every writer is atomic.

After ``quantize fp16|bf16`` both files hold the cast weights in 16 bits: ``export torch``
stores them as ``torch.float16``/``torch.bfloat16`` tensors (:func:`.io.save_native`), and
``export onnx`` (the core's :func:`lwdsl.backend.onnx_int8.export_onnx`) as FLOAT16/BFLOAT16 initializers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lwdsl.backend import StepContext
from lwdsl.backend.engines import BATCHES, EngineFile, describe_export, latencies
from lwdsl.backend.timing import fixed_input
from lwdsl.backend.weights import atomic_path
from lwdsl.errors import LwdslError
from lwdsl.backend.onnx_int8 import export_onnx
from lwdsl.backend.steps import export_handler, float_kernels_warning
from lwdsl.semantics.casts import half_bits
from lwdsl.language.specs import ExportSpec

from .handle import TorchModel, weight_of
from .hf_export import write_hf
from .io import load_into, save_native

__all__ = ["export", "write_torch", "write_onnx", "write_pt2e", "EXPORTERS"]


def write_torch(handle: TorchModel, path: Path, ctx: StepContext, spec: ExportSpec) -> None:
    """``export torch``: the plain state dict with masks applied (``weights_only`` loadable);
    cast layers' weights in ``torch.float16``/``torch.bfloat16``. A file holding half weights is
    measured as it is used (``ctx.notes["artifact"]``): loaded back with ``weights_only=True``
    into a copy of the model (float32 compute, weights widened exactly), its accuracy on the
    test set and latency (1 thread) beside its size."""
    handle.apply_masks()
    said = float_kernels_warning("torch", list(handle.quant), {}, "`export onnx` writes int8 weights (int8 forms) or half ones (casts)")
    if said:  # cast layers are stored in half here; codes are not (a state dict of float weights)
        ctx.warn(said)
    save_native(handle, path)
    halves = handle.qstate.casts
    if halves:
        ctx.notes["artifact"] = _torch_summary(handle, Path(path), ctx, halves)


def _torch_summary(handle: TorchModel, path: Path, ctx: StepContext, halves: dict[str, str]) -> dict[str, Any]:
    import copy

    from .latency import latency_ms
    from .train import evaluate

    state = torch.load(path, map_location="cpu", weights_only=True)
    back = TorchModel(copy.deepcopy(handle.module), handle.ref, handle.input_shape, handle.num_classes)
    load_into(back, state, str(path.name))
    dtypes = sorted({str(state[f"{n}.weight"].dtype).replace("torch.", "") for n in halves if f"{n}.weight" in state})
    equal = sum(int(np.array_equal(half_bits(weight_of(back.module, n).detach().numpy(), d),
                                   half_bits(weight_of(handle.module, n).detach().numpy(), d))) for n, d in halves.items())
    out: dict[str, Any] = {
        "format": "torch",
        "runtime": "torch (float32 compute)",
        "size_bytes": path.stat().st_size,
        "weights_dtype": ", ".join(dtypes),
        "ops": {},
        "half_layers_equal": equal,
        "half_layers": len(halves),
    }
    out["accuracy"], _ = evaluate(back, ctx)
    for batch in BATCHES:
        out[f"latency_ms_b{batch}"] = latency_ms(back, batch, handle.input_shape, 1)
    return out


def write_onnx(handle: TorchModel, path: Path, ctx: StepContext, spec: ExportSpec) -> None:
    """``export onnx``: the core's :func:`~lwdsl.backend.onnx_int8.export_onnx` over the int8
    engine (int8_engine.py), the masks applied."""
    from .int8_engine import ONNX

    handle.apply_masks()
    ctx.notes["artifact"] = export_onnx(ONNX, handle, path, ctx)  # joins the step's ``artifacts`` entry


def write_pt2e(handle: TorchModel, path: Path, ctx: StepContext, spec: ExportSpec) -> None:
    """``export pt2e``: the model as a ``torch.export`` program (``.pt2``) for ``torch.compile``;
    after ``quantize int8`` (static or qat, every conv and linear layer), PT2E's x86 int8 form
    holding lwdsl's codes, scales and input ranges (pt2e_engine.py). The file is written only
    once it loads back and inductor compiles it; it is then read back from disk and measured as
    a user runs it (``torch.export.load`` + ``torch.compile`` with freezing, 1 thread): the
    core's :func:`~lwdsl.backend.engines.describe_export` (size, ops, accuracy, latency, codes
    equal to lwdsl's, inductor's fp32 of the same model beside it), and for an int8 file the
    int8 ONNX file's latency beside it (``onnx_latency_ms_b1``/``_b32``, ``faster_b1``/``_b32``:
    which engine wins on this model and CPU).

    Where there is no such file (torchao missing or too old, a CPU without VNNI/AMX, a model PT2E
    cannot quantize or inductor cannot compile), nothing is written: a warning and the step's
    ``artifacts`` entry (``written: false``, ``fallback``: why) say so, and the int8 ONNX file
    stays the engine; the run goes on."""
    from .pt2e_engine import PT2E, cpu_refusal

    handle.apply_masks()
    why = cpu_refusal() if handle.quant else None
    built = None
    if why is None:
        try:
            built = PT2E.build(handle)
            bind = PT2E.load(built.data, 1)
            for b in BATCHES:  # inductor compiles it at the batch sizes it is timed at, or says why not
                bind(fixed_input(b, handle.input_shape))()
        except LwdslError as exc:
            why = exc.message
        except Exception as exc:  # inductor's lowering failed on this model
            why = _compile_failure(exc)
    summary = None
    if why is None:
        with atomic_path(Path(path)) as tmp:  # a disk error is the run's, not a fallback
            Path(tmp).write_bytes(built.data)
        try:  # what is measured is the file on disk, as a user loads it
            summary = describe_export(PT2E, EngineFile(Path(path).read_bytes(), built.codes, {}), handle, ctx)
        except Exception as exc:  # a batch size of the accuracy pass inductor cannot compile: no file is better than a broken one
            Path(path).unlink(missing_ok=True)
            why = _compile_failure(exc)
    if why is not None:
        engine = "the int8 ONNX file (`export onnx`; a quantize step writes model-int8-step<N>.onnx)" if handle.quant \
            else "`export onnx` or `export torch`"
        ctx.warn(f"export pt2e: no .pt2 file written: {why}; {engine} is the engine to deploy")
        ctx.notes["artifact"] = {"written": False, "fallback": why, "runtime": PT2E.runtime}
        return
    if handle.quant:
        from .int8_engine import ONNX

        onnx = latencies(ONNX.load(ONNX.build(handle).data, 1), tuple(handle.input_shape), prefix="onnx_")
        summary.update(onnx)
        for b in BATCHES:
            summary[f"faster_b{b}"] = "pt2e" if summary[f"latency_ms_b{b}"] < onnx[f"onnx_latency_ms_b{b}"] else "onnx"
    ctx.notes["artifact"] = summary


def _compile_failure(exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    said = next((line for line in lines if "Error" in line or "expected" in line), lines[0] if lines else "")
    return f"inductor cannot compile it ({type(exc).__name__}: {' '.join(said.split())[:200]})"


#: format -> writer; a contract test checks these are exactly the support table's export forms.
EXPORTERS: dict[str, Callable[[TorchModel, Path, StepContext, ExportSpec], None]] = {
    "torch": write_torch,
    "onnx": write_onnx,
    "hf": write_hf,  # a Hugging Face folder (hf_export.py, kept apart from the int8 engines)
    "pt2e": write_pt2e,
}

#: The ``export`` handler (path resolution written once, lwdsl.backend.steps).
export = export_handler(EXPORTERS)
