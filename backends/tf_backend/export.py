"""``export``: write a deployable artifact of the current model into the run folder.

The handler resolves the path (:meth:`lwdsl.language.specs.ExportSpec.artifact_name`, inside the run
folder) and calls the format's writer from :data:`EXPORTERS`; every writer is atomic and works
on a copy with the masks applied (float32). ``keras`` and ``saved_model`` hold float32 kernels
only: after ``quantize`` (codes) or ``quantize fp16|bf16`` (casts) they keep each layer's
quantized or cast values in float32, which is said with ``ctx.warn`` (the packed file is the run
folder's ``model.lwz``; ``export tflite`` writes integer or float16 weights).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from lwdsl.backend import StepContext
from lwdsl.backend.engines import export_file
from lwdsl.backend.steps import export_handler, float_kernels_warning
from lwdsl.language.specs import ExportSpec

from ._tf import quiet_stdout
from .handle import KerasHandle
from .hf_folder import write_hf
from .io import save_keras

__all__ = ["export", "EXPORTERS"]


def _float_kernels(handle: KerasHandle, ctx: StepContext, fmt: str) -> None:
    """Say which quantized or cast layers a float32-only format stores as float32 kernels."""
    said = float_kernels_warning(fmt, list(handle.quant), handle.qstate.casts,
                                 "`export tflite` writes integer (int8) or float16 (fp16) weights")
    if said:
        ctx.warn(said)


def write_keras(handle: KerasHandle, path: Path, ctx: StepContext, spec: ExportSpec) -> None:
    _float_kernels(handle, ctx, "keras")
    save_keras(handle.copy().finalize().model, path if path.suffix == ".keras" else path.with_suffix(".keras"))


def write_saved_model(handle: KerasHandle, path: Path, ctx: StepContext, spec: ExportSpec) -> None:
    _float_kernels(handle, ctx, "saved_model")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with quiet_stdout():  # Keras 3 prints the endpoints it wrote
            handle.copy().finalize().model.export(str(tmp / "out"))
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp / "out", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_tflite(handle: KerasHandle, path: Path, ctx: StepContext, spec: ExportSpec) -> None:
    """float32, full int8 or dynamic-range (after ``quantize``), checked in LiteRT: see
    :mod:`.tflite_engine`; what it finds goes into ``ctx.notes["tflite"][file name]``, and the
    core's :func:`~lwdsl.backend.engines.describe_export` into the step's ``artifacts`` entry."""
    from .tflite_engine import LITERT, artifact, report

    data, kind = artifact(handle, spec.io)
    built = LITERT.file_of(data, kind, handle)
    notes = report(data, kind, handle, ctx)
    summary = export_file(LITERT, built, path, handle, ctx)
    notes["accuracy"] = summary["accuracy"]
    ctx.notes.setdefault("tflite", {})[path.name] = notes
    summary["mode"] = kind
    if "half_agreement" in notes:  # fp16 weights: their 16 bits against the core's
        summary.update(weights_dtype="float16", codes_equal=notes["half_agreement"]["equal"],
                       codes_total=notes["half_agreement"]["total"])
    ctx.notes["artifact"] = summary  # joins the step's ``artifacts`` entry


#: format -> writer; a contract test checks these are exactly the support table's export forms.
EXPORTERS: dict[str, Callable[[KerasHandle, Path, StepContext, ExportSpec], None]] = {
    "keras": write_keras,
    "saved_model": write_saved_model,
    "tflite": write_tflite,
    "hf": write_hf,  # a Hugging Face folder (hf_folder.py over the core's lwdsl.backend.hf_folder)
}

#: The ``export`` handler (path resolution written once, lwdsl.backend.steps).
export = export_handler(EXPORTERS)
