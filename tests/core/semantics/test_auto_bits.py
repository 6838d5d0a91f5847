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
            assert c.sensitivity[c.form] == pytest.approx(float(np.sum(d * d)), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 5))
def test_more_budget_never_costs_more_error(seed, count):
    layers = _layers(seed, count)
    errs = []
    for budget in (1, 2, 4, 8, 32):
        choices = A.choose_bits(layers, budget)
        errs.append(sum(c.sensitivity[c.form] for c in choices))
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
        assert sum(c.sensitivity[c.form] for c in choices) <= uniform(form)
    assert sum(c.sensitivity[c.form] for c in A.choose_bits(layers, 2)) < uniform("int2")


def test_bad_budgets_and_no_layers():
    with pytest.raises(ValueError, match="below 1 bit"):
        A.choose_bits({"a": np.ones((2, 2), np.float32)}, 0.5)
    with pytest.raises(ValueError, match="at least one layer"):
        A.choose_bits({}, 4)
    notes = A.choice_notes(A.choose_bits({"a": np.ones((2, 2), np.float32)}, 4), 4)
    assert notes["average_bits"] <= 4 and notes["layers"][0]["layer"] == "a"


def test_kl_sensitivity_is_the_mean_kl_to_the_reference_rounded():
    rng = np.random.default_rng(1)
    ref, got = rng.standard_normal((32, 10)), rng.standard_normal((32, 10))
    p, q = np.exp(ref) / np.exp(ref).sum(1, keepdims=True), np.exp(got) / np.exp(got).sum(1, keepdims=True)
    want = float(np.mean(np.sum(p * np.log(p / q), axis=1)))
    assert A.kl_sensitivity(ref, got) == A.round_sig(want) == pytest.approx(want, rel=1e-3)
    assert A.kl_sensitivity(ref, ref) == 0.0 and A.kl_sensitivity(ref + 5.0, ref) == 0.0  # shift-invariant
    assert A.kl_sensitivity(np.array([[1e4, 0.0]]), np.array([[0.0, 1e4]])) > 0  # no overflow
    with pytest.raises(ValueError, match="expected two equal"):
        A.kl_sensitivity(ref, got[:3])


def test_measured_sensitivity_decides_not_the_weight_error():
    rng = np.random.default_rng(0)
    w = {"a": rng.standard_normal((8, 100)).astype(np.float32), "b": rng.standard_normal((8, 100)).astype(np.float32)}
    # the same weights' errors, but the outputs care about b only
    sens = {"a": {"binary": 1e-4, "int2": 5e-5, "int4": 1e-5, "int8": 0.0},
            "b": {"binary": 2.0, "int2": 0.9, "int4": 0.05, "int8": 0.001}}
    forms = {c.layer: c.form for c in A.choose_bits(w, 4.5, sensitivity=sens)}
    assert forms == {"a": "binary", "b": "int8"}
    chosen = A.choose_bits(w, 4.5, sensitivity=sens)
    assert chosen == A.choose_bits(w, 4.5, sensitivity=sens) and chosen[1].sensitivity["float"] == 0.0
    with pytest.raises(ValueError, match="every candidate of layer 'b'"):
        A.choose_bits(w, 4, sensitivity={"a": sens["a"], "b": {"binary": 1.0}})


def test_ties_go_to_the_lower_cost_then_lower_forms_on_earlier_layers():
    w = {"a": np.ones((2, 8), np.float32), "b": np.ones((2, 8), np.float32)}
    same = {"binary": 1.0, "int2": 0.5, "int4": 0.25, "int8": 0.0}
    forms = [c.form for c in A.choose_bits(w, 1.5, sensitivity={"a": same, "b": same})]
    assert forms == ["binary", "int2"]  # 16*1 + 16*2 = 48 = 1.5 * 32: equal totals, the lower forms first
    forms = [c.form for c in A.choose_bits(w, 2.5, sensitivity={"a": same, "b": same})]
    assert forms == ["int2", "int2"]  # total 1.0, below int4 + binary (1.25); int4 + int2 (0.75) costs 96 > 80
    cheap = {"binary": 1.0, "int2": 0.5, "int4": 0.5, "int8": 0.5}
    assert [c.form for c in A.choose_bits(w, 8, sensitivity={"a": cheap, "b": same})] == ["int2", "int8"]  # lower cost


def test_notes_name_the_measure():
    w = {"a": np.ones((2, 2), np.float32)}
    s = {"a": {"binary": 1.0, "int2": 0.5, "int4": 0.1, "int8": 0.0}}
    notes = A.choice_notes(A.choose_bits(w, 8, sensitivity=s), 8, "kl", 256)
    assert notes["sensitivity"] == "kl" and notes["calibration_images"] == 256
    assert notes["layers"][0]["sensitivity"]["int4"] == 0.1 and notes["layers"][0]["form"] == "int8"


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.sampled_from([1.5, 2, 3, 4, 6]))
def test_the_choice_is_the_exact_optimum_and_never_worse_than_uniform(seed, count, budget):
    import itertools

    rng = np.random.default_rng(seed)
    layers = {f"l{i}": np.zeros((int(rng.integers(1, 6)), int(rng.integers(1, 9))), np.float32) for i in range(count)}
    sens = {n: dict(zip(A.TRIAL_FORMS, sorted(rng.uniform(0, 1, 4).round(3), reverse=True))) for n in layers}
    choices = A.choose_bits(layers, budget, sensitivity=sens)
    got = sum(c.sensitivity[c.form] for c in choices)
    size = {n: w.size for n, w in layers.items()}
    allowed = budget * sum(size.values())
    best = min(
        sum(sens[n].get(f, 0.0) for n, (f, _) in zip(layers, combo))
        for combo in itertools.product(A.CANDIDATES, repeat=count)
        if sum(size[n] * b for n, (_, b) in zip(layers, combo)) <= allowed
    )
    assert got == pytest.approx(best, abs=1e-12)
    for form, bits in A.CANDIDATES:  # uniform at no more bits is an assignment the optimum considered
        if bits <= budget:
            assert got <= sum(sens[n].get(form, 0.0) for n in layers) + 1e-12
