"""Forward latency on Keras: ``model(x, training=False)`` in a ``tf.function``, timed by the
core's protocol (:mod:`lwdsl.backend.timing`); the thread count that TensorFlow fixes when its
runtime starts is met by timing in this process when it can, else in a worker process of that
count (:class:`lwdsl.backend.timing.TimingWorkers`, the model passed as a ``.keras`` file);
after ``quantize int8`` the ``.tflite`` file is timed in LiteRT instead (docs/semantics.md:
"Measurements" and "Quantization: batch-norm folding, artifacts, latency")."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lwdsl.backend.engines import file_latency_ms
from lwdsl.backend.timing import TimingWorkers, fixed_input, fixed_tokens, median_ms, serve_timing
from lwdsl.semantics.codes import int8_only

from ._tf import keras, tf
from .hf import takes_tokens

__all__ = ["latency_ms", "time_model"]

_WORKERS = TimingWorkers(__name__)


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
        return _WORKERS.time(threads, {"path": str(path), "batch": batch, "shape": list(input_shape)})


def _serve(threads: int) -> None:  # pragma: no cover - runs in the worker process
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    serve_timing(lambda req: time_model(keras.models.load_model(req["path"], safe_mode=True, compile=False),
                                        int(req["batch"]), tuple(req["shape"])))


if __name__ == "__main__":  # pragma: no cover
    _serve(int(sys.argv[1]))
