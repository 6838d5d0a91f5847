"""``quantize``: lower the precision of weights (and activations).

Several ``quantize`` steps with different selectors give mixed precision; ``quantize auto``
allocates bits per layer within ``budget`` (average bits per weight).
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, model_validator

from .base import StepSpec

__all__ = ["QuantizeSpec"]


class QuantizeSpec(StepSpec):
    """Quantize the selected layers.

    Example: ``quantize int8``, ``quantize int8 mode=static calibrate=512``,
    ``quantize int4 weights_only on linear``, ``quantize auto budget=6``.
    """

    positional: ClassVar[tuple[str, ...]] = ("dtype",)
    default_kinds: ClassVar[tuple[str, ...]] = ("conv", "linear")
    summary: ClassVar[str] = "lower precision: int8/int4/int2/binary/ternary/fp16/bf16, dynamic/static/QAT"
    FORMS: ClassVar[tuple[str, ...]] = tuple(
        f"{d}/{m}" for d in ("int8", "int4", "int2", "binary", "ternary") for m in ("dynamic", "static", "qat", "weights_only")
    ) + ("fp16", "bf16", "auto")

    op: Literal["quantize"] = "quantize"
    dtype: Literal["int8", "int4", "int2", "binary", "ternary", "fp16", "bf16", "auto"] = Field(
        description="target precision; auto picks per layer within budget"
    )
    mode: Literal["dynamic", "static", "qat"] = Field(
        default="dynamic", description="dynamic: activations quantized at run time; static: calibrated; qat: trained"
    )
    weights_only: bool = Field(default=False, description="quantize weights, keep float activations")
    granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    calibrate: int = Field(default=256, ge=1, le=1_000_000, description="static: calibration samples")
    observer: Literal["minmax", "percentile", "mse"] = Field(default="minmax", description="static/qat: range estimate")
    epochs: int = Field(default=1, ge=1, le=10_000, description="qat: training epochs")
    budget: Optional[float] = Field(default=None, gt=0, le=32, description="auto: average bits per weight")

    @model_validator(mode="after")
    def _check(self) -> "QuantizeSpec":
        if (self.dtype == "auto") != (self.budget is not None):
            raise ValueError("quantize auto needs budget=BITS, and budget= goes only with auto")
        if self.dtype in ("fp16", "bf16") and self.mode != "dynamic":
            raise ValueError(f"{self.dtype} is a cast: mode={self.mode} does not apply")
        if "epochs" in self.model_fields_set and self.mode != "qat":
            raise ValueError("epochs= applies only with mode=qat")
        return self

    def forms(self) -> tuple[str, ...]:
        if self.dtype in ("fp16", "bf16", "auto"):
            return (self.dtype,)
        return (f"{self.dtype}/{'weights_only' if self.weights_only else self.mode}",)
