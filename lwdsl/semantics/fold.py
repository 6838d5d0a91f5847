"""Batch-norm folding: the numbers of a convolution (or linear layer) followed by a batch norm
in inference mode, merged into one layer before quantization.

A batch norm in inference mode is a per-channel affine map ``y = (x - mean) * g + beta`` with
``g = gamma / sqrt(var + eps)``. When it follows a conv/linear layer whose output feeds nothing
else, the two are one layer with

- ``w' = w * g`` (broadcast along the output-channel axis 0 of the canonical layout),
- ``b' = (b - mean) * g + beta`` (``b = 0`` when the layer has no bias),

all in float32, in this order of operations (``g`` first: ``var + eps``, ``sqrt``, the
division), so both backends fold to bit-identical weights; the quantizer then sees one weight
per layer, as the int8 kernels (ONNX Runtime's QLinearConv, TFLite's CONV_2D) run it. A pruned
(zero) weight stays exactly zero. The norm's running statistics are used, never batch ones: the
folded model is the inference-mode model, to float32 rounding.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["fold_batchnorm", "FOLDED"]

#: Suffix of the state key that marks a norm folded into the layer before it: ``<norm>.folded``,
#: an empty float32 array (the norm has no tensors left). Loading such a state into a freshly
#: built model folds the model's norm away first, so the file loads back to the same model.
FOLDED = ".folded"


def fold_batchnorm(
    w: np.ndarray,
    b: Optional[np.ndarray],
    gamma: Optional[np.ndarray],
    beta: Optional[np.ndarray],
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``(w', b')`` of a canonical-layout weight ``w`` (output channels on axis 0) and bias ``b``
    followed by a batch norm (``gamma``/``beta`` None when the norm has no scale/shift).

    >>> w = np.array([[1.0, -2.0], [0.5, 0.0]], np.float32)
    >>> wf, bf = fold_batchnorm(w, None, np.array([2.0, 1.0], np.float32), np.array([0.5, 0.0], np.float32),
    ...                         np.array([1.0, 0.0], np.float32), np.array([3.0, 0.0], np.float32), 1.0)
    >>> wf.tolist(), bf.tolist()
    ([[1.0, -2.0], [0.5, 0.0]], [-0.5, 0.0])
    """
    w = np.asarray(w, np.float32)
    out = w.shape[0]
    mean = np.asarray(mean, np.float32).reshape(out)
    var = np.asarray(var, np.float32).reshape(out)
    gamma = np.ones(out, np.float32) if gamma is None else np.asarray(gamma, np.float32).reshape(out)
    beta = np.zeros(out, np.float32) if beta is None else np.asarray(beta, np.float32).reshape(out)
    b = np.zeros(out, np.float32) if b is None else np.asarray(b, np.float32).reshape(out)
    g = (gamma / np.sqrt(var + np.float32(eps))).astype(np.float32)
    wf = (w * g.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
    bf = ((b - mean) * g + beta).astype(np.float32)
    return wf, bf
