"""tiny-bert on ``--data pydoc-code`` (a derived classification task) on tensorflow: the same
run as torch's (tests/backends/test_torch_textcls.py), accuracy the metric."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.tensorflow
pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow
pytest.importorskip("tokenizers", reason="--data pydoc-code needs tokenizers (pip install 'lwdsl[llm]')")

import lwdsl  # noqa: E402
from llm_helpers import llm_cache  # noqa: E402,F401  (the shared cache, autouse)

SMALL = "tiny-bert?layers=1&hidden=32&heads=2&mlp=64"
CHANCE = 1 / 8


@pytest.mark.slow
def test_tiny_bert_classifies_stdlib_packages_well_above_chance():
    recipe = ('prune wanda 50% calibrate=16\nfinetune epochs=1 optimizer=adam lr=0.001 batch=16\n'
              'distill T=2 alpha=0.5 student="tiny-bert?layers=1&hidden=16&heads=2&mlp=32" epochs=1 optimizer=adam lr=0.001 batch=16')
    result = lwdsl.run(recipe, SMALL, data="pydoc-code", backend="tensorflow", baseline_epochs=2, quiet=True, latency=False)
    steps = result.report["steps"]
    accuracy = [row["metrics"]["accuracy"] for row in steps]
    assert all("perplexity" not in row["metrics"] for row in steps)  # a classifier: accuracy, no perplexity
    assert accuracy[0] > 2 * CHANCE, accuracy  # the baseline learned the packages
    assert accuracy[2] > 2 * CHANCE, accuracy  # pruned and fine-tuned
    assert 0 <= accuracy[3] <= 1  # the distilled student is measured the same way
    assert steps[1]["calibration"]["examples"] == 16
