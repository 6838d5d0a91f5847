"""`Backend.positions` (what `lwdsl search --objective macs` counts with): the same output
positions on every backend, so the same multiply-accumulates from the same weights."""

from __future__ import annotations

import numpy as np

from lwdsl.runner.metrics import macs


def test_lenet5_positions_and_macs(backend):
    backend.set_seed(0)
    model = backend.load_model("lenet5", (1, 28, 28), 10)
    positions = backend.positions(model, (1, 28, 28))
    assert positions == {"conv1": 24 * 24, "conv2": 8 * 8, "fc1": 1, "fc2": 1}
    assert macs(backend.stats(model), positions) == 2_293_000  # dense: every weight once per position

    state = backend.state(model)
    w = state["conv1.weight"].copy()
    w.flat[: w.size // 2] = 0  # half of conv1's weights zeroed: half of its MACs gone
    backend.load_state(model, {**state, "conv1.weight": w})
    assert macs(backend.stats(model), positions) == 2_293_000 - (w.size // 2) * 576


def test_resnet8_positions_on_a_graph(backend):
    backend.set_seed(0)
    model = backend.load_model("resnet8", (3, 32, 32), 10)
    positions = backend.positions(model, (3, 32, 32))
    assert positions["conv1"] == 32 * 32 and positions["fc"] == 1
    assert set(positions) == {layer.name for layer in backend.layers(model) if layer.kind in ("conv", "linear")}
    assert np.all(np.array(list(positions.values())) >= 1)
