"""The ``quantize`` spec's low-bit forms and the exports that cannot hold them (no framework)."""

from __future__ import annotations

import pytest

import lwdsl
from lwdsl.errors import RecipeError
from lwdsl.specs import QuantizeSpec
from lwdsl.validate import check_backend


@pytest.mark.parametrize("dtype", ["int4", "int2", "ternary", "binary"])
def test_low_bit_defaults_to_weights_only_and_qat_is_a_form(dtype):
    (step,) = lwdsl.parse(f"quantize {dtype}").steps
    assert step.weights_only and step.forms() == (f"{dtype}/weights_only",)
    (step,) = lwdsl.parse(f"quantize {dtype} mode=qat epochs=3").steps
    assert not step.weights_only and step.forms() == (f"{dtype}/qat",) and step.epochs == 3
    assert QuantizeSpec(dtype="int8").forms() == ("int8/static",)  # int8: calibrated by default
    for backend in ("torch", "tensorflow"):
        check_backend(lwdsl.parse(f"quantize {dtype} | export {'torch' if backend == 'torch' else 'keras'}"), backend, load=False)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_low_bit_with_activation_modes_is_refused_with_what_to_write(mode):
    with pytest.raises(RecipeError) as err:
        lwdsl.parse(f"quantize ternary mode={mode}")
    text = str(err.value)
    assert f"mode={mode} needs int8 activations" in text and "quantize ternary mode=qat" in text and ":1:" in text


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
@pytest.mark.parametrize("dtype", ["int4", "int2", "ternary", "binary"])
def test_an_export_that_cannot_hold_the_form_is_refused(fmt, dtype):
    recipe = f"quantize int8 on conv\nquantize {dtype} on linear\nexport {fmt}"
    with pytest.raises(RecipeError) as err:
        lwdsl.parse(recipe)
    text = str(err.value)
    assert ":3:1:" in text and f"cannot hold {dtype} weights" in text and "step 2 `quantize" in text
    assert "export torch" in text and "model.lwz" in text
    lwdsl.parse(f"quantize int8 on conv\nquantize {dtype} on linear\nexport torch")
    lwdsl.parse(f"quantize int8\nexport {fmt}")  # int8 fits both


@pytest.mark.parametrize("budget,ok", [(0.5, False), (1, True), (4, True), (32, True), (33, False)])
def test_auto_budget_is_between_binary_and_float(budget, ok):
    if ok:
        assert QuantizeSpec(dtype="auto", budget=budget).budget == budget
    else:
        with pytest.raises(RecipeError, match="budget"):
            lwdsl.parse(f"quantize auto budget={budget}")


def test_auto_is_weights_only_by_default_refuses_activation_modes_and_onnx():
    (step,) = lwdsl.parse("quantize auto budget=4").steps
    assert step.weights_only and step.forms() == ("auto",)
    with pytest.raises(RecipeError, match="mode=static needs int8 activations"):
        lwdsl.parse("quantize auto budget=4 mode=static")
    with pytest.raises(RecipeError, match="cannot hold auto weights"):
        lwdsl.parse("quantize auto budget=4 | export onnx")
    assert lwdsl.parse("quantize auto budget=4 mode=qat epochs=2").steps[0].forms() == ("auto",)
