"""Forward latency on Keras: the artifact and the input are the core's
(:func:`lwdsl.backend.engines.latency_ms`); TensorFlow's part is ``model(x, training=False)`` in a
``tf.function`` and the threads it fixes when its runtime starts: timed in this process when it
can, else in a worker process of that count (:class:`lwdsl.backend.timing.TimingWorkers`, the
model passed as a ``.keras`` file; docs/semantics.md: "Measurements")."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lwdsl.backend import engines
from lwdsl.backend.timing import TimingWorkers, median_ms, serve_timing, timing_input

from ._tf import keras, tf
from .hf import takes_tokens
from .tflite_engine import LITERT

__all__ = ["latency_ms", "time_model"]

_WORKERS = TimingWorkers(__name__)


def time_model(model: Any, x: np.ndarray) -> float:
    """Median latency of ``model`` on ``x`` (NCHW images or token ids; in this process, with its
    current threads) in ms."""
    t = tf.constant(np.ascontiguousarray(np.moveaxis(x, 1, -1)))  # NHWC (token ids: unchanged)
    forward = tf.function(lambda v: model(v, training=False))
    return median_ms(lambda: forward(t).numpy())


def _threads_here(threads: int) -> bool:
    """True when this process runs TensorFlow with ``threads`` intra-op threads (set if it can)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        return True
    except RuntimeError:
        current = tf.config.threading.get_intra_op_parallelism_threads()
        return (current or os.cpu_count() or 1) == threads


def latency_ms(handle: Any, batch: int, input_shape: tuple[int, ...], threads: int) -> float:
    """Median forward latency in ms of a handle's model at ``batch`` with ``threads`` intra-op
    threads."""
    model = handle.model
    vocab = next(int(v.input_dim) for v in model.layers if isinstance(v, keras.layers.Embedding)) if takes_tokens(model) else None

    def forward(x: np.ndarray) -> float:
        if _threads_here(threads):
            return time_model(model, x)  # else the worker makes the same x (timing_input)
        with tempfile.TemporaryDirectory(prefix="lwdsl-latency-") as tmp:
            path = Path(tmp) / "model.keras"
            model.save(path)
            return _WORKERS.time(threads, {"path": str(path), "batch": batch, "shape": list(input_shape), "vocab": vocab})

    return engines.latency_ms(handle, batch, input_shape, threads, vocab=vocab, engine=LITERT, forward=forward)


def _serve(threads: int) -> None:  # pragma: no cover - runs in the worker process
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    serve_timing(lambda req: time_model(keras.models.load_model(req["path"], safe_mode=True, compile=False),
                                        timing_input(int(req["batch"]), tuple(req["shape"]), req["vocab"])))


if __name__ == "__main__":  # pragma: no cover
    _serve(int(sys.argv[1]))
