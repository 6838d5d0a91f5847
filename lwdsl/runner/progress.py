"""Progress for every loop over data: rich bars with ETA on a terminal, plain lines in logs.

When stdout is not a terminal (CI logs, ``| tee``), rich would draw nothing; plain lines go to
stderr instead: one when a loop of 2 s or more ends, and one a minute while a long loop runs
(:class:`PlainBar`), so a log has about one line per epoch.
A phase of several epochs (the baseline) also says, after each epoch, how long it took and about
how long the rest will take (:func:`epoch_progress`). ``--quiet`` shows nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

__all__ = ["progress_factory", "epoch_progress", "NullBar", "PlainBar"]


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


class PlainBar:
    """Progress as lines of text for logs: one line when a loop that took at least
    ``min_seconds`` ends (``train epoch 1/2: 938 steps in 24 s``), and, while a long loop runs,
    one every ``every`` seconds (``train epoch 1/2: 469/938 (50%), 60 s, eta 60 s``). A short
    loop (an evaluation, a calibration) prints nothing: the step's own line says its figures."""

    def __init__(
        self, total: int, description: str, write: Callable[[str], Any], clock: Callable[[], float] = time.monotonic,
        *, every: float = 60.0, min_seconds: float = 2.0,
    ) -> None:
        self.total, self.description, self._write, self._clock = max(int(total), 0), description, write, clock
        self.every, self.min_seconds = every, min_seconds
        self.done, self._start = 0, clock()
        self._shown_at = self._start

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self._clock()
        if now - self._shown_at >= self.every and self.done < self.total:
            self._shown_at = now
            elapsed = now - self._start
            share = self.done / self.total if self.total else 0.0
            eta = f", eta {elapsed * (1 - share) / share:.0f} s" if 0 < share < 1 else ""
            of = f"/{self.total} ({100 * share:.0f}%)" if self.total else ""
            self._write(f"{self.description}: {self.done}{of}, {elapsed:.0f} s{eta}")

    def close(self) -> None:
        elapsed = self._clock() - self._start
        if elapsed >= self.min_seconds:
            took = f"{elapsed:.0f} s" if elapsed >= 2 else f"{elapsed:.2f} s"  # short loops show only with --verbose
            self._write(f"{self.description}: {self.done} steps in {took}")


class _PlainFactory:
    def __init__(self, write: Callable[[str], Any], min_seconds: float = 2.0) -> None:
        self._write, self._min_seconds = write, min_seconds

    def __call__(self, total: int, description: str) -> PlainBar:
        return PlainBar(total, description, self._write, min_seconds=self._min_seconds)

    def stop(self) -> None:
        pass


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def progress_factory(
    quiet: bool, *, terminal: bool | None = None, write: Callable[[str], Any] | None = None, verbose: bool = False,
) -> Any:
    """A callable ``(total, description) -> bar`` with ``stop()``: rich bars on a terminal,
    :class:`PlainBar` lines (to stderr, or ``write``) otherwise, nothing when quiet.

    Args:
        quiet: show nothing.
        terminal: whether stdout is a terminal (default: ask it).
        write: where plain lines go (default: stderr).
        verbose: plain lines for every loop, the short ones too (an evaluation, a calibration).
    """
    if quiet:
        factory = lambda total, description: NullBar()  # noqa: E731
        factory.stop = lambda: None  # type: ignore[attr-defined]
        return factory
    if terminal is None:
        terminal = sys.stdout.isatty()
    return _RichFactory() if terminal else _PlainFactory(write or _stderr_line, min_seconds=0.0 if verbose else 2.0)


class _EpochBar:
    """A bar of ``factory`` that tells :class:`_EpochFactory` when its epoch ends."""

    def __init__(self, bar: Any, on_close: Callable[[], None]) -> None:
        self._bar, self._on_close = bar, on_close

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()
        self._on_close()


class _EpochFactory:
    def __init__(self, factory: Any, phase: str, epochs: int, say: Callable[[str], Any], clock: Callable[[], float]) -> None:
        self._factory, self._phase, self._epochs, self._say, self._clock = factory, phase, max(int(epochs), 1), say, clock
        self._start, self._done = clock(), 0

    def __call__(self, total: int, description: str) -> Any:
        bar = self._factory(total, f"{self._phase}: {description}")
        return _EpochBar(bar, self._epoch_done) if "epoch" in description else bar

    def _epoch_done(self) -> None:
        self._done += 1
        elapsed = self._clock() - self._start
        if self._done >= self._epochs:
            self._say(f"{self._phase}: {self._done} epoch(s) trained in {elapsed:.0f} s")
            return
        left = elapsed / self._done * (self._epochs - self._done)
        self._say(f"{self._phase}: epoch {self._done}/{self._epochs} done, {elapsed:.0f} s so far, about {left:.0f} s left")

    def stop(self) -> None:
        getattr(self._factory, "stop", lambda: None)()


def epoch_progress(
    factory: Any, phase: str, epochs: int, say: Callable[[str], Any], clock: Callable[[], float] = time.monotonic
) -> Any:
    """``factory`` for a phase of ``epochs`` epochs (the baseline, trained for minutes): its
    bars are named ``PHASE: ...`` and, as each epoch's bar closes (a bar whose description
    says ``epoch``), ``say`` gets how long it has taken and about how long the rest will take.

    >>> lines = []
    >>> ticks = iter([0.0, 60.0, 120.0])
    >>> bars = epoch_progress(lambda total, what: NullBar(), "baseline", 2, lines.append, clock=lambda: next(ticks))
    >>> for epoch in (1, 2):
    ...     bars(10, f"train epoch {epoch}/2").close()
    >>> lines
    ['baseline: epoch 1/2 done, 60 s so far, about 60 s left', 'baseline: 2 epoch(s) trained in 120 s']
    """
    return _EpochFactory(factory, phase, epochs, say, clock)
