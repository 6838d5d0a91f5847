"""``quantize auto budget=BITS``: bits per layer from a measured sensitivity, under a budget.

The one definition both backends use (numpy only; the backend only runs the model):

- candidates per layer: ``binary`` (1 bit), ``int2`` (2), ``int4`` (4), ``int8`` (8) and
  ``float`` (32); a candidate's weight is :func:`trial_weight` (``quantize_as(w, form,
  granularity).dequantize()``, the weight the layer gets if chosen);
- **measured sensitivity** (``kl``, whenever the step has training images): the backend runs the
  model (eval mode, as it evaluates) on the calibration images, ``calibration_indices(n,
  calibrate, seed)`` of the training set (:mod:`lwdsl.semantics.order`), once as it is (the
  reference logits) and once per layer and candidate with only that layer's weight replaced by
  its trial weight. :func:`kl_sensitivity` turns each pair of logits into the mean over images
  of ``KL(softmax(reference) || softmax(trial))`` in float64, 0 below ``1e-12`` (rounding
  noise of equal outputs), else rounded to 4 significant digits (:func:`round_sig`: logits computed by two frameworks differ in the last
  float32 bits, the rounded numbers do not, except next to a rounding boundary); ``float`` is 0;
- **fallback** (no training images): the squared weight error ``sum((w - trial)^2)`` in
  float64 (:func:`weight_errors`), a data-free proxy;
- cost of a form: ``bits * weights``; the budget is ``budget * sum(weights)`` over the layers;
- choice (:func:`choose_bits`): the assignment of one candidate per layer with the smallest
  total sensitivity (the sum over layers, each measured alone) whose cost fits the budget,
  found exactly (a Pareto frontier of cost and total sensitivity, layer by layer, in model
  order); ties: the lower cost, then the lexicographically smaller tuple of candidate indices
  (lower forms on earlier layers). Uniform quantization at ``budget`` bits is one of the
  assignments, so the choice's total sensitivity is never above it. The average bits reached
  are at most ``budget``.

Same weights, same images (same seed and ``calibrate``), same choice; a different seed draws
other calibration images and may choose differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from .codes import quantize_as
from .forms import AUTO_TRIALS

__all__ = [
    "auto_forms",
    "CANDIDATES",
    "TRIAL_FORMS",
    "LayerChoice",
    "trial_weight",
    "weight_errors",
    "kl_sensitivity",
    "round_sig",
    "choose_bits",
    "choice_notes",
]

#: (form, bits per weight), lowest first: the forms table's auto trials, then float.
CANDIDATES: tuple[tuple[str, int], ...] = AUTO_TRIALS + (("float", 32),)
#: The candidates a backend measures (float is the reference, sensitivity 0).
TRIAL_FORMS: tuple[str, ...] = tuple(f for f, _ in CANDIDATES if f != "float")


@dataclass(frozen=True)
class LayerChoice:
    """A layer's chosen form, its bits and weights, and its sensitivity at every candidate."""

    layer: str
    form: str
    bits: int
    weights: int
    sensitivity: dict[str, float]


def trial_weight(w: np.ndarray, form: str, granularity: str = "per_channel") -> np.ndarray:
    """The weight a layer computes with at ``form`` (float32, canonical layout): ``w`` itself for
    ``float``, else ``quantize_as(w, form, granularity).dequantize()``.

    >>> trial_weight(np.array([[0.5, -1.0]], np.float32), "int2").tolist()  # 0.5 rounds half to even
    [[0.0, -1.0]]
    """
    w = np.asarray(w, dtype=np.float32)
    return w if form == "float" else quantize_as(w, form, granularity).dequantize()


def weight_errors(weights: Mapping[str, np.ndarray], granularity: str = "per_channel") -> dict[str, dict[str, float]]:
    """The data-free sensitivity: layer -> form -> ``sum((w - trial_weight)^2)`` in float64."""
    out = {}
    for name, w in weights.items():
        w = np.asarray(w, dtype=np.float32)
        row = {}
        for form, _ in CANDIDATES:
            d = w.astype(np.float64) - trial_weight(w, form, granularity).astype(np.float64)
            row[form] = float(np.sum(d * d))
        out[name] = row
    return out


