"""SmoothQuant (Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization
for Large Language Models"): move the range of activation outliers into the weights, so that
per-tensor int8 activations lose less, without changing the float model.

For a norm whose output ``X`` feeds only linear layers (Llama's ``input_layernorm -> q_proj,
k_proj, v_proj``), each input channel ``j`` gets a scale

    ``s_j = max(A_j, 1e-5)^alpha / max(W_j, 1e-5)^(1 - alpha)``, then ``s_j = max(s_j, 1e-5)``

with ``A_j = max |X[:, j]|`` over the calibration tokens and ``W_j = max |W[:, j]|`` over the
rows of every following linear together (their weights stacked, canonical layout ``[out, in]``);
computed in float64, rounded once to float32. The norm's weight becomes ``g / s`` and every
following weight ``W * s`` (column ``j`` times ``s_j``), both in float32: ``(x g / s)(W s)^T =
(x g) W^T``, so the float model is unchanged up to float32 rounding, and the activation channel
``j`` the int8 step will see is ``X_j / s_j``. ``alpha`` in ``[0, 1]``: 0 puts all the range in
the weights' side (``s = 1 / W_j``), 1 moves it all (``s = A_j``); 0.5 (the paper's default)
balances them. The floors (the paper's ``clamp(min=1e-5)``) keep a dead channel (``A_j = 0``)
or an all-zero column finite.

A LayerNorm (GPT-2's ``ln_1 -> attn.c_attn``, ``ln_2 -> mlp.c_fc``) has a bias too: its output is
``n(x) g + b``, so both ``g`` and ``b`` are divided by ``s`` (:func:`smooth`'s ``norm_bias``) and
``(n(x) g / s + b / s)(W s)^T = (n(x) g + b) W^T``: the same identity. GPT-2's ``Conv1D``
weights are taken in the canonical layout ``[out, in]`` (transposed from ``transformers``'
``[in, out]`` by both backends), so the same columns are scaled.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["FLOOR", "column_absmax", "smooth_scales", "smooth", "smooth_bias"]

#: The smallest ``A_j``, ``W_j`` and ``s_j`` used (the paper's clamp).
FLOOR = 1e-5


def column_absmax(weights: Sequence[np.ndarray]) -> np.ndarray:
    """``max |W[:, j]|`` over the rows of all ``weights`` (each ``[out_i, in]``), float32.

    >>> column_absmax([np.array([[1.0, -3.0]]), np.array([[-2.0, 0.5]])]).tolist()
    [2.0, 3.0]
    """
    return np.max(np.abs(np.concatenate([np.asarray(w, dtype=np.float32) for w in weights], axis=0)), axis=0)


def smooth_scales(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """The per-channel scales ``s`` (float32 ``[in]``) of the module rule.

    Raises:
        ValueError: alpha outside [0, 1], or shapes that differ.

    >>> smooth_scales(np.array([4.0, 0.0]), np.array([1.0, 0.25]), 0.5).tolist()
    [2.0, 0.00632455525919795]
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    a = np.maximum(np.asarray(act_absmax, dtype=np.float64), FLOOR)
    w = np.maximum(np.asarray(weight_absmax, dtype=np.float64), FLOOR)
    if a.shape != w.shape or a.ndim != 1:
        raise ValueError(f"activation and weight maxima must be 1-D of one length, got {a.shape} and {w.shape}")
    s = np.power(a, float(alpha)) / np.power(w, 1.0 - float(alpha))
    return np.maximum(s, FLOOR).astype(np.float32)


def smooth_bias(norm_bias: np.ndarray, s: np.ndarray) -> np.ndarray:
    """A LayerNorm's bias ``b / s``, float32 (the norm's weight goes through :func:`smooth`).

    >>> smooth_bias(np.array([1.0, -2.0]), np.array([2.0, 0.5], np.float32)).tolist()
    [0.5, -4.0]
    """
    return (np.asarray(norm_bias, dtype=np.float32) / np.asarray(s, dtype=np.float32)).astype(np.float32)


def smooth(norm_weight: np.ndarray, weights: Sequence[np.ndarray], s: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The norm's weight ``g / s`` and each following weight ``W * s`` (columns), float32.

    >>> g, (w,) = smooth(np.array([1.0, 2.0]), [np.array([[1.0, 1.0]])], np.array([2.0, 0.5], np.float32))
    >>> g.tolist(), w.tolist()
    ([0.5, 4.0], [[2.0, 0.5]])
    """
    s = np.asarray(s, dtype=np.float32)
    g = (np.asarray(norm_weight, dtype=np.float32) / s).astype(np.float32)
    return g, [(np.asarray(w, dtype=np.float32) * s[None, :]).astype(np.float32) for w in weights]
