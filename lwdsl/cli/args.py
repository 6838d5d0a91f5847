"""Command-line arguments every command reads the same way (``--set``, ``--backend``), shared by
:mod:`lwdsl.cli.app` and :mod:`lwdsl.cli.run_cmd` so neither imports the other's internals."""

from __future__ import annotations

from typing import Optional

from ..errors import UsageError

__all__ = ["parse_sets", "check_backend_name", "Terminated"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that a run cleans up the same way (exit code 143)."""


def parse_sets(sets: Optional[list[str]]) -> dict[str, str]:
    """``--set NAME=VALUE`` values as a dict; a UsageError (exit 2) for one without ``=``."""
    overrides = {}
    for item in sets or []:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise UsageError(f"--set {item!r}: write NAME=VALUE, e.g. --set amount=0.3")
        overrides[name.strip()] = value
    return overrides


def check_backend_name(name: str) -> str:
    """``name`` if it names a backend (built-in, alias or plugin), else a UsageError with a
    did-you-mean. Imports no framework."""
    from ..backend import ALIASES, backend_names
    from ..errors import did_you_mean

    names = backend_names()
    if ALIASES.get(name, name) not in names:
        near = did_you_mean(name, names + list(ALIASES))
        raise UsageError(
            f"unknown backend '{name}' (known: {', '.join(names)})",
            hint=f"did you mean '{near}'?" if near else None,
        )
    return name
