"""lwdsl.semantics.auto_bits: ``quantize auto``'s choice of bits per layer (framework-free)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwdsl.semantics import auto_bits as A
from lwdsl.semantics.quant import quantize_as


def _layers(seed: int, count: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(count):
        shape = (int(rng.integers(1, 9)), int(rng.integers(1, 40)))
        out[f"l{i}"] = (rng.standard_normal(shape) * rng.uniform(0.01, 2)).astype(np.float32)
    return out


def test_docstring_examples_run():
    assert doctest.testmod(A).failed == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.floats(1, 32))
def test_choice_keeps_the_budget_and_is_reproducible(seed, count, budget):
    layers = _layers(seed, count)
    choices = A.choose_bits(layers, budget)
    total = sum(c.weights for c in choices)
    assert [c.layer for c in choices] == list(layers)
    assert sum(c.bits * c.weights for c in choices) <= budget * total + 1e-9
    assert A.choose_bits(layers, budget) == choices  # same weights, same choice
    for c in choices:  # the errors are the core's quantizers' own
        w = layers[c.layer]
        if c.form != "float":
            d = w.astype(np.float64) - quantize_as(w, c.form).dequantize()
            assert c.errors[c.form] == pytest.approx(float(np.sum(d * d)), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 5))
def test_more_budget_never_costs_more_error(seed, count):
    layers = _layers(seed, count)
    errs = []
    for budget in (1, 2, 4, 8, 32):
        choices = A.choose_bits(layers, budget)
        errs.append(sum(c.errors[c.form] for c in choices))
    assert errs[-1] == 0.0 and all(a >= b for a, b in zip(errs, errs[1:]))


def test_sensitive_layers_get_more_bits_and_beat_uniform():
    rng = np.random.default_rng(0)
    layers = {"big": rng.standard_normal((50, 50)).astype(np.float32),  # large error per bit saved
              "tiny": (rng.standard_normal((50, 50)) * 1e-3).astype(np.float32)}
    forms = {c.layer: c.form for c in A.choose_bits(layers, 5)}
    assert forms == {"big": "int8", "tiny": "binary"}

    def uniform(form):
        return sum(float(np.sum((w - quantize_as(w, form).dequantize()) ** 2)) for w in layers.values())

    for budget, form in ((2, "int2"), (4, "int4")):  # never worse than uniform at the same bits
        choices = A.choose_bits(layers, budget)
        assert sum(c.errors[c.form] for c in choices) <= uniform(form)
    assert sum(c.errors[c.form] for c in A.choose_bits(layers, 2)) < uniform("int2")


def test_bad_budgets_and_no_layers():
    with pytest.raises(ValueError, match="below 1 bit"):
        A.choose_bits({"a": np.ones((2, 2), np.float32)}, 0.5)
    with pytest.raises(ValueError, match="at least one layer"):
        A.choose_bits({}, 4)
    notes = A.choice_notes(A.choose_bits({"a": np.ones((2, 2), np.float32)}, 4), 4)
    assert notes["average_bits"] <= 4 and notes["layers"][0]["layer"] == "a"
