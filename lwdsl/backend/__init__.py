"""The backend protocol, the context a step runs in, support tables and the backend registry.

- :mod:`.protocol`: :class:`Backend` (the ABC, with the one concrete ``apply``) and the records
  it returns (:class:`LayerInfo`, :class:`LayerStats`, :class:`ModelStats`);
- :mod:`.context`: :class:`StepContext`, what a step may use besides its spec;
- :mod:`.support`: :class:`SupportTable`, what a backend runs, per op and per form, as data;
- :mod:`.registry`: the built-in backends and the ``lwdsl.backends`` entry points, imported lazily.

``Dataset`` lives on the data side (:mod:`lwdsl.data.dataset`); it is re-exported here for old imports.
"""

from __future__ import annotations

from ..data.dataset import Dataset
from .context import ProgressFactory, StepContext
from .protocol import Backend, Handler, LayerInfo, LayerStats, ModelStats
from .registry import ALIASES, BACKENDS, backend_names, get_backend, support_table
from .support import SupportTable

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
