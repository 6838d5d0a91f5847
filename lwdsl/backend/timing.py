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

import atexit
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..errors import RunError

__all__ = ["Protocol", "PROTOCOL", "median_ms", "fixed_input", "fixed_tokens", "timing_input", "TimingWorkers", "serve_timing"]


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


def timing_input(batch: int, input_shape: tuple[int, ...], vocab: Optional[int] = None) -> np.ndarray:
    """The input every latency is timed on: :func:`fixed_tokens` over ``vocab`` for a model of
    token ids, else :func:`fixed_input`."""
    return fixed_input(batch, input_shape) if vocab is None else fixed_tokens(batch, input_shape, vocab)


class TimingWorkers:
    """Forward passes timed in worker processes started with a given thread count, for a
    framework that fixes its thread pool when its runtime starts (TensorFlow): one process per
    count, ``python -m MODULE THREADS`` (which calls :func:`serve_timing`), kept for later
    calls and ended at exit. A request is one JSON line (what to time); the reply is the
    milliseconds, or the worker's error raised here as a RunError."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.procs: dict[int, subprocess.Popen] = {}
        atexit.register(self.stop)

    def time(self, threads: int, request: dict[str, Any]) -> float:
        proc = self.procs.get(threads)
        if proc is None or proc.poll() is not None:
            proc = self.procs[threads] = subprocess.Popen([sys.executable, "-m", self.module, str(threads)], stdin=subprocess.PIPE,
                                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RunError(f"the latency worker with {threads} thread(s) stopped unexpectedly")
        reply = json.loads(line)
        if "error" in reply:
            raise RunError(f"latency measurement failed in the worker: {reply['error']}")
        return float(reply["ms"])

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.stdin.close()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()


def serve_timing(time_one: Callable[[dict[str, Any]], float]) -> None:  # pragma: no cover - runs in the worker process
    """A :class:`TimingWorkers` process's loop: each request line on stdin answered on stdout
    with ``{"ms": time_one(request)}``, or ``{"error": ...}`` (the parent raises RunError)."""
    for line in sys.stdin:
        try:
            reply: dict[str, Any] = {"ms": time_one(json.loads(line))}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
