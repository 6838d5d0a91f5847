"""Prune forms on hand-set torch weights: rounding, ties, the strict threshold, N:M groups, masks held
by the handle, NaN. The masks of every form on every backend: tests/contract/test_prune.py."""

from __future__ import annotations

import pytest

from torch_helpers import make_ctx, torch_backend  # first: skips unless torch is selected and installed

import numpy as np
import torch
from torch import nn

from lwdsl.semantics import masks as lm
from lwdsl.errors import RunError
from lwdsl.language.specs import NMRatio, PruneSpec
from lwdsl.backends.torch_backend.handle import TorchModel

pytestmark = pytest.mark.torch


def lenet5():
    return torch_backend().load_model("lenet5", (1, 28, 28), 10)


def weights(handle, names=None):
    names = names or [layer.name for layer in torch_backend().layers(handle)]
    return {n: handle.module.get_submodule(n).weight.detach().numpy().copy() for n in names}


def prune(handle, layers=None, ctx=None, **spec):
    layers = layers or [layer.name for layer in torch_backend().layers(handle)]
    return torch_backend().apply(handle, PruneSpec(**spec), layers, ctx or make_ctx())


def zeros(t) -> int:
    return int(np.count_nonzero(np.asarray(t) == 0))


class Tiny(nn.Module):
    """Three small linear layers whose weights the tests set by hand."""

    def __init__(self, sizes=((5, 1), (4, 3), (6, 2))):
        super().__init__()
        self.fc1 = nn.Linear(sizes[0][1], sizes[0][0])
        self.fc2 = nn.Linear(sizes[1][1], sizes[1][0])
        self.fc3 = nn.Linear(sizes[2][1], sizes[2][0])

    def forward(self, x):
        return x


def tiny(values: dict[str, np.ndarray]) -> TorchModel:
    m = Tiny(tuple(v.shape for v in values.values()))
    with torch.no_grad():
        for name, v in values.items():
            m.get_submodule(name).weight.copy_(torch.from_numpy(v))
    return TorchModel(m, "tiny", (1,), 2)


@pytest.mark.parametrize("amount, pruned", [(0.1, 0), (0.3, 2), (0.5, 2), (0.7, 4), (0.9, 4)])
def test_count_rounds_half_to_even(amount, pruned):
    w = np.array([[0.5], [-0.1], [0.3], [0.2], [-0.4]], np.float32)  # 5 weights
    handle = tiny({"fc1": w, "fc2": np.ones((4, 3), np.float32), "fc3": np.ones((6, 2), np.float32)})
    prune(handle, ["fc1"], method="l1", amount=amount)
    assert zeros(handle.module.fc1.weight.detach()) == pruned


def brute_force_global(ws: list[np.ndarray], amount: float) -> list[np.ndarray]:
    """The definition itself: stable argsort of all |w| in model order, the first k pruned."""
    flat = np.concatenate([np.abs(w).reshape(-1) for w in ws])
    keep = np.ones(flat.size, bool)
    keep[np.argsort(flat, kind="stable")[: lm.count_to_prune(amount, flat.size)]] = False
    return np.split(keep, np.cumsum([w.size for w in ws])[:-1])


@pytest.mark.parametrize("amount", [0.0, 0.2, 0.5, 0.55555, 0.8, 0.95])
def test_global_equals_brute_force_with_planted_ties(amount):
    rng = np.random.default_rng(7)
    values = {  # few distinct magnitudes, both signs, zeros: ties everywhere, across layers
        "fc1": (rng.integers(-3, 4, (5, 1)) / 4).astype(np.float32),
        "fc2": (rng.integers(-3, 4, (4, 3)) / 4).astype(np.float32),
        "fc3": (rng.integers(-3, 4, (6, 2)) / 4).astype(np.float32),
    }
    handle = tiny(values)
    prune(handle, ["fc3", "fc1", "fc2"], scope="global", method="l1", amount=amount)  # order as given: any
    expected = brute_force_global(list(values.values()), amount)
    for (name, w), keep in zip(values.items(), expected):
        assert handle.masks[name].numpy().reshape(-1).tolist() == keep.tolist(), name
        np.testing.assert_array_equal(handle.module.get_submodule(name).weight.detach().numpy(), np.where(keep.reshape(w.shape), w, 0))


def test_threshold_is_strict():
    w = np.array([[0.1], [-0.1], [0.0999], [-0.2], [0.05]], np.float32)
    handle = tiny({"fc1": w, "fc2": np.ones((4, 3), np.float32), "fc3": np.ones((6, 2), np.float32)})
    prune(handle, ["fc1"], method="threshold", amount=float(np.float32(0.1)))
    assert handle.masks["fc1"].reshape(-1).tolist() == [True, True, False, True, False]


def test_nm_keeps_n_of_every_m_including_the_partial_group():
    handle = tiny({
        "fc1": np.ones((5, 1), np.float32),
        "fc2": np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32),  # groups 4 + 4 + 2
        "fc3": np.ones((6, 2), np.float32),
    })  # fmt: skip
    prune(handle, ["fc2"], nm=NMRatio(n=2, m=4))
    keep = handle.masks["fc2"].numpy()
    assert (keep[:, 0:4].sum(1) == 2).all() and (keep[:, 4:8].sum(1) == 2).all() and (keep[:, 8:].sum(1) == 2).all()
    assert zeros(handle.module.fc2.weight.detach()) == 4 * 4


def test_nm_on_conv_groups_the_flattened_inputs():
    handle = lenet5()
    before = weights(handle, ["conv2"])["conv2"]
    prune(handle, ["conv2"], nm=NMRatio(n=1, m=4))
    keep = handle.masks["conv2"].numpy().reshape(50, -1)
    assert (keep.reshape(50, -1, 4).sum(-1) == 1).all()  # 500 inputs per filter: 125 full groups
    assert np.array_equal(handle.masks["conv2"].numpy(), lm.nm_keep_mask(before, 1, 4))


def test_masks_live_in_the_handle_not_in_the_module():
    handle = lenet5()
    prune(handle, scope="global", method="l1", amount=0.5)
    names = {n for n, _ in handle.module.named_parameters()} | {n for n, _ in handle.module.named_buffers()}
    assert not any(n.endswith(("_orig", "_mask")) for n in names)
    assert all(not m._forward_pre_hooks for m in handle.module.modules())
    assert set(handle.masks) == {"conv1", "conv2", "fc1", "fc2"}


def test_nan_weights_cannot_be_pruned_by_magnitude():
    handle = lenet5()
    with torch.no_grad():
        handle.module.fc2.weight[0, 0] = float("nan")
    with pytest.raises(RunError, match="NaN"):
        prune(handle, scope="global", method="l1", amount=0.2)


