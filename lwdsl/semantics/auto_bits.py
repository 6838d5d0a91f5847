"""``quantize auto budget=BITS``: bits per layer from a measured sensitivity, under a budget.

The one definition both backends use (numpy only, on canonical weights, so the choice is the
same on every backend and for the same weights always the same):

- candidates per layer: ``binary`` (1 bit), ``int2`` (2), ``int4`` (4), ``int8`` (8) and
  ``float`` (32), quantized by :func:`lwdsl.semantics.quant.quantize_as` at the step's
  granularity;
- sensitivity of a layer at a form: the squared error its weights take,
  ``sum((w - dequantize(w))^2)`` in float64 (0 for float), a data-free proxy of the loss
  increase (all weights of a layer feed the same outputs, so error in any weight counts);
- cost of a form: ``bits * weights``; the budget is ``budget * sum(weights)`` over the layers;
- choice: every layer starts at binary; then, repeatedly, the upgrade (one layer to any higher
  candidate) with the largest error reduction per added bit is taken if it fits the budget
  (ties: the earlier layer, then the smaller upgrade; upgrades that reduce no error are never
  taken); when the best upgrade does not fit, that layer stays where it is and the others may
  still move up. The average bits reached are at most ``budget``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .quant import quantize_as

__all__ = ["CANDIDATES", "LayerChoice", "choose_bits", "choice_notes"]

#: (form, bits per weight), lowest first.
CANDIDATES: tuple[tuple[str, int], ...] = (("binary", 1), ("int2", 2), ("int4", 4), ("int8", 8), ("float", 32))


@dataclass(frozen=True)
class LayerChoice:
    """A layer's chosen form, its bits and weights, and its squared error at every candidate."""

    layer: str
    form: str
    bits: int
    weights: int
    errors: dict[str, float]


def _error(w: np.ndarray, form: str, granularity: str) -> float:
    if form == "float":
        return 0.0
    d = w.astype(np.float64) - quantize_as(w, form, granularity).dequantize().astype(np.float64)
    return float(np.sum(d * d))


def choose_bits(weights: dict[str, np.ndarray], budget: float, granularity: str = "per_channel") -> list[LayerChoice]:
    """The form of each layer (in the given order) under an average of ``budget`` bits per weight.

    Raises:
        ValueError: a budget below 1 (binary everywhere) or no layers.

    >>> w = {"a": np.linspace(-1, 1, 64, dtype=np.float32).reshape(4, 16), "b": np.ones((2, 8), np.float32)}
    >>> [(c.layer, c.form) for c in choose_bits(w, 4)]
    [('a', 'int4'), ('b', 'binary')]
    """
    if budget < 1:
        raise ValueError(f"budget {budget} is below 1 bit per weight (binary everywhere)")
    if not weights:
        raise ValueError("quantize auto needs at least one layer")
    names = list(weights)
    sizes = {n: int(np.size(weights[n])) for n in names}
    errors = {n: {f: _error(np.asarray(weights[n], np.float32), f, granularity) for f, _ in CANDIDATES} for n in names}
    level = {n: 0 for n in names}
    allowed = float(budget) * sum(sizes.values())
    used = float(sum(sizes[n] * CANDIDATES[0][1] for n in names))
    stuck: set[str] = set()
    while True:
        best = None
        for i, n in enumerate(names):
            if n in stuck:
                continue
            f0, b0 = CANDIDATES[level[n]]
            for j in range(level[n] + 1, len(CANDIDATES)):
                f1, b1 = CANDIDATES[j]
                extra = sizes[n] * (b1 - b0)
                gain = (errors[n][f0] - errors[n][f1]) / extra
                key = (-gain, i, j)
                if gain > 0 and (best is None or key < best[0]):
                    best = (key, n, j, extra)
        if best is None:
            break
        _, n, j, extra = best
        if used + extra <= allowed:
            level[n] = j
            used += extra
        else:
            stuck.add(n)
    return [LayerChoice(n, CANDIDATES[level[n]][0], CANDIDATES[level[n]][1], sizes[n], errors[n]) for n in names]


def choice_notes(choices: list[LayerChoice], budget: float) -> dict:
    """What a step reports of its choice: the budget, the average bits reached and a row per
    layer (form, bits, weights, squared error at every candidate)."""
    total = sum(c.weights for c in choices)
    return {
        "budget": float(budget),
        "average_bits": sum(c.bits * c.weights for c in choices) / total,
        "layers": [
            {"layer": c.layer, "form": c.form, "bits": c.bits, "weights": c.weights, "sq_errors": dict(c.errors)}
            for c in choices
        ],
    }
