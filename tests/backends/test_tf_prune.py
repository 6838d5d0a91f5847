"""Pruning on the tensorflow backend: masks from lwdsl.semantics.masks on the canonical layout."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow
pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow

from lwdsl.semantics import masks as M  # noqa: E402
from lwdsl.backend import StepContext, get_backend  # noqa: E402
from lwdsl.data.builtin import load_data  # noqa: E402
from lwdsl.errors import LwdslError  # noqa: E402
from lwdsl.semantics.order import steps_per_epoch  # noqa: E402
from lwdsl.runner.progress import NullBar  # noqa: E402
from lwdsl.language.specs import FinetuneSpec, PruneSpec  # noqa: E402

SHAPE = (1, 28, 28)
LAYERS = ["conv1", "conv2", "fc1", "fc2"]
DATA = load_data("synthetic:1,28,28:10")


def _ctx(data=DATA):
    return StepContext(data, seed=0, index=2, progress=lambda total, what: NullBar())


@pytest.fixture
def be():
    return get_backend("tensorflow")


def _pruned(be, spec, layers=LAYERS, model="lenet5"):
    h = be.load_model(model, SHAPE, 10)
    before = be.state(h)
    h = be.apply(h, PruneSpec(**spec), layers, _ctx())
    return before, be.state(h), h


def _keep(state, names):
    return [state[f"{n}.weight"] != 0 for n in names]


@pytest.mark.parametrize(
    "spec,expect",
    [
        ({"method": "l1", "amount": 0.3}, lambda ws, seed: [M.magnitude_keep_masks([w], 0.3)[0] for w in ws]),
        ({"scope": "global", "amount": 0.6}, lambda ws, seed: M.magnitude_keep_masks(ws, 0.6)),
        ({"method": "random", "amount": 0.4}, lambda ws, seed: M.random_keep_masks(ws, 0.4, seed, per_layer=True)),
        ({"scope": "global", "method": "random", "amount": 0.4}, lambda ws, seed: M.random_keep_masks(ws, 0.4, seed)),
        ({"method": "threshold", "amount": 0.02}, lambda ws, seed: [M.threshold_keep_mask(w, 0.02) for w in ws]),
        ({"nm": {"n": 2, "m": 4}}, lambda ws, seed: [M.nm_keep_mask(w, 2, 4) for w in ws]),
    ],
    ids=["l1", "global", "random", "global-random", "threshold", "nm"],
)
def test_masks_are_lwdsl_masks_on_the_canonical_layout(be, spec, expect):
    before, after, _ = _pruned(be, spec)
    weights = [before[f"{n}.weight"] for n in LAYERS]
    for got, want in zip(_keep(after, LAYERS), expect(weights, _ctx().step_seed())):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("structured,axis", [("filters", 0), ("channels", 1)])
def test_structured_masks_whole_slices(be, structured, axis):
    before, after, _ = _pruned(be, {"method": "l2", "amount": 0.5, "structured": structured}, ["conv2", "fc1"])
    for name in ("conv2", "fc1"):
        keep = after[f"{name}.weight"] != 0
        want = M.structured_keep(before[f"{name}.weight"], 0.5, axis=axis, method="l2", p=2.0)
        per_slice = np.moveaxis(keep, axis, 0).reshape(keep.shape[axis], -1)
        assert np.array_equal(per_slice.any(axis=1), want) and np.array_equal(per_slice.all(axis=1), want)
        assert np.array_equal(after[f"{name}.bias"], before[f"{name}.bias"])  # biases are never pruned


def test_second_prune_never_revives(be):
    h = be.load_model("lenet300", SHAPE, 10)
    h = be.apply(h, PruneSpec(method="l1", amount=0.5), ["fc1"], _ctx())
    first = be.state(h)["fc1.weight"] == 0
    h = be.apply(h, PruneSpec(method="random", amount=0.3), ["fc1"], _ctx())
    assert np.all(be.state(h)["fc1.weight"][first] == 0)


def test_remove_matches_masked_model(be):
    h = be.load_model("seedcnn", SHAPE, 10)
    for layer in h.model.layers:  # zero biases: a removed filter then contributes exactly nothing
        if layer.weights:
            layer.set_weights([layer.get_weights()[0], np.zeros_like(layer.get_weights()[1])])
    masked = be.copy_model(h)
    spec = dict(method="l1", amount=0.4, structured="filters")
    masked = be.apply(masked, PruneSpec(**spec), ["conv1", "conv2", "fc1"], _ctx())
    small = be.apply(h, PruneSpec(**spec, remove=True), ["conv1", "conv2", "fc1"], _ctx())
    assert [i.shape for i in be.layers(small)] == [(6, 1, 5, 5), (12, 6, 5, 5), (30, 192), (10, 30)]
    x = DATA.test_x[:32].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(small.model(x).numpy(), masked.model(x).numpy(), atol=1e-5)


def test_remove_refuses_the_output_layer(be):
    h = be.load_model("lenet5", SHAPE, 10)
    with pytest.raises(LwdslError, match="'fc2'.*model's outputs") as err:
        be.apply(h, PruneSpec(method="l1", amount=0.5, structured="filters", remove=True), ["fc2"], _ctx())
    assert "except" in err.value.hint


def test_gradual_counts_steps_like_torch(be, monkeypatch):
    """After step t (from 1): a ramp update when t/spe >= start and t % frequency == 0, the
    first update at t/spe >= final reaches AMOUNT, and one more at AMOUNT after training."""
    from lwdsl.semantics.pruning import GradualClock

    data = load_data("synthetic:1,28,28:10")
    data.train_x, data.train_y = data.train_x[:320], data.train_y[:320]
    seen = []
    real = GradualClock.due

    def due(self, t):
        out = real(self, t)
        if out is not None:
            seen.append(out)
        return out

    monkeypatch.setattr(GradualClock, "due", due)
    h = be.load_model("lenet300", SHAPE, 10)
    spec = PruneSpec(method="l1", amount=0.8, schedule="gradual", epochs=3, start=1, final=2, frequency=4, batch=32)
    h = be.apply(h, spec, ["fc1", "fc2"], _ctx(data))
    spe = steps_per_epoch(320, 32)
    want = [M.gradual_sparsity(t / spe, 0.8, 1, 2) for t in range(spe, 2 * spe + 1) if t % 4 == 0 or t == 2 * spe]
    assert seen == want and len(want) == 3 and want[-1] == 0.8  # after steps 12, 16, 20
    assert [round(s.sparsity, 6) for s in be.stats(h).layers[:2]] == [0.8, 0.8]
    assert len(h.losses) == 3 * spe


def test_masks_stay_fixed_through_finetune(be):
    h = be.load_model("lenet5", SHAPE, 10)
    h = be.apply(h, PruneSpec(scope="global", amount=0.7), LAYERS, _ctx())
    zeros = {k: v == 0 for k, v in be.state(h).items() if k.endswith(".weight")}
    h = be.apply(h, FinetuneSpec(epochs=1, lr=0.05, optimizer="adam", weight_decay=0.01), LAYERS, _ctx())
    after = be.state(be.finalize(h))
    for name, z in zeros.items():
        assert np.array_equal(after[name] == 0, z)
        assert not np.signbit(after[name][z]).any()  # +0.0, like the torch backend
    assert h.masks == {}
