"""Command-line arguments every command reads the same way (``--set``, ``--backend``), shared by
:mod:`lwdsl.cli.app` and :mod:`lwdsl.cli.run_cmd` so neither imports the other's internals."""

from __future__ import annotations

from typing import Optional

from ..errors import UsageError

__all__ = ["parse_sets", "check_backend_name", "with_data_options", "check_verbosity", "Terminated"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that a run cleans up the same way (exit code 143)."""


_INTERRUPTED = "interrupted: nothing was written; earlier outputs and the input model are as they were"
_terminated: list[bool] = []  # set when SIGTERM arrived (the console script's exit code is then 143)


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM handler: raise :class:`Terminated` once, so a run cleans up as for Ctrl-C."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: let the clean-up finish
    _terminated.append(True)
    raise Terminated()


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


def with_data_options(data: Optional[str], options: dict[str, Optional[str]]) -> Optional[str]:
    """The data reference ``data`` with the preprocessing options given on the command line
    (``--resize 64`` -> ``PATH?resize=64``; an option given both ways takes the command
    line's); a UsageError when options are given for a named data set or for no data."""
    given = {k: v for k, v in options.items() if v is not None}
    if not given:
        return data
    flags = ", ".join(f"--{k}" for k in given)
    if data is None:
        raise UsageError(f"{flags} given but no data", hint="give --data PATH (or a `target MODEL on PATH` line)")
    from ..data.builtin import is_named
    from ..data.ref import with_options

    if is_named(data):
        raise UsageError(f"{flags} apply to data read from a path (a folder, a .npz, ...), not to {data}",
                         hint="leave them out: named data sets come preprocessed")
    return with_options(data, given)


def check_verbosity(quiet: bool, verbose: bool) -> None:
    """``--quiet`` and ``--verbose`` together: a UsageError (exit 2), since they say opposite things."""
    if quiet and verbose:
        raise UsageError("--quiet and --verbose together: give one", hint="--quiet: only the result line and errors; "
                         "--verbose: every detail (model, data, resolved arguments, the time of each phase)")
