"""Progress bars with ETA for every loop over data (rich), or none with ``--quiet``."""

from __future__ import annotations

from typing import Any

__all__ = ["progress_factory", "NullBar"]


class NullBar:
    """A bar that shows nothing (quiet runs, tests)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _RichBar:
    def __init__(self, progress: Any, total: int, description: str) -> None:
        self._progress = progress
        self._task = progress.add_task(description, total=total)

    def update(self, n: int = 1) -> None:
        self._progress.update(self._task, advance=n)

    def close(self) -> None:
        self._progress.remove_task(self._task)


class _RichFactory:
    """Creates bars on one shared live display, started on first use."""

    def __init__(self) -> None:
        self._progress = None

    def __call__(self, total: int, description: str) -> Any:
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                transient=True,
            )
            self._progress.start()
        return _RichBar(self._progress, total, description)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def progress_factory(quiet: bool) -> Any:
    """A callable ``(total, description) -> bar`` with ``stop()``; bars do nothing when quiet."""
    if quiet:
        factory = lambda total, description: NullBar()  # noqa: E731
        factory.stop = lambda: None  # type: ignore[attr-defined]
        return factory
    return _RichFactory()
