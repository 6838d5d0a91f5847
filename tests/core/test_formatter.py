"""Canonical text of plans, and `lwdsl fmt` of source text."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import pytest

import lwdsl
from lwdsl.errors import RecipeError
from lwdsl.language.formatter import format_source, step_to_text, value_to_text
from lwdsl.language.plan import Recipe
from lwdsl.language.specs import ExportSpec, FeaturePair, Glob, NMRatio, PruneSpec, StepSpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "value, text",
    [
        (True, "true"),
        (3, "3"),
        (2.0, "2"),
        (0.2, "0.2"),
        (1e-05, "1e-05"),
        ("l1", "l1"),
        ("a.pt", "a.pt"),
        ("on", '"on"'),
        ("two words", '"two words"'),
        ('q"\\\n', '"q\\"\\\\\\n"'),
        (NMRatio(n=2, m=4), "2:4"),
        (FeaturePair(teacher="a", student="b c"), 'a->"b c"'),
        (Glob(glob="fc*"), '"fc*"'),
        (("a", 1), "[a, 1]"),
        ({"n": 1, "m": 4}, "1:4"),
    ],
)
def test_values(value, text: str) -> None:
    assert value_to_text(value) == text


@pytest.mark.parametrize(
    "written, canonical",
    [
        ("prune l1 20% scope=global", "prune global l1 0.2"),
        ("prune amount=0.2", "prune 0.2"),
        ("prune  method = l1 0.2", "prune l1 0.2"),
        ('prune 0.5 except "fc3"', 'prune 0.5 on conv, linear except "fc3"'),
        ("quantize weights_only int4 on linear expect>=1", "quantize int4 weights_only=true on linear expect>=1"),
        ("prune l1 0.9 schedule=gradual epochs=1", "prune l1 0.9 epochs=1 schedule=gradual"),
        ('export path="x y.onnx" onnx', 'export onnx "x y.onnx"'),
        ("distill alpha=0.5 T=2", "distill T=2 alpha=0.5"),
    ],
)
def test_step_to_text(written: str, canonical: str) -> None:
    (step,) = lwdsl.parse(written).steps
    assert step_to_text(step) == canonical


class _Two(StepSpec):
    """Two positional fields of the same type: a value for the second alone must be keyed."""

    positional: ClassVar[tuple[str, ...]] = ("a", "b")
    op: Literal["two"] = "two"
    a: str = "x"
    b: str = "y"


def test_a_positional_value_an_earlier_field_would_take_is_written_as_an_option() -> None:
    assert step_to_text(_Two(b="z")) == "two b=z"
    assert step_to_text(_Two(a="z")) == "two z"
    assert step_to_text(ExportSpec(format="onnx", path="onnx")) == "export onnx onnx"


def test_none_is_never_written() -> None:
    step = PruneSpec.model_validate({"op": "prune", "amount": 0.2, "nm": None})
    assert step_to_text(step) == "prune 0.2"


def test_recipe_to_text_layout() -> None:
    recipe = lwdsl.parse('let a = 0.3\nrecipe "r"\ntarget m on d\nlwdsl 1\nprune l1 $a | quantize int8 # c')
    assert recipe.to_text() == 'lwdsl 1\nrecipe "r"\ntarget m on d\nlet a = 0.3\n\nprune l1 0.3\nquantize int8\n'
    assert Recipe().to_text() == "\n"


SOURCE = """\
# A recipe, untidily written.
lwdsl 1   # version
let amount = 20%
prune  $amount l1 on conv expect=2 scope = layer | finetune  epochs=2   # tune


# the end of the pipeline
| quantize weights_only int8 on linear
# trailing comment
"""

FORMATTED = """\
# A recipe, untidily written.
lwdsl 1  # version
let amount = 20%

prune $amount l1 scope=layer on conv expect=2
finetune epochs=2  # tune

# the end of the pipeline
quantize int8 weights_only on linear
# trailing comment
"""


def test_format_source_keeps_comments_and_values_as_written() -> None:
    assert format_source(SOURCE) == FORMATTED
    assert format_source(FORMATTED) == FORMATTED
    assert lwdsl.parse(FORMATTED) == lwdsl.parse(SOURCE)


def test_format_source_does_not_compile() -> None:
    assert format_source('use "elsewhere.lw"\nfrobnicate x=$y') == 'use "elsewhere.lw"\n\nfrobnicate x=$y\n'
    assert format_source("") == "" and format_source("# only\n\n") == "# only\n"
    with pytest.raises(RecipeError, match="syntax error"):
        format_source("prune l1 0.2 |")


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").rglob("*.lw")), ids=lambda p: p.name)
def test_recipes_are_formatted(path: Path) -> None:
    text = path.read_text()
    assert format_source(text) == text
