"""The explicit registry: op name -> handler, and why an op cannot run here (yet).

A handler takes (handle, spec, layer names, context) and returns the handle (the same object,
changed in place, also after filters are physically removed).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from lwdsl.backend import StepContext
from lwdsl.specs import FORMAT_BACKENDS, FinetuneSpec, RegularizeSpec, StepSpec

from .handle import TorchModel, weight_of
from .prune import prune
from .train import fit

__all__ = ["HANDLERS", "unsupported"]

Handler = Callable[[TorchModel, StepSpec, Sequence[str], StepContext], TorchModel]


def finetune(handle: TorchModel, spec: FinetuneSpec, layers: Sequence[str], ctx: StepContext) -> TorchModel:
    """Cross-entropy training of the whole model; masks stay fixed."""
    fit(handle, spec, ctx, op="finetune", schedule=spec.schedule)
    return handle


def regularize(handle: TorchModel, spec: RegularizeSpec, layers: Sequence[str], ctx: StepContext) -> TorchModel:
    """Training with ``l1 * sum(|w|)`` over the selected layers' weights added to the loss."""
    weights = [weight_of(handle.module, name) for name in layers]

    def penalty():
        return spec.l1 * sum(w.abs().sum() for w in weights)

    fit(handle, spec, ctx, op="regularize", penalty=penalty)
    return handle


HANDLERS: dict[str, Handler] = {
    "prune": prune,
    "finetune": finetune,
    "regularize": regularize,
}

_NOT_YET = {
    "quantize": "quantize is not implemented on the torch backend yet",
    "distill": "distill is not implemented on the torch backend yet",
    "export": "export is not implemented on the torch backend yet",
}


def unsupported(step: StepSpec) -> Optional[str]:
    """None when the torch backend runs ``step``, else the reason."""
    op = getattr(step, "op", type(step).__name__)
    if op in HANDLERS:
        return None
    if op == "export" and "torch" not in FORMAT_BACKENDS.get(step.format, ()):
        owners = " or ".join(FORMAT_BACKENDS.get(step.format, ()))
        return f"export {step.format} is written by the {owners} backend, not torch (torch writes: torch, onnx)"
    return _NOT_YET.get(op, f"{op} has no handler on the torch backend")
