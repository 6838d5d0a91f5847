"""What the language-model tests share: the tiny Llama's targeted linear layers, and one
tokenizer and baseline cache for the whole session (``LWDSL_CACHE`` when set). A module takes
the cache by importing :func:`llm_cache` (an autouse fixture)."""

from __future__ import annotations

import os

import pytest

#: The decoder's linear layers of the 2-layer tiny-llama (the head aside), in module order.
LLAMA_LINEAR = [f"model.layers.{i}.{p}" for i in range(2) for p in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
    "mlp.down_proj")]


@pytest.fixture(autouse=True)
def llm_cache(tmp_path_factory, monkeypatch):
    """One tokenizer and baseline cache for the session (LWDSL_CACHE when set)."""
    if not os.environ.get("LWDSL_CACHE"):
        monkeypatch.setenv("LWDSL_CACHE", str(tmp_path_factory.getbasetemp() / "llm-cache"))
