"""``export``: write a deployable artifact of the current model."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import ClassVar, Literal, Optional

from pydantic import Field, model_validator

from ...limits import MAX_NAME_BYTES, MAX_PATH_BYTES
from .base import StepSpec

#: The files lwdsl itself writes at the top of every run folder (exports come on top).
RUN_FILES = (
    "recipe.lw",
    "model.lwz",
    "model.pt",
    "model.keras",
    "model.h5",
    "report.json",
    "report.md",
    "lwdsl.lock.json",
    "accuracy_size.png",
    "sparsity.png",
)

_RESERVED = {name.casefold() for name in RUN_FILES}


def export_path_problem(path: str, format: str = "") -> Optional[str]:
    """Why ``path`` (an ``export`` PATH, relative to the run folder) is not allowed, or None.

    A path stays inside the run folder (relative, no ``..``, no ``~``, ``/`` between folders)
    and never names one of the run folder's own files (:data:`RUN_FILES`), which the run
    writes after its exports. A keras export gets ``.keras`` added, so that name counts.

    Example:
        >>> export_path_problem("../x.pt")
        'PATH "../x.pt" leaves the run folder (`..`): write a path inside it, e.g. "x.pt"'
        >>> export_path_problem("exports/lenet5.onnx") is None
        True
    """
    shown = json.dumps(path)
    name = PurePosixPath(path.replace("\\", "/")).name or "model.bin"
    inside = f'write a path inside it, e.g. "{name}"'
    if any(ord(c) < 32 or c == "\x7f" for c in path):
        return f"PATH {shown} contains a control character"
    if len(path.encode()) > MAX_PATH_BYTES:
        return f"PATH is {len(path.encode())} bytes long (at most {MAX_PATH_BYTES})"
    if "\\" in path:
        return f"PATH {shown} contains `\\`: separate folders with `/`"
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return f"PATH {shown} is absolute: exports go inside the run folder; {inside}"
    if path.startswith("~"):
        return f"PATH {shown} starts with `~`, which is not expanded: {inside}"
    parts = path.split("/")
    if ".." in parts:
        return f"PATH {shown} leaves the run folder (`..`): {inside}"
    if path.endswith("/"):
        return f"PATH {shown} ends with `/`: name the file, e.g. \"{path}model.bin\""
    if any(part in ("", ".") for part in parts):
        return f"PATH {shown} has an empty or `.` folder in it: write it as \"{'/'.join(p for p in parts if p not in ('', '.'))}\""
    long = next((part for part in parts if len(part.encode()) > MAX_NAME_BYTES - 20), None)
    if long is not None:
        return f"PATH {shown}: the name {long[:20]}... is too long (at most {MAX_NAME_BYTES - 20} bytes)"
    tops = {parts[0]}
    if format == "keras" and len(parts) == 1:
        tops.add(str(PurePosixPath(parts[0]).with_suffix(".keras")) if PurePosixPath(parts[0]).suffix else parts[0] + ".keras")
    clash = next((top for top in sorted(tops) if top.casefold() in _RESERVED), None)
    if clash is not None:
        added = " (a keras export gets .keras added)" if clash not in parts else ""
        return (
            f"PATH {shown} would overwrite the run folder's own {clash}{added} "
            f"(the run writes {', '.join(RUN_FILES[:3])}, report.json, ... itself): choose another name, e.g. \"export-{name}\""
        )
    return None

__all__ = ["ExportSpec"]

class ExportSpec(StepSpec):
    """Write the model as FORMAT to PATH (default: ``model.<ext>`` in the run directory).

    Example: ``export onnx``, ``export tflite "lenet5-int8.tflite"``, ``export pt2e`` (torch: a
    ``torch.export`` program for ``torch.compile``, PT2E x86 int8 after ``quantize int8``), ``export hf``
    (a Hugging Face folder of a transformers model, torch).
    """

    positional: ClassVar[tuple[str, ...]] = ("format", "path")
    default_kinds: ClassVar[tuple[str, ...]] = ("all",)
    summary: ClassVar[str] = "write a deployable file (onnx, torch, pt2e, tflite, saved_model, keras, hf)"
    FORMS: ClassVar[tuple[str, ...]] = ("onnx", "torch", "pt2e", "tflite", "saved_model", "keras", "hf")

    op: Literal["export"] = "export"
    format: Literal["onnx", "torch", "pt2e", "tflite", "saved_model", "keras", "hf"] = Field(
        description="artifact format (hf: a Hugging Face folder: config.json, model.safetensors (quantized layers in compressed-tensors' pack-quantized layout), tokenizer)")
    path: Optional[str] = Field(default=None, min_length=1, description="output path, relative to the run directory")
    io: Literal["float32", "int8"] = Field(
        default="float32", description="tflite: dtype of the model's input and output (int8 after quantize int8 static or qat)"
    )

    @model_validator(mode="after")
    def _io_for_tflite(self) -> "ExportSpec":
        if self.io != "float32" and self.format != "tflite":
            raise ValueError(f"io={self.io} applies only to export tflite (an {self.format} file takes float32 in and out)")
        return self

    @model_validator(mode="after")
    def _path_inside_run_folder(self) -> "ExportSpec":
        """PATH stays inside the run folder and off its own files (the run folder: :data:`RUN_FILES`)."""
        problem = export_path_problem(self.path, self.format) if self.path is not None else None
        if problem:
            raise ValueError(problem)
        return self

    def forms(self) -> tuple[str, ...]:
        return (self.format,)

    def artifact_name(self) -> str:
        """The file or folder the step writes, relative to the run folder."""
        return self.path or _DEFAULT_NAMES[self.format]


#: Default artifact names: never one of the run folder's own files (model.pt, model.keras, ...).
_DEFAULT_NAMES = {
    "onnx": "model.onnx",
    "torch": "model-export.pt",
    "pt2e": "model.pt2",
    "tflite": "model.tflite",
    "saved_model": "model.savedmodel",
    "keras": "model-export.keras",
    "hf": "model-hf",
}