def round_sig(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant decimal digits (0 stays 0).

    >>> round_sig(0.000123456), round_sig(98765.4)
    (0.0001235, 98770.0)
    """
    return 0.0 if x == 0 else float(f"{float(x):.{digits - 1}e}")


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


#: KL below this is 0: float64 rounding noise of equal distributions (about 1e-17), not a change.
_KL_FLOOR = 1e-12


def kl_sensitivity(reference: np.ndarray, trial: np.ndarray) -> float:
    """Mean over rows of ``KL(softmax(reference) || softmax(trial))`` (float64 log-softmax; below
    ``1e-12`` it is 0, else rounded by :func:`round_sig`): how far one layer's quantization
    moves the outputs.

    >>> kl_sensitivity(np.array([[2.0, 0.0]]), np.array([[2.0, 0.0]]))
    0.0
    >>> kl_sensitivity(np.array([[2.0, 0.0]]), np.array([[0.0, 0.0]]))
    0.3278
    """
    ref, got = _log_softmax(reference), _log_softmax(trial)
    if ref.shape != got.shape or ref.ndim != 2:
        raise ValueError(f"logits of shapes {ref.shape} and {got.shape}: expected two equal (images, classes)")
    kl = float(np.mean(np.sum(np.exp(ref) * (ref - got), axis=1))) if len(ref) else 0.0
    return 0.0 if kl < _KL_FLOOR else round_sig(kl)


def choose_bits(
    weights: Mapping[str, np.ndarray],
    budget: float,
    granularity: str = "per_channel",
    sensitivity: Optional[Mapping[str, Mapping[str, float]]] = None,
) -> list[LayerChoice]:
    """The form of each layer (in the given order) under an average of ``budget`` bits per weight.

    Args:
        weights: layer -> canonical weight (its size is the layer's cost per bit).
        budget: average bits per weight, at least 1.
        granularity: of the candidates' quantization (for the weight-error fallback).
        sensitivity: layer -> form -> measured sensitivity (:func:`kl_sensitivity`; a missing
            ``float`` is 0); None: the squared weight error (:func:`weight_errors`).

    Raises:
        ValueError: a budget below 1 (binary everywhere), no layers, or a sensitivity missing a
            layer or form.

    >>> w = {"a": np.linspace(-1, 1, 64, dtype=np.float32).reshape(4, 16), "b": np.ones((2, 8), np.float32)}
    >>> [(c.layer, c.form) for c in choose_bits(w, 4)]
    [('a', 'int4'), ('b', 'binary')]
    >>> s = {"a": {"binary": 1.0, "int2": 0.5, "int4": 0.01, "int8": 0.0}, "b": {"binary": 9.0, "int2": 2.0, "int4": 1.0, "int8": 0.0}}
    >>> [(c.layer, c.form) for c in choose_bits(w, 4, sensitivity=s)]
    [('a', 'int2'), ('b', 'int8')]
    """
    if budget < 1:
        raise ValueError(f"budget {budget} is below 1 bit per weight (binary everywhere)")
    if not weights:
        raise ValueError("quantize auto needs at least one layer")
    names = list(weights)
    sizes = {n: int(np.size(weights[n])) for n in names}
    if sensitivity is None:
        sens = weight_errors(weights, granularity)
    else:
        sens = {}
        for n in names:
            row = sensitivity.get(n)
            if row is None or any(f not in row for f in TRIAL_FORMS):
                raise ValueError(f"the sensitivity has no value for every candidate of layer {n!r}")
            sens[n] = {f: float(row.get(f, 0.0)) for f, _ in CANDIDATES}
    allowed = float(budget) * sum(sizes.values())
    # exact: the Pareto frontier of (cost, total sensitivity) over the layers so far
    frontier: list[tuple[float, float, tuple[int, ...]]] = [(0.0, 0.0, ())]
    for n in names:
        grown = [
            (cost + sizes[n] * bits, total + sens[n][form], levels + (j,))
            for cost, total, levels in frontier
            for j, (form, bits) in enumerate(CANDIDATES)
            if cost + sizes[n] * bits <= allowed
        ]
        grown.sort()
        frontier = []
        for point in grown:  # keep a point only if it is below every cheaper one
            if not frontier or point[1] < frontier[-1][1]:
                frontier.append(point)
    _, _, best = min(frontier, key=lambda p: (p[1], p[0], p[2]))
    level = dict(zip(names, best))
    return [LayerChoice(n, CANDIDATES[level[n]][0], CANDIDATES[level[n]][1], sizes[n], sens[n]) for n in names]


def choice_notes(choices: list[LayerChoice], budget: float, measure: str = "weight_error", images: int = 0) -> dict:
    """What a step reports of its choice: the budget, the average bits reached, the sensitivity
    measure (``kl`` on ``images`` calibration images, or ``weight_error``) and a row per layer
    (form, bits, weights, sensitivity at every candidate)."""
    total = sum(c.weights for c in choices)
    return {
        "budget": float(budget),
        "average_bits": sum(c.bits * c.weights for c in choices) / total,
        "sensitivity": measure,
        "calibration_images": int(images),
        "layers": [
            {"layer": c.layer, "form": c.form, "bits": c.bits, "weights": c.weights, "sensitivity": dict(c.sensitivity)}
            for c in choices
        ],
    }


def auto_forms(
    weights: Mapping[str, np.ndarray], budget: float, granularity: str = "per_channel", measured: Optional[dict] = None
) -> tuple[dict[str, str], dict]:
    """``quantize auto`` in one call, for both backends: (layer -> form, the step's
    ``auto_bits`` notes) from :func:`choose_bits` on the canonical weights and the sensitivity a
    backend measured (``measured``: ``{"sensitivity": ..., "images": N}``), or the weight error
    when it measured none."""
    choices = choose_bits(weights, float(budget), granularity, measured["sensitivity"] if measured else None)
    notes = choice_notes(choices, float(budget), "kl" if measured else "weight_error", measured["images"] if measured else 0)
    return {c.layer: c.form for c in choices}, notes

