"""What is measured after the baseline and after every step, the same way on every backend."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

from ..backend import Backend, StepContext
from ..backend.weights import gzip_size, save_weights

__all__ = ["measure", "macs", "perplexity"]


def perplexity(loss: float) -> float:
    """A language model's perplexity: ``exp`` of its mean cross-entropy (natural log) over
    every target token of the test sequences (``inf`` past float64's range).

    >>> round(perplexity(0.0), 6), round(perplexity(2.0), 4)
    (1.0, 7.3891)
    """
    import math

    return math.exp(loss) if loss < 709.0 else float("inf")


def measure(
    backend: Backend,
    model: Any,
    ctx: StepContext,
    *,
    threads: int,
    seconds: float,
    requested: Optional[dict[str, float]] = None,
    latency: bool = True,
) -> dict[str, Any]:
    """Accuracy/loss on the test set (for a language model, ``task`` lm: next-token accuracy,
    mean token cross-entropy and :func:`perplexity`), parameter counts, per-layer sparsity, size on disk of the
    compact weights (raw and gzip -9) and forward latency at batch 1 and 64.

    Sizes are of a real file written with :func:`lwdsl.backend.weights.save_weights`, not estimates.
    """
    accuracy, loss = backend.evaluate(model, ctx)
    stats = backend.stats(model)
    with tempfile.TemporaryDirectory(prefix="lwdsl-size-") as tmp:
        path = Path(tmp) / "model.lwz"
        size = save_weights(path, backend.state(model))
        size_gz = gzip_size(path)
    shape = ctx.data.input_shape
    metrics: dict[str, Any] = {
        "accuracy": round(float(accuracy), 6),
        "loss": round(float(loss), 6),
        **({"perplexity": round(perplexity(loss), 4)} if ctx.data.task == "lm" else {}),
        "params": stats.params,
        "nonzero_params": stats.nonzero_params,
        "size_bytes": size,
        "size_gzip_bytes": size_gz,
        "latency_ms_b1": round(backend.latency_ms(model, 1, shape, threads), 4) if latency else None,
        "latency_ms_b64": round(backend.latency_ms(model, 64, shape, threads), 4) if latency else None,
        "seconds": round(seconds, 3),
        "layers": [
            {
                "name": layer.name,
                "kind": layer.kind,
                "weights": layer.weights,
                "sparsity": round(layer.sparsity, 6),
                "requested": None if requested is None else requested.get(layer.name),
            }
            for layer in stats.layers
        ],
    }
    return metrics



def macs(stats: Any, positions: dict[str, int]) -> int:
    """Multiply-accumulates of one input through the conv and linear layers, zero weights
    skipped: each layer's non-zero weights times its output positions
    (:meth:`lwdsl.backend.Backend.positions`; positions do not change when weights are pruned,
    quantized or whole channels removed, so the baseline's serve every later model).
    Norms, biases and activations are not counted."""
    return int(sum((layer.weights - layer.zeros) * positions.get(layer.name, 0) for layer in stats.layers))
