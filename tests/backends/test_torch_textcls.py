"""tiny-bert on ``--data pydoc-code`` (standard-library source windows labelled by package, a
derived classification task) on torch: a baseline, a calibrated prune, fine-tuning and
distillation into a smaller tiny-bert, accuracy the metric."""

from __future__ import annotations

import pytest

from torch_helpers import torch_backend  # noqa: F401  first: skips unless torch is selected and installed

pytest.importorskip("transformers", reason="transformer models need transformers (pip install 'lwdsl[llm]')")
pytest.importorskip("tokenizers", reason="--data pydoc-code needs tokenizers (pip install 'lwdsl[llm]')")

import lwdsl  # noqa: E402
from llm_helpers import llm_cache  # noqa: E402,F401  (the shared cache, autouse)

pytestmark = pytest.mark.torch

SMALL = "tiny-bert?layers=1&hidden=32&heads=2&mlp=64"
CHANCE = 1 / 8


@pytest.mark.slow
def test_tiny_bert_classifies_stdlib_packages_well_above_chance():
    recipe = ('prune wanda 50% calibrate=16\nfinetune epochs=1 optimizer=adam lr=0.001 batch=16\n'
              'distill T=2 alpha=0.5 student="tiny-bert?layers=1&hidden=16&heads=2&mlp=32" epochs=1 optimizer=adam lr=0.001 batch=16')
    result = lwdsl.run(recipe, SMALL, data="pydoc-code", backend="torch", baseline_epochs=2, quiet=True, latency=False)
    steps = result.report["steps"]
    accuracy = [row["metrics"]["accuracy"] for row in steps]
    assert all("perplexity" not in row["metrics"] for row in steps)  # a classifier: accuracy, no perplexity
    assert accuracy[0] > 2 * CHANCE, accuracy  # the baseline learned the packages
    assert accuracy[2] > 2 * CHANCE, accuracy  # pruned and fine-tuned
    assert 0 <= accuracy[3] <= 1  # the distilled student is measured the same way
    assert result.report["data_source"]["classes"][0] == "asyncio" and steps[1]["calibration"]["examples"] == 16


def test_a_language_model_on_labelled_sequences_is_refused_before_training():
    from lwdsl.errors import UsageError

    with pytest.raises(UsageError) as caught:
        lwdsl.run("prune 50%", "tiny-llama?layers=1&hidden=32&heads=2&mlp=64", data="pydoc-code", backend="torch",
                  baseline_epochs=1, quiet=True, latency=False)
    err = caught.value
    assert err.exit_code == 2 and "token ids labelled one of 8 classes" in str(err) and "tiny-bert" in (err.hint or "")
