"""The calibrated methods' flow (lwdsl.backend.calibrated): one calibration pass, or with
``sequential=true`` a pass per group of layers sharing an input, each on the model already
compressed before it. A numpy model stands in for a backend (the flow is framework-free)."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.backend.calibrated import WeightParts, calibrated_layers, prune_calibrated
from lwdsl.backend.context import StepContext
from lwdsl.data.dataset import Dataset
from lwdsl.language.specs import PruneSpec
from lwdsl.runner.progress import NullBar
from lwdsl.semantics.hessian import Gram

ORDER = ["a", "b", "c", "d"]


class Chain(WeightParts):
    """x -> a -> relu -> (b, c: the same input) ; relu(b) -> d. Counts the forward passes."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.w = {"a": rng.standard_normal((8, 6)), "b": rng.standard_normal((8, 8)), "c": rng.standard_normal((5, 8)),
                  "d": rng.standard_normal((4, 8))}
        self.w = {k: v.astype(np.float32) for k, v in self.w.items()}
        self.passes: list[tuple[str, ...]] = []

    def inputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        h = np.maximum(x @ self.w["a"].T, 0)
        return {"a": x, "b": h, "c": h, "d": np.maximum(h @ self.w["b"].T, 0)}

    def layer_inputs(self, handle, layers, x):
        if not self.passes or self.passes[-1] != tuple(layers):
            self.passes.append(tuple(layers))
        seen = self.inputs(np.asarray(x, np.float32))
        return [seen[name] for name in layers]

    def weight(self, handle, layer):
        return self.w[layer].copy()

    def set_pruned(self, handle, layer, keep, w):
        self.w[layer] = np.where(keep, w, 0).astype(np.float32)


def _ctx(seed: int = 0) -> StepContext:
    x = np.random.default_rng(seed).standard_normal((40, 6)).astype(np.float32)
    data = Dataset("chain", x, np.zeros(40, np.int64), x[:8], np.zeros(8, np.int64), 2)
    return StepContext(data=data, seed=1, index=0, progress=lambda total, description: NullBar())


def _gram(x: np.ndarray) -> np.ndarray:
    g = Gram(x.shape[1])
    g.update(x)
    return g.h


@pytest.mark.parametrize("sequential, passes", [(False, 1), (True, 3)])
def test_one_pass_or_a_pass_per_group_of_layers_sharing_an_input(sequential, passes):
    parts, ctx = Chain(), _ctx()
    got = []
    for name, gram in calibrated_layers(parts, None, ORDER, 40, ctx, "test", "wanda", sequential):
        got.append(name)
        parts.w[name] = parts.w[name] * 0.5  # the caller compresses the layer before the next is calibrated
    assert got == ORDER
    assert len(parts.passes) == passes
    if sequential:  # b and c read one input: calibrated together; d after b was compressed; a pass collects its group only
        assert parts.passes == [tuple(ORDER), ("b", "c"), ("d",)]
        assert ctx.notes["calibration"] == {"examples": 40, "rows": 40, "passes": 3}
    else:
        assert ctx.notes["calibration"] == {"examples": 40, "rows": 40}


@pytest.mark.parametrize("sequential", [False, True])
def test_each_layer_is_calibrated_on_the_model_compressed_before_it_only_when_sequential(sequential):
    parts, ctx = Chain(), _ctx()
    x = ctx.data.train_x
    before = parts.inputs(x)
    spec = PruneSpec(method="sparsegpt", amount=0.5, calibrate=40, sequential=sequential)
    grams = {}
    for name, gram in calibrated_layers(parts, None, ORDER, 40, ctx, "test", "sparsegpt", sequential):
        grams[name] = gram.h
        parts.w[name] = np.where(np.abs(parts.w[name]) > 0.5, parts.w[name], 0).astype(np.float32)
    after = parts.inputs(x)  # every layer compressed
    for name in ORDER:
        want = after[name] if sequential else before[name]
        np.testing.assert_allclose(grams[name], _gram(want), rtol=1e-12, err_msg=name)
    # the inputs of b, c (after a) and d (after a and b) changed: the two modes differ there
    assert not np.allclose(_gram(before["d"]), _gram(after["d"]))
    assert spec.sequential is sequential


def test_sequential_sparsegpt_lowers_the_error_on_the_compressed_models_inputs():
    """Measured on the inputs each layer really gets (its predecessors pruned), the layer
    calibrated on those inputs does at least as well as one calibrated on the original inputs."""
    errors = {}
    for sequential in (False, True):
        parts, ctx = Chain(3), _ctx(3)
        spec = PruneSpec(method="sparsegpt", amount=0.5, calibrate=40, sequential=sequential)
        original = {k: v.copy() for k, v in parts.w.items()}
        prune_calibrated(parts, None, spec, ORDER, ctx)
        assert ctx.notes["calibration"]["damp"] == 0.01 and set(ctx.notes["layer_output_error"]) == set(ORDER)
        real = parts.inputs(ctx.data.train_x)  # what d reads once a and b are pruned
        x, w, new = real["d"].astype(np.float64), original["d"].astype(np.float64), parts.w["d"].astype(np.float64)
        errors[sequential] = np.linalg.norm(x @ (w - new).T) ** 2 / np.linalg.norm(x @ w.T) ** 2
    assert errors[True] <= errors[False]


def test_sequential_is_refused_where_nothing_calibrates():
    with pytest.raises(ValueError, match="sequential= only applies to prune wanda or sparsegpt"):
        PruneSpec(method="l1", amount=0.5, sequential=True)
    from lwdsl.language.specs import QuantizeSpec
    with pytest.raises(ValueError, match="sequential= only applies to quantize ... method=gptq"):
        QuantizeSpec(dtype="int4", group=32, sequential=True)
    assert QuantizeSpec(dtype="int4", method="gptq", sequential=True).sequential
