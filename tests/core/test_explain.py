"""`lwdsl explain`: the plan in words."""

from __future__ import annotations

import re

import pytest

import lwdsl
from lwdsl.backend import LayerInfo
from lwdsl.errors import RecipeError
from lwdsl.cli.explain import explain_recipe


def test_defaults_are_explicit_and_irrelevant_fields_hidden() -> None:
    text = explain_recipe(lwdsl.parse('recipe "r"\nlet a = 0.2\nprune l1 $a | quantize int8 mode=static'))
    assert 'recipe "r"' in text and "variable a = 0.2" in text and "2 steps, run in order:" in text
    assert "1. prune l1 0.2" in text and "scope = layer (default)" in text and "amount = 0.2 " in text
    assert "structured = none (default)" in text and "schedule = oneshot (default)" in text
    assert "start =" not in text and "frequency =" not in text
    assert re.search(r"layers: on conv, linear +the default of prune", text)
    assert "epochs" not in text.split("2. quantize")[0]  # training options: only with schedule=gradual
    quantize = text.split("2. quantize")[1]
    assert "calibrate = 256 (default)" in quantize and "static: calibration samples" in quantize
    assert "budget =" not in quantize and "epochs =" not in quantize


def test_mode_fields_show_when_their_mode_is_chosen() -> None:
    text = explain_recipe(lwdsl.parse("prune l1 0.9 epochs=4 schedule=gradual"))
    assert "start = 0 (default)" in text and "frequency = 100 (default)" in text and "epochs = 4 " in text


LAYERS = [LayerInfo("conv1", "conv", (6, 1, 5, 5), 156), LayerInfo("fc1", "linear", (10, 84), 850)]


def test_with_layers_each_step_lists_its_layers() -> None:
    text = explain_recipe(lwdsl.parse("prune l1 0.2 on linear | finetune"), LAYERS)
    prune, finetune = text.split("2. finetune")
    assert "matches 1 layer, 850 parameters:" in prune and "fc1" in prune and "conv1" not in prune
    assert "matches 2 layers, 1,006 parameters:" in finetune and "6x1x5x5" in finetune


def test_with_layers_a_selector_matching_nothing_is_an_error() -> None:
    with pytest.raises(RecipeError, match="matches no layer"):
        explain_recipe(lwdsl.parse("prune l1 0.2 on embedding"), LAYERS)
