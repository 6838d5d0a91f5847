"""The registry of backends: built-in ones by name (explicit data), third-party ones from the
``lwdsl.backends`` entry-point group; each imported only when asked for, with an install hint
when its framework is missing. Support tables are read without importing any framework."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Optional

from ..errors import UsageError
from .support import SupportTable

if TYPE_CHECKING:
    from ..language.specs import StepSpec
    from .protocol import Backend

__all__ = ["BACKENDS", "ALIASES", "get_backend", "backend_names", "support_table", "unsupported"]


def support_table(name: str) -> Optional[SupportTable]:
    """The static support table of a built-in backend (None for plugins or when absent)."""
    key = ALIASES.get(name, name)
    if key not in BACKENDS:
        return None
    try:
        module = importlib.import_module(BACKENDS[key][0] + ".support")
    except ImportError:
        return None
    return getattr(module, "SUPPORT", None)


#: Built-in backends: name -> (module, class, pip extra). Imported only when asked for.
BACKENDS: dict[str, tuple[str, str, str]] = {
    "torch": ("lwdsl.backends.torch_backend", "TorchBackend", "torch"),
    "tensorflow": ("lwdsl.backends.tf_backend", "KerasBackend", "tensorflow"),
}
ALIASES = {"pytorch": "torch", "tf": "tensorflow", "keras": "tensorflow"}


def backend_names() -> list[str]:
    names = list(BACKENDS)
    try:
        from importlib.metadata import entry_points

        names += [ep.name for ep in entry_points(group="lwdsl.backends") if ep.name not in names]
    except Exception:  # pragma: no cover - metadata problems must not break the CLI
        pass
    return names


_instances: dict[str, "Backend"] = {}


def get_backend(name: str) -> "Backend":
    """The backend called ``name`` (imported now), or a clear error with an install hint."""
    from ..errors import did_you_mean

    key = ALIASES.get(name, name)
    if key in _instances:
        return _instances[key]
    if key in BACKENDS:
        module_name, cls_name, extra = BACKENDS[key]
    else:
        from importlib.metadata import entry_points

        eps = {ep.name: ep for ep in entry_points(group="lwdsl.backends")}
        if key not in eps:
            near = did_you_mean(name, backend_names() + list(ALIASES))
            raise UsageError(
                f"unknown backend '{name}' (known: {', '.join(backend_names())})",
                hint=f"did you mean '{near}'?" if near else None,
            )
        module_name, _, cls_name = eps[key].value.partition(":")
        extra = key
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"the {key} backend needs a framework that is not installed ({exc.name or exc})",
            hint=f"pip install 'lwdsl[{extra}]'",
        ) from exc
    backend = getattr(module, cls_name)()
    _instances[key] = backend
    return backend


def unsupported(table: SupportTable, step: "StepSpec") -> Optional[str]:
    """Why ``table``'s backend cannot run ``step`` (None when it can), with the other built-in
    backends' tables consulted for whether the form is missing only there (``yet``)."""
    others = [t for t in (support_table(name) for name in BACKENDS if name != table.backend) if t is not None]
    return table.unsupported(step, others)
