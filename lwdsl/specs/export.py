"""``export``: write a deployable artifact of the current model."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, model_validator

from .base import StepSpec

__all__ = ["ExportSpec"]

class ExportSpec(StepSpec):
    """Write the model as FORMAT to PATH (default: ``model.<ext>`` in the run directory).

    Example: ``export onnx``, ``export tflite "lenet5-int8.tflite"``.
    """

    positional: ClassVar[tuple[str, ...]] = ("format", "path")
    default_kinds: ClassVar[tuple[str, ...]] = ("all",)
    summary: ClassVar[str] = "write a deployable artifact (onnx, torch, tflite, saved_model, keras)"
    FORMS: ClassVar[tuple[str, ...]] = ("onnx", "torch", "tflite", "saved_model", "keras")

    op: Literal["export"] = "export"
    format: Literal["onnx", "torch", "tflite", "saved_model", "keras"] = Field(description="artifact format")
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
        """PATH stays inside the run folder and off its own files (:mod:`lwdsl.outdir`)."""
        from ..outdir import export_path_problem

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
    "tflite": "model.tflite",
    "saved_model": "model.savedmodel",
    "keras": "model-export.keras",
}
