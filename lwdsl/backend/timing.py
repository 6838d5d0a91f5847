"""The one timing protocol every latency lwdsl prints is measured with.

A backend gives a callable that runs one forward pass on a fixed input (its framework, its
engine, its threads); :func:`median_ms` decides how it is timed, so two figures printed side
by side (PyTorch eager, ONNX Runtime, torch.ao, Keras, LiteRT) are measured the same way:

- ``warmup`` calls (3) that are not timed;
- then calls, each timed alone with ``time.perf_counter``, until at least ``min_runs`` (10)
  are done and the time budget (``budget_s``, 1 s, counted from the first timed call) is spent,
  never more than ``max_runs`` (200);
- the median, in milliseconds.

The input is :func:`fixed_input`: standard normal float32 from numpy's generator seeded 0, the
same values on every backend (NCHW; a backend converts the layout).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["Protocol", "PROTOCOL", "median_ms", "fixed_input"]


@dataclass(frozen=True)
class Protocol:
    """How a forward pass is timed (see the module docstring)."""

    warmup: int = 3
    min_runs: int = 10
    max_runs: int = 200
    budget_s: float = 1.0


#: The protocol of every latency in a report, a bench row and an artifact's description.
PROTOCOL = Protocol()


def median_ms(call: Callable[[], Any], protocol: Protocol = PROTOCOL) -> float:
    """Median milliseconds of ``call()`` under ``protocol``.

    Example:
        >>> median_ms(lambda: sum(range(100)), Protocol(warmup=1, min_runs=3, budget_s=0.0)) >= 0
        True
    """
    for _ in range(protocol.warmup):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + protocol.budget_s
    while len(times) < protocol.min_runs or (len(times) < protocol.max_runs and time.perf_counter() < deadline):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def fixed_input(batch: int, input_shape: tuple[int, ...]) -> np.ndarray:
    """The timing input: ``batch`` images of ``input_shape`` (C, H, W), float32, seeded 0."""
    return np.random.default_rng(0).standard_normal((batch, *input_shape)).astype(np.float32)


def fixed_tokens(batch: int, input_shape: tuple[int, ...], vocab: int) -> np.ndarray:
    """The timing input of a model of token ids: ``batch`` sequences of ``input_shape`` (L,),
    int64 ids drawn uniformly from ``[0, vocab)``, seeded 0."""
    return np.random.default_rng(0).integers(0, int(vocab), (batch, *input_shape), dtype=np.int64)
