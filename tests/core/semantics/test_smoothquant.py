"""SmoothQuant's numbers (lwdsl.semantics.smoothquant) and its pairs (lwdsl.backend.smoothquant):
the rule of docs/semantics.md, the float identity, and what it does to a planted outlier."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lwdsl.backend.smoothquant import pairs_refusal, smooth_pairs
from lwdsl.semantics.quant import act_qparams, fake_quantize
from lwdsl.semantics.smoothquant import FLOOR, column_absmax, smooth, smooth_bias, smooth_scales


def block(seed: int = 0, tokens: int = 400, hidden: int = 32, outliers: tuple[int, ...] = (), factor: float = 50.0):
    """Norm inputs, a norm weight and three following linears; ``outliers`` planted x``factor``
    in the norm weight and compensated in the linears' columns (the float function unchanged)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, hidden)).astype(np.float32)
    g = (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
    ws = [(rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32) for _ in range(3)]
    for j in outliers:
        g[j] *= np.float32(factor)
        for w in ws:
            w[:, j] /= np.float32(factor)
    return x, g, ws


def test_scales_follow_the_rule_in_float64_rounded_once() -> None:
    rng = np.random.default_rng(1)
    a, w = rng.random(16) * 10, rng.random(16)
    for alpha in (0.0, 0.3, 0.5, 0.85, 1.0):
        s = smooth_scales(a, w, alpha)
        assert s.dtype == np.float32
        assert s.tolist() == (np.power(a, alpha) / np.power(w, 1 - alpha)).astype(np.float32).tolist()
    assert smooth_scales(a, w, 1.0).tolist() == a.astype(np.float32).tolist()  # alpha 1: s = max|X_j|
    assert smooth_scales(a, w, 0.0).tolist() == (1 / w).astype(np.float32).tolist()  # alpha 0: s = 1 / max|W_j|


def test_tiny_maxima_are_floored() -> None:
    s = smooth_scales(np.array([0.0, 1.0, 1e-9]), np.array([1.0, 0.0, 1.0]), 0.5)
    assert s.tolist() == np.array([np.sqrt(FLOOR), 1 / np.sqrt(FLOOR), np.sqrt(FLOOR)], np.float32).tolist()
    assert np.isfinite(s).all() and (s >= np.float32(FLOOR)).all()
    assert smooth_scales(np.zeros(3), np.ones(3), 1.0).tolist() == [np.float32(FLOOR)] * 3


@pytest.mark.parametrize("alpha", [-0.1, 1.01, float("nan")])
def test_alpha_outside_zero_one_is_refused(alpha) -> None:
    with pytest.raises(ValueError, match="alpha must be in"):
        smooth_scales(np.ones(2), np.ones(2), alpha)


def test_column_absmax_stacks_every_linear() -> None:
    _, _, ws = block()
    assert column_absmax(ws).tolist() == np.abs(np.concatenate(ws)).max(axis=0).tolist()


def test_smoothing_is_an_identity_in_float32() -> None:
    x, g, ws = block(outliers=(3, 17))
    a = np.abs(x * g).max(axis=0)
    s = smooth_scales(a, column_absmax(ws), 0.5)
    g2, ws2 = smooth(g, ws, s)
    assert g2.dtype == np.float32 and all(w.dtype == np.float32 for w in ws2)
    for w, w2 in zip(ws, ws2):
        before, after = (x * g) @ w.T, (x * g2) @ w2.T
        assert np.linalg.norm(after - before) <= 1e-6 * np.linalg.norm(before)


def test_a_layernorm_bias_is_divided_too_so_the_output_is_unchanged() -> None:
    rng = np.random.default_rng(1)
    n = rng.standard_normal((64, 16)).astype(np.float32)  # the normalised input
    g, b = rng.uniform(0.5, 2, 16).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    w = rng.standard_normal((24, 16)).astype(np.float32)  # c_attn, canonical [out, in]
    s = smooth_scales(np.abs(n * g + b).max(0) * 50, column_absmax([w]), 0.5)
    g2, (w2,) = smooth(g, [w], s)
    b2 = smooth_bias(b, s)
    before, after = (n * g + b) @ w.T, (n * g2 + b2) @ w2.T
    assert np.max(np.abs(after - before)) <= 1e-5 * np.max(np.abs(before))
    without = (n * g2 + b) @ w2.T  # dividing gamma alone is not an identity
    assert np.max(np.abs(without - before)) > 1e-2 * np.max(np.abs(before))


def test_smoothing_takes_the_planted_outliers_out_of_the_activations() -> None:
    """x50 planted in two channels: per-tensor 8-bit inputs lose most of the other channels;
    after smoothing (alpha 0.5) the activation maxima are even and the layer error drops."""
    x, g, ws = block(outliers=(3, 17))
    act = x * g
    a = np.abs(act).max(axis=0)
    s = smooth_scales(a, column_absmax(ws), 0.5)
    g2, ws2 = smooth(g, ws, s)
    act2 = x * g2
    assert a.max() / np.median(a) > 30 and np.abs(act2).max(axis=0).max() / np.median(np.abs(act2).max(axis=0)) < 3

    def error(inputs: np.ndarray, w: np.ndarray) -> float:
        q = fake_quantize(inputs, act_qparams(float(inputs.min()), float(inputs.max())))
        return float(np.linalg.norm(q @ w.T - inputs @ w.T) / np.linalg.norm(inputs @ w.T))

    naive, smoothed = error(act, ws[0]), error(act2, ws2[0])
    assert smoothed < naive / 5, (naive, smoothed)


def _layers(*names_kinds: tuple[str, str]):
    return [SimpleNamespace(name=n, kind=k) for n, k in names_kinds]


def test_pairs_of_a_llama_block_and_refusals() -> None:
    llama = _layers(("model.embed_tokens", "embedding"), ("model.layers.0.self_attn.q_proj", "linear"),
                    ("model.layers.0.self_attn.k_proj", "linear"), ("model.layers.0.self_attn.v_proj", "linear"),
                    ("model.layers.0.self_attn.o_proj", "linear"), ("model.layers.0.mlp.gate_proj", "linear"),
                    ("model.layers.0.mlp.up_proj", "linear"), ("model.layers.0.mlp.down_proj", "linear"),
                    ("model.layers.0.input_layernorm", "norm"), ("model.layers.0.post_attention_layernorm", "norm"),
                    ("model.norm", "norm"), ("lm_head", "linear"))
    assert smooth_pairs(llama) == [
        ("model.layers.0.input_layernorm", tuple(f"model.layers.0.self_attn.{p}_proj" for p in "qkv")),
        ("model.layers.0.post_attention_layernorm", ("model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj")),
    ]
    assert pairs_refusal(llama, ["model.layers.0.input_layernorm"]) is None
    assert "picks none of the 2 norms" in pairs_refusal(llama, ["model.norm"])
    bert = _layers(("bert.encoder.layer.0.attention.self.query", "linear"),
                   ("bert.encoder.layer.0.attention.output.LayerNorm", "norm"))
    assert "post-norm" in pairs_refusal(bert, ["bert.encoder.layer.0.attention.output.LayerNorm"])
    gpt2 = _layers(("transformer.h.0.ln_1", "norm"), ("transformer.h.0.attn.c_attn", "linear"),
                   ("transformer.h.0.attn.c_proj", "linear"), ("transformer.h.0.ln_2", "norm"),
                   ("transformer.h.0.mlp.c_fc", "linear"), ("transformer.h.0.mlp.c_proj", "linear"),
                   ("transformer.ln_f", "norm"), ("lm_head", "linear"))
    assert smooth_pairs(gpt2) == [("transformer.h.0.ln_1", ("transformer.h.0.attn.c_attn",)),
                                  ("transformer.h.0.ln_2", ("transformer.h.0.mlp.c_fc",))]
    assert pairs_refusal(gpt2, ["transformer.h.0.ln_2"]) is None
    assert "picks none of the 2 norms" in pairs_refusal(gpt2, ["transformer.ln_f"])
    assert "no pre-norm transformer pair" in pairs_refusal(_layers(("conv1", "conv"), ("bn1", "norm")), ["bn1"])
