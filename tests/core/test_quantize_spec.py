"""The ``quantize`` spec's low-bit forms and the exports that cannot hold them (no framework)."""

from __future__ import annotations

import pytest

import lwdsl
from lwdsl.errors import RecipeError
from lwdsl.language.specs import QuantizeSpec
from lwdsl.language.validate import check_backend


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


def test_cluster_is_a_low_bit_form_with_bits_and_one_codebook_per_layer():
    (step,) = lwdsl.parse("quantize cluster").steps
    assert (step.bits, step.granularity, step.weights_only, step.forms()) == (4, "per_tensor", True, ("cluster/weights_only",))
    (step,) = lwdsl.parse("quantize cluster bits=3 mode=qat epochs=2 on linear").steps
    assert (step.bits, step.forms()) == (3, ("cluster/qat",))
    with pytest.raises(RecipeError, match="granularity=per_channel does not apply"):
        lwdsl.parse("quantize cluster granularity=per_channel")
    with pytest.raises(RecipeError, match="bits= goes only with quantize cluster"):
        lwdsl.parse("quantize int4 bits=4")
    for bad in ("1", "9"):
        with pytest.raises(RecipeError, match="bits"):
            lwdsl.parse(f"quantize cluster bits={bad}")
    with pytest.raises(RecipeError, match="mode=static needs int8 activations"):
        lwdsl.parse("quantize cluster mode=static")


def test_cluster_bits_default_is_the_same_from_text_and_from_python():
    """A spec built in Python with ``bits=None`` (the field's default) means the parser's 4, so
    it prints and parses back to itself (found by the text round-trip property test)."""
    from lwdsl.language.specs.quantize import QuantizeSpec

    spec = QuantizeSpec(dtype="cluster", bits=None)
    assert spec.bits == 4
    (parsed,) = lwdsl.parse(lwdsl.Recipe(steps=(spec,)).to_text()).steps
    assert parsed == spec


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_check_backend_refuses_an_export_that_cannot_hold_cluster(fmt):
    """The QDQ ONNX and TFLite files hold int8 codes: a codebook does not fit; the float formats do."""
    with pytest.raises(RecipeError) as err:
        lwdsl.parse(f"prune l1 0.5\nquantize cluster bits=4\nexport {fmt}")
    text = str(err.value)
    assert ":3:1:" in text and "cannot hold cluster weights" in text and "export torch" in text
    for backend, ok in (("torch", "torch"), ("tensorflow", "keras")):
        check_backend(lwdsl.parse(f"prune l1 0.5 | quantize cluster bits=4 | finetune epochs=1 | export {ok}"), backend, load=False)


def test_gptq_and_groups_as_the_language_reads_them():
    (gptq,) = lwdsl.parse('quantize int4 method=gptq group=32 except "lm_head"').steps
    assert (gptq.method, gptq.group, gptq.weights_only, gptq.calibration_count(), gptq.damp, gptq.block) == ("gptq", 32, True, 128, 0.01, 128)
    assert gptq.forms() == ("int4/weights_only", "gptq", "group") and gptq.layer_kinds() == ("linear",)
    assert gptq.effective_selector().on == ("linear",)  # the default selector is linear layers, except too
    (int8,) = lwdsl.parse("quantize int8 method=gptq calibrate=64 damp=0.05 block=64").steps
    assert int8.weights_only and int8.forms() == ("int8/weights_only", "gptq") and int8.calibration_count() == 64
    (rtn,) = lwdsl.parse("quantize int4 group=64").steps
    assert rtn.method == "rtn" and rtn.forms() == ("int4/weights_only", "group") and rtn.calibration_count() == 256
    (plain,) = lwdsl.parse("quantize int4").steps
    assert plain.layer_kinds() is None and plain.effective_selector().on == ("conv", "linear") and plain.forms() == ("int4/weights_only",)


@pytest.mark.parametrize("text, words", [
    ("quantize ternary method=gptq", "method=gptq chooses integer codes: it goes with int8, int4, int2, not quantize ternary"),
    ("quantize cluster group=32", "group= chooses integer codes"),
    ("quantize int8 method=gptq mode=static", "method=gptq quantizes weights only (activations stay float): mode=static does not apply"),
    ("quantize int4 group=32 mode=qat", "group=32 quantizes weights only"),
    ("quantize int4 group=32 granularity=per_tensor", "granularity=per_tensor does not apply"),
    ("quantize int4 damp=0.1", "damp= only applies to quantize ... method=gptq"),
    ("quantize int4 method=gptq on conv", "`on conv`: method=gptq and group= work on linear layers"),
    ("quantize int4 group=0", "group"),
    ("quantize int8 group=32 | export onnx", "cannot hold group=32 scales"),
])
def test_gptq_and_group_refusals(text, words):
    with pytest.raises(RecipeError) as err:
        lwdsl.parse(text)
    assert words in str(err.value)


def test_both_backends_take_gptq_and_groups_up_front():
    for text, forms in (("quantize int4 method=gptq", ("int4/weights_only", "gptq")),
                        ("quantize int4 group=32", ("int4/weights_only", "group")),
                        ("quantize int8 method=gptq group=64", ("int8/weights_only", "gptq", "group"))):
        (step,) = lwdsl.parse(text).steps
        assert step.forms() == forms
        for backend in ("torch", "tensorflow"):
            check_backend(lwdsl.parse(text), backend, load=False)


def test_grid_full_as_the_language_reads_it():
    (step,) = lwdsl.parse("quantize int4 method=gptq group=32 grid=full").steps
    assert step.grid == "full" and step.weights_only and step.forms() == ("int4/weights_only", "gptq", "group", "full_grid")
    (int8,) = lwdsl.parse("quantize int8 grid=full").steps  # weights only, as group= makes it
    assert int8.weights_only and int8.forms() == ("int8/weights_only", "full_grid")
    (plain,) = lwdsl.parse("quantize int2").steps
    assert plain.grid == "narrow" and plain.forms() == ("int2/weights_only",)  # narrow stays the default
    assert lwdsl.parse("quantize int8 grid=narrow mode=static").steps[0].mode == "static"
    for backend in ("torch", "tensorflow"):
        check_backend(lwdsl.parse("quantize int4 group=32 grid=full"), backend, load=False)


@pytest.mark.parametrize("text, words", [
    ("quantize int8 grid=full mode=static", "grid=full quantizes weights only: mode=static needs int8 activation kernels"),
    ("quantize int8 grid=full mode=dynamic", "mode=dynamic needs int8 activation kernels"),
    ("quantize int4 grid=full mode=qat", "mode=qat is built on the narrow grid only"),
    ("quantize ternary grid=full", "grid= chooses the range of integer codes: it goes with int8, int4, int2, not quantize ternary"),
    ("quantize binary grid=full", "not quantize binary"),
    ("quantize cluster grid=full", "not quantize cluster"),
    ("quantize fp16 grid=narrow", "not quantize fp16"),
    ("quantize auto budget=4 grid=full", "not quantize auto"),
    ("quantize int4 grid=wide", "grid"),
    ("quantize int8 grid=full | export onnx", "cannot hold grid=full codes (-128)"),
    ("quantize int8 grid=full | export tflite", "cannot hold grid=full codes"),
])
def test_grid_refusals(text, words):
    with pytest.raises(RecipeError) as err:
        lwdsl.parse(text)
    assert words in str(err.value)
