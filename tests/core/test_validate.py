"""Checks across steps, and against a backend."""

from __future__ import annotations

from typing import Optional

import pytest

import lwdsl
from lwdsl.errors import LwdslError, RecipeError
from lwdsl.language.specs import StepSpec
from lwdsl.language.validate import check_backend, overlap, step_label


@pytest.mark.parametrize(
    "text",
    [
        "quantize int8 on conv | quantize int4 on linear",
        'quantize int8 on "features.*" | quantize int4 on linear',
        "quantize int8 on all except linear | quantize int4 on linear",
        "prune l1 0.2 | finetune epochs=1 | quantize int8 | distill T=2",
        "quantize int8 mode=qat | prune l1 0.2 | finetune epochs=1 | regularize l1=0.001",
        "prune l1 0.2 | export onnx | export torch",
        "quantize int8 | distill T=2 student=seedcnn_student | export onnx",
        # training after an integer quantize runs through the quantizer (docs/semantics.md)
        "quantize int8 | finetune epochs=1",
        "quantize int8 on linear | regularize l1=0.001",
        "prune global l1 0.2 | quantize int8 | distill T=2 alpha=0.5",
        "quantize int8 mode=static | export tflite io=int8",
        "quantize int8 mode=qat | export tflite io=int8",
    ],
)
def test_steps_that_fit_together(text: str) -> None:
    lwdsl.parse(text)


@pytest.mark.parametrize(
    "text, message, step",
    [
        ("quantize int8 | quantize int4", "quantizes layers that step 1 `quantize int8` already quantized", 2),
        ("quantize int8 on conv | quantize int4 on all", "already quantized", 2),
        ('quantize int8 on "fc*" | quantize int4 on "fc*"', "already quantized", 2),
        ("quantize int8 | quantize int4 on linear", "already quantized", 2),
        ("quantize int8 mode=static | prune l1 0.2", "`prune` changes weights", 2),
        ("quantize fp16 | finetune", "`finetune` cannot train a model that step 1 `quantize fp16` cast", 2),
        ("quantize bf16 on linear | regularize l1=0.001", "`regularize` cannot train", 2),
        ("quantize int8 mode=dynamic | export tflite io=int8", "io=int8 needs a fully integer model", 2),
        ("quantize int8 mode=static weights_only=true | export tflite io=int8", "io=int8 needs", 2),
        ("export onnx | finetune", "comes after an export", 2),
        ("export onnx | export torch | quantize int8", "comes after an export", 3),
    ],
)
def test_steps_that_do_not(text: str, message: str, step: int) -> None:
    with pytest.raises(RecipeError) as info:
        lwdsl.parse(text, file="t.lw")
    assert message in info.value.message
    assert info.value.message.startswith(f"step {step} `")
    assert info.value.location.line == 1 and info.value.found.startswith("step ")


def test_overlap_is_judged_by_kind_and_glob() -> None:
    a, b, c = lwdsl.parse('quantize int8 on conv | quantize int4 on "x" | quantize int2 on linear').steps
    assert not overlap(a, b) and not overlap(a, c) and not overlap(b, c)
    assert overlap(a, a) and overlap(b, b)


def test_step_label_uses_the_text_as_written_or_canonical() -> None:
    recipe = lwdsl.parse("prune  l1   20%\n| quantize int8")
    assert step_label(recipe, 0) == "step 1 `prune l1 20%`"
    assert step_label(lwdsl.Recipe.from_json(recipe.to_json()), 0) == "step 1 `prune l1 0.2`"


def test_export_formats_are_checked_without_a_framework() -> None:
    recipe = lwdsl.parse("prune l1 0.2\nexport tflite", file="t.lw")
    with pytest.raises(RecipeError) as info:
        check_backend(recipe, "torch", load=False)
    err = info.value
    assert err.message == "step 2 `export tflite`: the torch backend cannot export tflite"
    assert str(err.location) == "t.lw:2:1" and err.expected == "torch, onnx, pt2e, or hf (what the torch backend runs of `export`)"
    assert err.hint == "run it with --backend tensorflow"
    with pytest.raises(RecipeError):
        check_backend(recipe, "pytorch", load=False)
    check_backend(recipe, "tf", load=False)
    check_backend(lwdsl.parse("export torch"), "torch", load=False)
    check_backend(lwdsl.parse("export onnx"), "torch", load=False)
    with pytest.raises(RecipeError, match="the tensorflow backend cannot export onnx"):
        check_backend(lwdsl.parse("export onnx"), "tensorflow", load=False)


class _Picky:
    """A backend object that cannot quantize."""

    name = "picky"

    def unsupported(self, step: StepSpec) -> Optional[str]:
        return "no quantization here" if step.op == "quantize" else None


def test_a_backend_object_is_asked_about_every_step() -> None:
    check_backend(lwdsl.parse("prune l1 0.2"), _Picky())
    with pytest.raises(RecipeError, match="the picky backend cannot run this step: no quantization here"):
        check_backend(lwdsl.parse("prune l1 0.2 | quantize int8"), _Picky())


def test_an_unknown_backend_name_is_an_error() -> None:
    with pytest.raises(LwdslError, match="unknown backend"):
        check_backend(lwdsl.parse("prune l1 0.2"), "jax", load=False)


@pytest.mark.parametrize("kind", ["norm", "embedding"])
@pytest.mark.parametrize("dtype", ["binary", "ternary", "int4", "int8"])
def test_quantize_on_a_kind_it_has_no_meaning_for_is_refused_with_what_to_write(dtype, kind):
    with pytest.raises(RecipeError) as err:
        lwdsl.parse(f"quantize {dtype} on {kind}, linear")
    text = str(err.value)
    assert f"`on {kind}`" in text and "quantize works on conv and linear layers" in text
    assert lwdsl.parse(f"quantize {dtype} on conv, linear")  # the same step on layers it means something for


# --- issue 27: whether a step trains is one fact, on the spec --------------------------------


@pytest.mark.parametrize(
    "text, trains",
    [
        ("finetune", True),
        ("regularize l1=1e-4", True),
        ("distill", True),
        ("prune l1 0.5 schedule=gradual epochs=2", True),
        ("prune l1 0.5", False),
        ("quantize int8 mode=qat", True),
        ("quantize int8", False),
        ("quantize fp16", False),
        ("export onnx", False),
    ],
)
def test_trains_is_a_fact_of_the_spec(text: str, trains: bool) -> None:
    assert lwdsl.parse(text).steps[0].trains() is trains


@pytest.mark.parametrize("cast", ["fp16", "bf16"])
@pytest.mark.parametrize("after", ["finetune", "regularize l1=1e-4", "distill", "distill T=2 alpha=0.5"])
def test_nothing_trains_after_a_cast(cast: str, after: str) -> None:
    with pytest.raises(RecipeError, match=f"cannot train a model that step 1 `quantize {cast}` cast to {cast}"):
        lwdsl.parse(f"quantize {cast} | {after}")
    lwdsl.parse(f"quantize int8 | {after}")  # an integer quantize: trained through the quantizer
