"""``export``: write a deployable artifact of the current model into the run folder.

The handler resolves the path (:meth:`lwdsl.specs.ExportSpec.artifact_name`, inside the run
folder) and calls the format's writer from :data:`EXPORTERS`; every writer is atomic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from lwdsl.backend import StepContext
from lwdsl.backend.steps import export_handler
from lwdsl.specs import ExportSpec
from lwdsl.weights import atomic_path

from .handle import TorchModel
from .io import save_native

__all__ = ["export", "write_torch", "write_onnx", "EXPORTERS"]


def write_torch(handle: TorchModel, path: Path, ctx: StepContext, spec: ExportSpec) -> None:
    """``export torch``: the plain state dict with masks applied (``weights_only`` loadable)."""
    handle.apply_masks()
    save_native(handle, path)


def write_onnx(handle: TorchModel, path: Path, ctx: StepContext, spec: ExportSpec) -> None:
    """``export onnx``: float32 ONNX for a float model; for a quantized one, the int8 engine's
    QDQ model (our int8 codes and scales as initializers, int8 kernels in ONNX Runtime; see
    int8_engine.py). The notes get how many of its weight codes equal the canonical ones, and
    ``artifact``: size, the ops ONNX Runtime runs, accuracy and latency there."""
    from .int8_engine import artifact_report, build_onnx, describe

    handle.apply_masks()
    model, info = build_onnx(handle)
    data = model.SerializeToString()
    summary = describe(data, handle, ctx.data.test_x, ctx.data.test_y)
    if handle.quant:
        ctx.notes["onnx"] = artifact_report(handle, model, info)
        summary.update(codes_equal=ctx.notes["onnx"]["codes_equal"], codes_total=ctx.notes["onnx"]["codes_total"],
                       float_layers=list(info["float"]))
        if info["float"]:
            ctx.warn(f"export onnx: layers {', '.join(info['float'])} stay float32 in the ONNX file")
        if summary["float_ops"] and any(m != "weights_only" for m in handle.quant_mode.values()):
            ctx.warn(f"export onnx: ONNX Runtime runs {summary['float_ops']} weighted op(s) of the int8 file in float32 "
                     f"(ops: {', '.join(f'{k} x{v}' for k, v in summary['ops'].items())})")
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_bytes(data)
    ctx.notes["artifact"] = summary  # joins the step's ``artifacts`` entry (lwdsl.backend.steps)


#: format -> writer; a contract test checks these are exactly the support table's export forms.
EXPORTERS: dict[str, Callable[[TorchModel, Path, StepContext, ExportSpec], None]] = {
    "torch": write_torch,
    "onnx": write_onnx,
}

#: The ``export`` handler (path resolution written once, lwdsl.backend.steps).
export = export_handler(EXPORTERS)
