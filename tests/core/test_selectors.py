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


#: The layers of tiny-llama as the torch backend lists them (transformers' own names).
LLAMA = [
    LayerInfo("model.embed_tokens", "embedding", (2048, 128), 262144),
    *[
        LayerInfo(f"model.layers.{i}.{part}", kind, shape, params)
        for i in range(2)
        for part, kind, shape, params in [
            ("self_attn.q_proj", "linear", (128, 128), 16384),
            ("self_attn.k_proj", "linear", (128, 128), 16384),
            ("self_attn.v_proj", "linear", (128, 128), 16384),
            ("self_attn.o_proj", "linear", (128, 128), 16384),
            ("mlp.gate_proj", "linear", (512, 128), 65536),
            ("mlp.up_proj", "linear", (512, 128), 65536),
            ("mlp.down_proj", "linear", (128, 512), 65536),
            ("input_layernorm", "norm", (128,), 128),
            ("post_attention_layernorm", "norm", (128,), 128),
        ]
    ],
    LayerInfo("model.norm", "norm", (128,), 128),
    LayerInfo("lm_head", "linear", (2048, 128), 262144),
]


def select_llama(text: str) -> list[str]:
    (step,) = lwdsl.parse(text).steps
    return match_layers(step.effective_selector(), LLAMA, step_label="step 1", location=None)


def test_except_lm_head_keeps_the_head_out() -> None:
    picked = select_llama('prune sparsegpt 50% nm=2:4 except "lm_head"')
    assert "lm_head" not in picked and len(picked) == 14
    assert all(name.startswith("model.layers.") for name in picked)


@pytest.mark.parametrize(
    "text, names",
    [
        ('prune wanda 50% on "*.mlp.*"', [f"model.layers.{i}.mlp.{p}_proj" for i in range(2) for p in ("gate", "up", "down")]),
        ('prune wanda 50% on "*self_attn.q_proj", "*self_attn.k_proj"',
         [f"model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in ("q", "k")]),
        ('prune l1 50% on "model.layers.0.self_attn.q_proj"', ["model.layers.0.self_attn.q_proj"]),
        ('prune l1 50% on embedding, "lm_head"', ["model.embed_tokens", "lm_head"]),
        ('prune wanda 50% on linear except "model.layers.1.*", "lm_head"',
         [f"model.layers.0.{p}" for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]),
    ],
)
def test_transformer_modules_by_name(text: str, names: list[str]) -> None:
    assert select_llama(text) == names


@pytest.mark.parametrize(
    "text, message, found",
    [  # the llm-compressor failure: an ignore list that ignores nothing, silently
        ('prune sparsegpt 50% except "lm_haed"', '`except "lm_haed"` matches no layer of the model', '"lm_haed"'),
        ('prune wanda 50% on "mlp.*"', '`on "mlp.*"` matches no layer of the model', '"mlp.*"'),
        ('prune wanda 50% on "*.mlp.*" except "lm_head"', '`except "lm_head"` removes nothing', "lm_head (linear)"),
    ],
)
def test_a_name_that_matches_nothing_is_refused(text: str, message: str, found: str) -> None:
    with pytest.raises(RecipeError) as info:
        select_llama(text)
    assert info.value.message.startswith("step 1: ") and message in info.value.message
    assert info.value.found == found


def test_a_misspelt_head_gets_a_did_you_mean() -> None:
    with pytest.raises(RecipeError) as info:
        select_llama('prune wanda 50% except "lm_haed"')
    assert 'did you mean "lm_head"?' in info.value.hint
