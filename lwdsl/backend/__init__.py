"""The backend protocol, the context a step runs in, support tables and the backend registry.

- :mod:`.protocol`: :class:`Backend` (the ABC, with the one concrete ``apply``) and the records
  it returns (:class:`LayerInfo`, :class:`LayerStats`, :class:`ModelStats`);
- :mod:`.context`: :class:`StepContext`, what a step may use besides its spec;
- :mod:`.support`: :class:`SupportTable`, what a backend runs, per op and per form, as data;
- :mod:`.registry`: the built-in backends and the ``lwdsl.backends`` entry points, imported lazily.

``Dataset`` lives on the data side (:mod:`lwdsl.data.dataset`); it is re-exported here for old imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..data.dataset import Dataset
    from .context import ProgressFactory, StepContext
    from .protocol import Backend, Handler, LayerInfo, LayerStats, ModelStats
    from .registry import ALIASES, BACKENDS, backend_names, get_backend, support_table
    from .support import SupportTable

#: Each public name -> the module it lives in, imported on first access (PEP 562): reading a
#: support table (``lwdsl check``) must not import numpy through ``Dataset``.
_LAZY = {
    "Dataset": "..data.dataset",
    **dict.fromkeys(("ProgressFactory", "StepContext"), ".context"),
    **dict.fromkeys(("Backend", "Handler", "LayerInfo", "LayerStats", "ModelStats"), ".protocol"),
    **dict.fromkeys(("ALIASES", "BACKENDS", "backend_names", "get_backend", "support_table"), ".registry"),
    "SupportTable": ".support",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # once: later lookups are plain
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ALIASES",
    "BACKENDS",
    "Backend",
    "Dataset",
    "Handler",
    "LayerInfo",
    "LayerStats",
    "ModelStats",
    "ProgressFactory",
    "StepContext",
    "SupportTable",
    "backend_names",
    "get_backend",
    "support_table",
]
