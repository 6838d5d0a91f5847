"""Recipes as JSON: round trip, and errors as RecipeErrors naming the JSON path."""

from __future__ import annotations

import pytest

import lwdsl
from lwdsl.errors import RecipeError
from lwdsl.language.plan import Recipe


def test_round_trip_keeps_what_was_written() -> None:
    recipe = lwdsl.parse('recipe "r"\nlet a = 2:4\nprune nm=$a on linear | quantize int8 weights_only')
    again = Recipe.from_json(recipe.to_json())
    assert again == recipe and again.steps[1].model_fields_set == recipe.steps[1].model_fields_set


@pytest.mark.parametrize(
    "text, message, expected",
    [
        ('{"steps": [{"op": "prnue"}]}', "steps[0]: unknown operation `prnue`", "prune"),
        ('{"steps": [{"op": "distill", "T": 0}]}', "steps[0].T: `T` is out of range", "a number > 0 and <= 100"),
        ('{"steps": [{"op": "prune", "amount": 1.5}]}', "steps[0]: AMOUNT is a fraction", None),
        ('{"steps": [{"amount": 0.5}]}', 'steps[0]: a step needs "op"', "prune"),
        ('{"steps": [{"op": "prune", "amount": 0.2, "selector": {"on": ["convs"]}}]}', "selector.on[0]", "conv"),
        ('{"steps": [{"op": "quantize", "dtype": "int8"}, {"op": "quantize", "dtype": "int4"}]}', "quantized", None),
        ('{"stpes": []}', "stpes", None),
    ],
)
def test_errors(text: str, message: str, expected) -> None:
    with pytest.raises(RecipeError) as info:
        Recipe.from_json(text)
    assert message in info.value.message
    if expected:
        assert expected in str(info.value.expected)
    assert "http" not in info.value.render()


def test_bad_json_is_located() -> None:
    with pytest.raises(RecipeError) as info:
        Recipe.from_json('{"steps": [\n  {"op": }]}')
    assert "not valid JSON" in info.value.message and str(info.value.location) == "<json>:2:10"
