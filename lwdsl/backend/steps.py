"""Handlers that are the same on every backend once given the backend's own parts.

``finetune`` and ``regularize`` only call the backend's ``fit`` (:meth:`Backend.fit`): they are
the same handlers on every backend; ``export`` only resolves the path inside the run folder and
calls the format's writer (each backend builds it from its ``EXPORTERS``, in its ``export.py``).
:func:`handler_table` is a backend's op -> handler table, read from its modules by one convention.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .context import StepContext

__all__ = ["HANDLER_MODULES", "handler_table", "finetune", "regularize", "export_handler", "float_kernels_warning"]

#: op -> the module of a backend package whose attribute of the op's name is its handler
#: (``finetune`` and ``regularize``: this module's, the same on every backend).
HANDLER_MODULES = {"prune": "prune", "export": "export", "distill": "distill", "quantize": "quantize", "smoothquant": "quantize"}


def finetune(handle: Any, spec: Any, layers: Sequence[str], ctx: StepContext) -> Any:
    """The ``finetune`` handler: cross-entropy training of the whole model; masks stay fixed."""
    ctx.backend.fit(handle, spec, ctx, label="finetune", schedule=spec.schedule, jitter=spec.jitter)
    return handle


def regularize(handle: Any, spec: Any, layers: Sequence[str], ctx: StepContext) -> Any:
    """The ``regularize`` handler: ``l1 * sum(|w|)`` over the selected weights added to the loss."""
    ctx.backend.fit(handle, spec, ctx, label=f"regularize l1={spec.l1:g}", l1=spec.l1, l1_layers=layers)
    return handle


def handler_table(package: str, ops: Sequence[str]) -> dict[str, Callable[..., Any]]:
    """op -> handler for a backend ``package`` running ``ops`` (its support table's): each
    ``<package>.<HANDLER_MODULES[op]>.<op>``, imported now; ``finetune``/``regularize`` this module's."""
    own = {"finetune": finetune, "regularize": regularize}
    return {op: own[op] if op in own else getattr(importlib.import_module(f"{package}.{HANDLER_MODULES[op]}"), op) for op in ops}


Writer = Callable[[Any, Path, StepContext, Any], None]  # (handle, path, ctx, the ExportSpec)


def export_handler(exporters: Mapping[str, Writer]) -> Callable[..., Any]:
    """The ``export`` handler over a backend's writers (format -> writer, each atomic)."""

    def export(handle: Any, spec: Any, layers: Sequence[str], ctx: StepContext) -> Any:
        """Write the artifact inside the run folder (``ExportSpec.artifact_name``)."""
        path = ctx.output_path(spec.artifact_name())
        path.parent.mkdir(parents=True, exist_ok=True)
        exporters[spec.format](handle, path, ctx, spec)
        # what the writer measured of the file in its own runtime (size, ops, accuracy, latency)
        entry = {"format": spec.format, "path": path.name, **ctx.notes.pop("artifact", {})}
        ctx.notes.setdefault("artifacts", []).append(entry)
        return handle

    return export


def float_kernels_warning(fmt: str, quant: Sequence[str], casts: Mapping[str, str], smaller: str) -> str | None:
    """What an export that holds float32 weights only says of the model's quantized layers
    (``quant``: float32 weights holding ``codes * scale``) and cast layers (``casts``: layer ->
    fp16/bf16, float32 weights holding the half values); ``smaller``: the formats that do store
    them smaller. None when there is nothing to say."""
    what = [f"{len(quant)} quantized layer(s) ({', '.join(sorted(quant))}) as float32 weights holding codes * scale"] if quant else []
    if casts:
        held = ", ".join(f"{n}: {d}" for n, d in sorted(casts.items()))
        what.append(f"{len(casts)} cast layer(s) ({held}) as float32 weights holding the half values")
    if not what:
        return None
    return (f"export {fmt}: the file stores {' and '.join(what)}: the same model, not a smaller file; the packed "
            f"weights are in the run folder's model.lwz, and {smaller}")
