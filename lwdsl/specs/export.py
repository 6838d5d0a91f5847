"""``export``: write a deployable artifact of the current model."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field

from .base import StepSpec

__all__ = ["ExportSpec"]

FORMAT_BACKENDS = {
    "onnx": ("torch",),
    "torch": ("torch",),
    "tflite": ("tensorflow",),
    "saved_model": ("tensorflow",),
    "keras": ("tensorflow",),
}


class ExportSpec(StepSpec):
    """Write the model as FORMAT to PATH (default: ``model.<ext>`` in the run directory).

    Example: ``export onnx``, ``export tflite "lenet5-int8.tflite"``.
    """

    positional: ClassVar[tuple[str, ...]] = ("format", "path")
    default_kinds: ClassVar[tuple[str, ...]] = ("all",)
    summary: ClassVar[str] = "write a deployable artifact (onnx, torch, tflite, saved_model, keras)"

    op: Literal["export"] = "export"
    format: Literal["onnx", "torch", "tflite", "saved_model", "keras"] = Field(description="artifact format")
    path: Optional[str] = Field(default=None, min_length=1, description="output path, relative to the run directory")
