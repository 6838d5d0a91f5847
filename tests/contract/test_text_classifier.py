"""tiny-bert on ``--data pydoc-code`` (standard-library source windows labelled by package, a
derived classification task) on every backend: a baseline, a calibrated prune, fine-tuning and
distillation into a smaller tiny-bert, accuracy the metric; a language model on labelled
sequences is refused before any training."""

from __future__ import annotations

import os

import pytest

import lwdsl
from lwdsl.errors import UsageError

SMALL = "tiny-bert?layers=1&hidden=32&heads=2&mlp=64"
CHANCE = 1 / 8


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """One tokenizer and baseline cache for the session (LWDSL_CACHE when set), as the language
    model tests share (tests/backends/llm_helpers.py)."""
    if not os.environ.get("LWDSL_CACHE"):
        monkeypatch.setenv("LWDSL_CACHE", str(tmp_path_factory.getbasetemp() / "llm-cache"))


def _needs(backend_name: str) -> None:
    pytest.importorskip("transformers" if backend_name == "torch" else "keras")
    pytest.importorskip("tokenizers", reason="--data pydoc-code needs tokenizers (pip install 'lwdsl[llm]')")


@pytest.mark.slow
def test_tiny_bert_classifies_stdlib_packages_well_above_chance(backend_name):
    _needs(backend_name)
    recipe = ('prune wanda 50% calibrate=16\nfinetune epochs=1 optimizer=adam lr=0.001 batch=16\n'
              'distill T=2 alpha=0.5 student="tiny-bert?layers=1&hidden=16&heads=2&mlp=32" epochs=1 optimizer=adam lr=0.001 batch=16')
    result = lwdsl.run(recipe, SMALL, data="pydoc-code", backend=backend_name, baseline_epochs=2, quiet=True, latency=False)
    steps = result.report["steps"]
    accuracy = [row["metrics"]["accuracy"] for row in steps]
    assert all("perplexity" not in row["metrics"] for row in steps)  # a classifier: accuracy, no perplexity
    assert accuracy[0] > 2 * CHANCE, accuracy  # the baseline learned the packages
    assert accuracy[2] > 2 * CHANCE, accuracy  # pruned and fine-tuned
    assert 0 <= accuracy[3] <= 1  # the distilled student is measured the same way
    assert result.report["data_source"]["classes"][0] == "asyncio" and steps[1]["calibration"]["examples"] == 16


def test_a_language_model_on_labelled_sequences_is_refused_before_training(backend_name):
    _needs(backend_name)
    with pytest.raises(UsageError) as caught:
        lwdsl.run("prune 50%", "tiny-llama?layers=1&hidden=32&heads=2&mlp=64", data="pydoc-code", backend=backend_name,
                  baseline_epochs=1, quiet=True, latency=False)
    err = caught.value
    assert err.exit_code == 2 and "token ids labelled one of 8 classes" in str(err) and "tiny-bert" in (err.hint or "")
