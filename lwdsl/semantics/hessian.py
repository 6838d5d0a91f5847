"""What the calibrated methods know of a linear layer's inputs: ``H = X^T X``.

Wanda, SparseGPT (and GPTQ) choose a layer's weights from the inputs ``X`` (one row per token
or example, one column per input feature) the layer saw on calibration data. Everything they
need is the Gram matrix ``H = X^T X``: Wanda its diagonal (``||X_j||_2^2``, the squared norm of
input feature ``j``), SparseGPT and GPTQ all of it. A backend hands over ``X`` batch by batch
(float32, in the framework's own rounding); :class:`Gram` accumulates ``H`` here in float64,
batch after batch in the order given, so two backends that hand over the same inputs get the
same ``H`` bit for bit.

:func:`output_error` is the layer objective all of them minimise, the relative output error
``||X (W - W')^T||_F^2 / ||X W^T||_F^2``, computed from ``H`` alone
(``sum((D H) * D) / sum((W H) * W)`` with ``D = W - W'``), so no input is kept.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Gram", "output_error"]


class Gram:
    """``H = X^T X`` (float64) of a linear layer with ``cols`` inputs, accumulated batch by
    batch; ``rows`` counts the input rows (tokens) seen.

    >>> g = Gram(2); g.update(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)); g.h.tolist(), g.rows
    ([[10.0, 14.0], [14.0, 20.0]], 2)
    """

    def __init__(self, cols: int) -> None:
        self.h = np.zeros((int(cols), int(cols)), dtype=np.float64)
        self.rows = 0

    def update(self, x: np.ndarray) -> None:
        """Add a batch of inputs (any leading axes; the last is the layer's input features)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.h.shape[0])
        self.h += x.T @ x
        self.rows += int(x.shape[0])

    def column_norms(self) -> np.ndarray:
        """``||X_j||_2`` of every input feature ``j`` (Wanda's scale): ``sqrt(diag(H))``."""
        return np.sqrt(np.diag(self.h))


def output_error(w: np.ndarray, w_new: np.ndarray, h: np.ndarray) -> float:
    """The relative output error ``||X (W - W')^T||^2 / ||X W^T||^2`` of a layer whose weight
    ``w`` ([out, in]) became ``w_new``, on the inputs whose Gram matrix is ``h`` (float64;
    0 when the layer's output is 0 on those inputs).

    >>> h = np.eye(2); w = np.array([[3.0, 4.0]])
    >>> output_error(w, np.array([[3.0, 0.0]]), h)
    0.64
    """
    w = np.asarray(w, dtype=np.float64)
    d = w - np.asarray(w_new, dtype=np.float64)
    base = float(np.sum((w @ h) * w))
    return float(np.sum((d @ h) * d)) / base if base > 0 else 0.0
