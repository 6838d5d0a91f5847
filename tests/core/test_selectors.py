"""Selectors against a model's layers."""

from __future__ import annotations

import pytest

import lwdsl
from lwdsl.backend import LayerInfo
from lwdsl.errors import RecipeError
from lwdsl.language.selectors import layer_list, match_layers

LAYERS = [
    LayerInfo("features.0", "conv", (6, 1, 5, 5), 156),
    LayerInfo("features.1", "norm", (6,), 12),
    LayerInfo("features.3", "conv", (16, 6, 5, 5), 2416),
    LayerInfo("fc1", "linear", (120, 256), 30840),
    LayerInfo("fc2", "linear", (10, 120), 1210),
    LayerInfo("emb", "embedding", (100, 8), 800),
]


def select(text: str) -> list[str]:
    (step,) = lwdsl.parse(text).steps
    return match_layers(step.effective_selector(), LAYERS, step_label="step 1", location=None)


@pytest.mark.parametrize(
    "text, names",
    [
        ("prune l1 0.2", ["features.0", "features.3", "fc1", "fc2"]),
        ("prune l1 0.2 on linear, conv", ["features.0", "features.3", "fc1", "fc2"]),
        ('prune l1 0.2 on "fc*"', ["fc1", "fc2"]),
        ('prune l1 0.2 on "features.?" except norm', ["features.0", "features.3"]),
        ('prune l1 0.2 on all except "fc2", embedding', ["features.0", "features.1", "features.3", "fc1"]),
        ("finetune", [layer.name for layer in LAYERS]),
        ("prune l1 0.2 on embedding expect=1", ["emb"]),
        ("prune l1 0.2 on conv expect>=2", ["features.0", "features.3"]),
    ],
)
def test_matches_in_model_order(text: str, names: list[str]) -> None:
    assert select(text) == names


@pytest.mark.parametrize(
    "text, message, expected",
    [
        ('prune l1 0.2 on "conv*"', '`on "conv*"` matches no layer', "a selector matching some of"),
        ("prune l1 0.2 on linear except linear", "matches no layer", "fc1 (linear)"),
        ("prune l1 0.2 on conv expect=3", "`on conv expect=3` matches 2 layers", "exactly 3"),
        ("prune l1 0.2 on linear expect>=3", "matches 2 layers", "at least 3"),
    ],
)
def test_no_silent_no_op(text: str, message: str, expected: str) -> None:
    with pytest.raises(RecipeError) as info:
        select(text)
    assert message in info.value.message and info.value.message.startswith("step 1: ")
    assert expected in info.value.expected


def test_layer_list_is_truncated() -> None:
    many = [LayerInfo(f"l{i}", "linear", (1, 1), 2) for i in range(20)]
    assert layer_list(many, limit=3) == "l0 (linear), l1 (linear), l2 (linear) ... and 17 more"
    assert layer_list([]) == "no layers with weights"
