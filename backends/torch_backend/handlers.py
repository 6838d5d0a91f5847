"""The explicit registry: op name -> handler, and why an op cannot run here (yet).

A handler takes (handle, spec, layer names, context) and returns the handle (the same object,
changed in place, also after filters are physically removed).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from pathlib import Path

from lwdsl.backend import StepContext
from lwdsl.specs import ExportSpec, FinetuneSpec, RegularizeSpec, StepSpec

from .handle import TorchModel, weight_of
from .io import save_native
from .prune import prune
from .support import SUPPORT
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


def export(handle: TorchModel, spec: ExportSpec, layers: Sequence[str], ctx: StepContext) -> TorchModel:
    """``export torch [PATH]``: the plain state dict with masks applied (``weights_only``
    loadable), into the run folder (or the current directory without one)."""
    root = Path(ctx.run_dir) if ctx.run_dir is not None else Path.cwd()
    path = root / (spec.path or "model-export.pt")
    handle.apply_masks()
    save_native(handle, path)
    return handle


HANDLERS: dict[str, Handler] = {
    "prune": prune,
    "finetune": finetune,
    "regularize": regularize,
    "export": export,
}


def unsupported(step: StepSpec) -> Optional[str]:
    """None when the torch backend runs ``step``, else the reason (from its support table)."""
    return SUPPORT.unsupported(step)
