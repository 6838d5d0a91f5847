"""A statically quantized model saved to ``.lwz`` loads back whole on both backends: codes,
scales and the activation ranges of its static layers (so the reloaded model evaluates the
same, through the same fake quantizer)."""

from __future__ import annotations

import pytest

from lwdsl.language.specs import QuantizeSpec

from .cases import BACKENDS, SHAPE, backend, context, dataset, planted_state

pytest.importorskip("torch")
pytest.importorskip("tensorflow")


@pytest.mark.parametrize("name", BACKENDS)
def test_static_ranges_come_back_from_the_lwz(name, tmp_path):
    import numpy as np

    from lwdsl.backend.weights import load_weights, save_weights

    be = backend(name)
    data = dataset(128, 64)
    ctx = context(data)
    handle = be.load_model("lenet5", SHAPE, 10)
    be.load_state(handle, planted_state("lenet5", trainable=True))
    layers = [i.name for i in be.layers(handle) if i.kind in ("conv", "linear")]
    handle = be.apply(handle, QuantizeSpec(dtype="int8", mode="static", calibrate=64), layers, ctx)
    assert set(handle.act) == set(layers)
    save_weights(tmp_path / "m.lwz", be.state(handle))
    fresh = be.load_model("lenet5", SHAPE, 10)
    be.load_state(fresh, load_weights(tmp_path / "m.lwz")[0])
    assert fresh.act == handle.act
    assert {k: (q.codes.tolist(), q.scale.tolist()) for k, q in fresh.quant.items()} == {
        k: (q.codes.tolist(), q.scale.tolist()) for k, q in handle.quant.items()
    }
    acc0, loss0 = be.evaluate(handle, ctx)
    acc1, loss1 = be.evaluate(fresh, ctx)
    assert acc0 == acc1 and np.isclose(loss0, loss1, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", BACKENDS)
def test_a_clustered_model_loads_back_from_the_lwz(name, tmp_path):
    """``quantize cluster bits=3`` after pruning: the .lwz holds 3-bit packed codes (the big
    layers' sparsely: bitmap and non-zero codes) and the codebook (no float weight), and loads
    back to the same codes, codebook and predictions."""
    import numpy as np

    from lwdsl.semantics.quant import sparse_pays
    from lwdsl.language.specs import PruneSpec
    from lwdsl.backend.weights import load_weights, save_weights

    be = backend(name)
    data = dataset(128, 64)
    ctx = context(data)
    handle = be.load_model("lenet5", SHAPE, 10)
    be.load_state(handle, planted_state("lenet5", trainable=True))
    layers = [i.name for i in be.layers(handle) if i.kind in ("conv", "linear")]
    handle = be.apply(handle, PruneSpec(scope="global", method="l1", amount=0.8), layers, ctx)
    handle = be.apply(handle, QuantizeSpec(dtype="cluster", bits=3), layers, ctx)
    state = be.state(handle)
    for layer in layers:
        assert f"{layer}.weight" not in state and state[f"{layer}.weight.codebook"].shape == (8,)
        n, kept = int(np.prod(state[f"{layer}.weight.shape"])), int(np.count_nonzero(handle.quant[layer].codes))
        sparse = f"{layer}.weight.nonzero" in state
        assert sparse == sparse_pays(n, kept, 3)
        assert state[f"{layer}.weight.codes"].dtype == np.uint8 and state[f"{layer}.weight.codes"].size == -(-(kept if sparse else n) * 3 // 8)
    assert "fc1.weight.nonzero" in state  # 400,000 weights, about 80% pruned
    save_weights(tmp_path / "m.lwz", state)
    fresh = be.load_model("lenet5", SHAPE, 10)
    be.load_state(fresh, load_weights(tmp_path / "m.lwz")[0])
    assert set(fresh.quant) == set(layers)
    for layer in layers:
        a, b = fresh.quant[layer], handle.quant[layer]
        assert np.array_equal(a.codes, b.codes) and a.codebook.tobytes() == b.codebook.tobytes() and a.bits == 3
    back = be.state(fresh)
    assert all(np.asarray(back[k]).tobytes() == np.asarray(state[k]).tobytes() for k in state)
    acc0, loss0 = be.evaluate(handle, ctx)
    acc1, loss1 = be.evaluate(fresh, ctx)
    assert acc0 == acc1 and np.isclose(loss0, loss1, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", BACKENDS)
def test_a_full_grid_model_loads_back_from_the_lwz_on_its_grid(name, tmp_path):
    """``quantize int4 grid=full`` after pruning (the big layers' codes stored sparsely): the .lwz
    holds the codes -8..7 and each layer's ``.qmin``, and loads back on the full grid with the
    same codes and predictions."""
    import numpy as np

    from lwdsl.backend.weights import load_weights, save_weights
    from lwdsl.language.specs import PruneSpec

    be = backend(name)
    data = dataset(128, 64)
    ctx = context(data)
    handle = be.load_model("lenet5", SHAPE, 10)
    be.load_state(handle, planted_state("lenet5", trainable=True))
    layers = [i.name for i in be.layers(handle) if i.kind in ("conv", "linear")]
    handle = be.apply(handle, PruneSpec(scope="global", method="l1", amount=0.8), layers, ctx)
    handle = be.apply(handle, QuantizeSpec(dtype="int4", grid="full"), layers, ctx)
    state = be.state(handle)
    assert all(int(state[f"{layer}.weight.qmin"]) == -8 for layer in layers) and "fc1.weight.nonzero" in state
    save_weights(tmp_path / "m.lwz", state)
    fresh = be.load_model("lenet5", SHAPE, 10)
    be.load_state(fresh, load_weights(tmp_path / "m.lwz")[0])
    assert all(q.grid == "full" and np.array_equal(q.codes, handle.quant[k].codes) for k, q in fresh.quant.items())
    assert set(fresh.quant) == set(layers) and min(int(q.codes.min()) for q in fresh.quant.values()) == -8
    assert be.evaluate(handle, ctx) == be.evaluate(fresh, ctx)
