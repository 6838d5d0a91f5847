"""Forward latency: the median of timed runs after a warm-up, with a given number of threads.

TensorFlow fixes its intra-op thread pool when its runtime starts (the first model built or op
run); ``tf.config.threading.set_intra_op_parallelism_threads`` raises after that. So:

- if the runtime has not started yet, the thread count is set (once, for the whole process)
  and the model is timed here;
- if it has started with the requested count (by default, the number of CPU cores), the model
  is timed here;
- otherwise the model is timed in a worker process started with that thread count (one per
  count, kept for later calls, ended at exit), which receives the model as a ``.keras`` file.

After ``quantize int8``, the model's ``.tflite`` file (the one the step writes) is timed
instead, in the LiteRT interpreter with ``threads`` threads
(:func:`lwdsl.backend.engines.file_latency_ms` over tflite_engine.py's engine), as the torch
backend times its ONNX file. A model with low-bit or cluster layers has no artifact with kernels of its own
(``export tflite`` refuses it): it is timed as it runs, in Keras on float kernels, like fp32.

Timing: ``model(x, training=False)`` inside a ``tf.function``, by the core's protocol
(:mod:`lwdsl.backend.timing`: the same warm-up, run count and budget as every other latency).
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lwdsl.backend.engines import file_latency_ms
from lwdsl.backend.timing import fixed_input, fixed_tokens, median_ms
from lwdsl.errors import RunError
from lwdsl.semantics.codes import int8_only

from ._tf import keras, tf
from .hf import takes_tokens

__all__ = ["latency_ms", "time_model"]

_workers: dict[int, subprocess.Popen] = {}


def time_model(model: Any, batch: int, input_shape: tuple[int, ...]) -> float:
    """Median latency of ``model`` (in this process, with its current threads) in ms."""
    if takes_tokens(model):  # token ids over the embedding's vocabulary, as on torch
        vocab = next(layer.input_dim for layer in model.layers if isinstance(layer, keras.layers.Embedding))
        x = tf.constant(fixed_tokens(batch, input_shape, int(vocab)))
    else:
        x = tf.constant(np.ascontiguousarray(np.moveaxis(fixed_input(batch, input_shape), 1, -1)))
    forward = tf.function(lambda t: model(t, training=False))
    return median_ms(lambda: forward(x).numpy())


def _threads_here(threads: int) -> bool:
    """True when this process runs TensorFlow with ``threads`` intra-op threads (set if it can)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        return True
    except RuntimeError:
        current = tf.config.threading.get_intra_op_parallelism_threads()
        return (current or os.cpu_count() or 1) == threads


def _worker(threads: int) -> subprocess.Popen:
    proc = _workers.get(threads)
    if proc is None or proc.poll() is not None:
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        _workers[threads] = proc
    return proc


@atexit.register
def _stop_workers() -> None:
    for proc in _workers.values():
        if proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


def latency_ms(handle: Any, batch: int, input_shape: tuple[int, ...], threads: int) -> float:
    """Median forward latency in ms of a handle's model at ``batch`` with ``threads`` intra-op
    threads."""
    if int8_only(handle.quant) and not takes_tokens(handle.model):  # the int8 file, as torch times its ONNX file
        # (a language model's W8A8 has none: its float forward is timed, as on torch)
        from .tflite_engine import LITERT

        return file_latency_ms(LITERT, handle, batch, input_shape, threads)
    model = handle.model
    if _threads_here(threads):
        return time_model(model, batch, input_shape)
    with tempfile.TemporaryDirectory(prefix="lwdsl-latency-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        proc = _worker(threads)
        proc.stdin.write(json.dumps({"path": str(path), "batch": batch, "shape": list(input_shape)}) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
    if not line:
        raise RunError(f"the latency worker with {threads} thread(s) stopped unexpectedly")
    reply = json.loads(line)
    if "error" in reply:
        raise RunError(f"latency measurement failed in the worker: {reply['error']}")
    return float(reply["ms"])


def _serve(threads: int) -> None:  # pragma: no cover - runs in the worker process
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    from ._tf import keras

    for line in sys.stdin:
        try:
            req = json.loads(line)
            model = keras.models.load_model(req["path"], safe_mode=True, compile=False)
            reply = {"ms": time_model(model, int(req["batch"]), tuple(req["shape"]))}
        except Exception as exc:  # reported to the parent, which raises RunError
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    _serve(int(sys.argv[1]))
