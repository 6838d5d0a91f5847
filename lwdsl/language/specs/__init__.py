"""Op specs: one frozen Pydantic model per operation, and the explicit registry of them."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from .base import KINDS, FeaturePair, Glob, NMRatio, Selector, StepSpec, TrainingOptions
from .distill import DistillSpec
from .export import ExportSpec
from .prune import PruneSpec
from .quantize import QuantizeSpec
from .smoothquant import SmoothQuantSpec
from .train import FinetuneSpec, RegularizeSpec

__all__ = [
    "KINDS",
    "OPS",
    "Step",
    "StepSpec",
    "Selector",
    "Glob",
    "NMRatio",
    "FeaturePair",
    "TrainingOptions",
    "PruneSpec",
    "RegularizeSpec",
    "FinetuneSpec",
    "QuantizeSpec",
    "SmoothQuantSpec",
    "DistillSpec",
    "ExportSpec",
]

#: The registry: op name -> spec class. Explicit data; adding an op means adding a line here.
OPS: dict[str, type[StepSpec]] = {
    "prune": PruneSpec,
    "regularize": RegularizeSpec,
    "finetune": FinetuneSpec,
    "smoothquant": SmoothQuantSpec,
    "quantize": QuantizeSpec,
    "distill": DistillSpec,
    "export": ExportSpec,
}

#: Any step, discriminated on ``op``.
Step = Annotated[
    Union[PruneSpec, RegularizeSpec, FinetuneSpec, SmoothQuantSpec, QuantizeSpec, DistillSpec, ExportSpec],
    Field(discriminator="op"),
]
