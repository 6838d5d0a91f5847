"""The torch backend's handlers: op -> handler (a table and nothing else; see
:class:`lwdsl.backend.Backend`). Its keys are exactly the ops of ``support.py``."""

from __future__ import annotations

from lwdsl.backend import Handler

from .distill import distill
from .export import export
from .prune import prune
from .quantize import quantize, smoothquant
from .train import finetune, regularize

__all__ = ["HANDLERS"]

HANDLERS: dict[str, Handler] = {
    "prune": prune,
    "finetune": finetune,
    "regularize": regularize,
    "export": export,
    "distill": distill,
    "quantize": quantize,
    "smoothquant": smoothquant,
}
