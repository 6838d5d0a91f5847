"""Shared by the SmoothQuant / W8A8 tests (no tests here): token data with structure to learn,
a small tiny-llama trained on it (once per backend and process), and planted activation outliers.

The data repeats a random 3-token pattern per sequence over a vocabulary of 64, with 10% noise
(:func:`patterns`): the next token is found only through attention, so what int8 does to the
blocks' inputs shows in the perplexity (a noisy walk, whose next token follows from the token
itself, hardly used the blocks: x50 outliers cost naive W8A8 only 0.5% there). Outliers are
planted as the issue describes them: in every decoder layer a few hidden channels of each
pre-norm (``input_layernorm``, ``post_attention_layernorm``) are scaled by ``factor`` through the
norm's weight and compensated by dividing the same input columns of the linears it feeds, so the
float model is unchanged (up to float32 rounding) while its int8 inputs see channels ``factor``
times larger than the rest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lwdsl.backend import Dataset
from lwdsl.language.specs import TrainingOptions

SEQ, VOCAB = 32, 64
MODEL = "tiny-llama?layers=2&hidden=64&heads=4&mlp=128"
#: The planted channels of each pre-norm, and the factor: x100, not the issue's x50, which cost
#: naive W8A8 +13.9% perplexity on torch's trained model but only +6.8% on tensorflow's (each
#: backend trains its own); x100 costs it +32% on tensorflow (x75: +18%).
CHANNELS, FACTOR = (3, 17, 40, 51), 100.0
#: The norms planted and the linears each feeds (the SmoothQuant pairs of a Llama block).
PAIRS = (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
         ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")))

#: GPT-2 at the same sizes, and its pairs (LayerNorms with a bias, Conv1D layers in the
#: canonical [out, in] layout): the planted channels scale both the norm's weight and bias.
MODEL_GPT2 = "tiny-gpt2?layers=2&hidden=64&heads=4&mlp=128"
PAIRS_GPT2 = (("ln_1", ("attn.c_attn",)), ("ln_2", ("mlp.c_fc",)))

_TRAINED: dict[tuple[str, str], dict[str, np.ndarray]] = {}


def patterns(n_train: int = 512, n_test: int = 128, seed: int = 0, period: int = 3, noise: float = 0.1) -> Dataset:
    """Token sequences repeating a random pattern of ``period`` tokens (one per sequence), a
    ``noise`` share of tokens replaced by random ones: the next token is the one ``period``
    back, which only attention can find (the token itself says nothing), so the blocks matter."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    pattern = rng.integers(0, VOCAB, (n, period))
    seqs = pattern[:, np.arange(SEQ + 1) % period]
    seqs = np.where(rng.random(seqs.shape) < noise, rng.integers(0, VOCAB, seqs.shape), seqs)
    x, y = seqs[:, :-1].astype(np.int64), seqs[:, 1:].astype(np.int64)
    return Dataset("patterns", x[:n_train], y[:n_train], x[n_train:], y[n_train:], VOCAB, task="lm")


def trained_state(be: Any, ctx_of: Any, epochs: int = 6, model: str = MODEL) -> dict[str, np.ndarray]:
    """A canonical state of ``model`` trained on :func:`patterns` by ``be`` (Adam, lr 0.003, batch 16),
    kept for the process. ``ctx_of(data)`` gives a step context."""
    if (be.name, model) not in _TRAINED:
        be.set_seed(0)
        handle = be.load_model(model, (SEQ,), VOCAB)
        be.train(handle, TrainingOptions(epochs=epochs, lr=0.003, optimizer="adam", batch=16), ctx_of(patterns()))
        _TRAINED[be.name, model] = be.state(handle)
    return {k: v.copy() for k, v in _TRAINED[be.name, model].items()}


def plant_outliers(state: dict[str, np.ndarray], factor: float = FACTOR, channels: tuple[int, ...] = CHANNELS) -> dict[str, np.ndarray]:
    """``state`` with the planted outliers (a copy; the float function unchanged up to rounding)."""
    out = {k: np.array(v, copy=True) for k, v in state.items()}
    c = list(channels)
    if "transformer.wte.weight" in out:  # GPT-2: LayerNorm weight and bias, Conv1D [out, in]
        for i in sorted({k.split(".")[2] for k in out if k.startswith("transformer.h.")}, key=int):
            for norm, linears in PAIRS_GPT2:
                for part in ("weight", "bias"):
                    out[f"transformer.h.{i}.{norm}.{part}"][c] *= np.float32(factor)
                for lin in linears:
                    out[f"transformer.h.{i}.{lin}.weight"][:, c] /= np.float32(factor)
        return out
    layers = sorted({k.split(".")[2] for k in out if k.startswith("model.layers.")}, key=int)
    for i in layers:
        for norm, linears in PAIRS:
            out[f"model.layers.{i}.{norm}.weight"][c] *= np.float32(factor)
            for lin in linears:
                out[f"model.layers.{i}.{lin}.weight"][:, c] /= np.float32(factor)
    return out


def logits(be: Any, handle: Any, ids: np.ndarray) -> np.ndarray:
    """The model's float outputs on ``ids`` as it evaluates (calibrated inputs fake-quantized)."""
    if be.name == "torch":
        from lwdsl.backends.torch_backend.quantize import TorchQuantizeParts as Parts
    else:
        from lwdsl.backends.tf_backend.quantize import KerasQuantizeParts as Parts
    return np.asarray(Parts().logits(handle, ids), dtype=np.float64)


def perplexity(be: Any, handle: Any, ctx: Any) -> float:
    """exp(mean token cross-entropy) on the test sequences, as the runner's metric."""
    return float(np.exp(be.evaluate(handle, ctx)[1]))
