"""The README recipe on both backends from one baseline: same sparsity, close accuracy (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .cases import SHAPE, backend, context

pytestmark = [pytest.mark.torch, pytest.mark.tensorflow, pytest.mark.slow]
RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "lenet5-mnist.lw"


def test_readme_recipe_on_both_backends(mnist, tmp_path):
    from lwdsl.runner.pipeline import baseline_options, run
    from lwdsl.backend.weights import save_weights

    torch_be = backend("torch")
    base = torch_be.load_model("lenet5", SHAPE, 10)
    torch_be.train(base, baseline_options(1), context(mnist, seed=0, index=-1))
    save_weights(tmp_path / "baseline.lwz", torch_be.state(base))
    reports = {
        name: run(RECIPE, "lenet5", backend=name, data="mnist", checkpoint=tmp_path / "baseline.lwz", quiet=True, latency=False).report
        for name in ("torch", "tensorflow")
    }
    first = {name: r["steps"][0]["metrics"] for name, r in reports.items()}
    assert first["torch"]["accuracy"] == pytest.approx(first["tensorflow"]["accuracy"], abs=1e-4)  # same weights
    # the masks (every step up to the fine-tuning) are the same on both backends
    trained = {name: next(s for s in r["steps"] if s["op"] == "finetune")["metrics"] for name, r in reports.items()}
    sparsity = {name: [(layer["name"], layer["sparsity"]) for layer in m["layers"]] for name, m in trained.items()}
    assert sparsity["torch"] == sparsity["tensorflow"]
    assert trained["torch"]["nonzero_params"] == trained["tensorflow"]["nonzero_params"]
    # after int8: which trained weights round to code 0 follows training's rounding, so a few
    # differ; pruned weights stay zero on both, accuracies stay within 0.3 points
    last = {name: r["steps"][-1]["metrics"] for name, r in reports.items()}
    assert all(r["steps"][-1]["op"] == "quantize" for r in reports.values())
    assert abs(last["torch"]["accuracy"] - last["tensorflow"]["accuracy"]) <= 0.003
    nonzero = [last[name]["nonzero_params"] for name in ("torch", "tensorflow")]
    assert max(nonzero) <= trained["torch"]["nonzero_params"] and abs(nonzero[0] - nonzero[1]) <= 0.01 * max(nonzero)
