"""Removal by dependency group removes the same channels on torch and tensorflow.

From identical canonical weights (ties planted: equal-norm filters 0 and 1 in every layer),
``prune l2 50% structured=filters remove=true`` on every convolution gives the same groups,
bit-identical kept indices and canonical states, and the same logits, on the zoo's residual
``resnet8`` and on a MobileNetV2-style net (inverted residuals: expand, depthwise, project,
residual addition; a flatten into the classifier) built alike in both frameworks.
"""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.semantics.groups import group_keep
from lwdsl.language.specs import PruneSpec

from .cases import backend, compare_states, context, dataset

pytestmark = [pytest.mark.torch, pytest.mark.tensorflow]

SPEC = PruneSpec(method="l2", amount=0.5, structured="filters", remove=True)


def _torch_mbnet():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c: int, e: int) -> None:
            super().__init__()
            self.expand = nn.Conv2d(c, e, 1, bias=False)
            self.expand_bn = nn.BatchNorm2d(e)
            self.dw = nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False)
            self.dw_bn = nn.BatchNorm2d(e)
            self.project = nn.Conv2d(e, c, 1, bias=False)
            self.project_bn = nn.BatchNorm2d(c)

        def forward(self, x):
            y = nn.functional.relu6(self.expand_bn(self.expand(x)))
            y = nn.functional.relu6(self.dw_bn(self.dw(y)))
            return x + self.project_bn(self.project(y))

    class MBNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
            self.stem_bn = nn.BatchNorm2d(16)
            self.b1 = Block(16, 48)
            self.b2 = Block(16, 48)
            self.head = nn.Conv2d(16, 32, 1, bias=False)
            self.head_bn = nn.BatchNorm2d(32)
            self.fc = nn.Linear(32 * 4 * 4, 10)

        def forward(self, x):
            x = nn.functional.relu6(self.stem_bn(self.stem(x)))
            x = self.b2(self.b1(x))
            x = nn.functional.max_pool2d(nn.functional.relu6(self.head_bn(self.head(x))), 2)
            return self.fc(torch.flatten(x, 1))

    return MBNet()


def _keras_mbnet():
    from lwdsl.backends.tf_backend._tf import keras

    L = keras.layers

    def bn(x, name):
        return L.BatchNormalization(epsilon=1e-5, name=name)(x)

    inp = keras.Input((8, 8, 3))
    x = L.ReLU(6.0)(bn(L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inp), "stem_bn"))
    for p in ("b1", "b2"):
        y = L.ReLU(6.0)(bn(L.Conv2D(48, 1, use_bias=False, name=f"{p}.expand")(x), f"{p}.expand_bn"))
        y = L.ReLU(6.0)(bn(L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{p}.dw")(y), f"{p}.dw_bn"))
        x = L.Add()([x, bn(L.Conv2D(16, 1, use_bias=False, name=f"{p}.project")(y), f"{p}.project_bn")])
    x = L.MaxPool2D(2)(L.ReLU(6.0)(bn(L.Conv2D(32, 1, use_bias=False, name="head")(x), "head_bn")))
    return keras.Model(inp, L.Dense(10, name="fc")(L.Flatten()(x)))


def _planted(shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    state = {}
    for name, shape in shapes.items():
        w = (rng.standard_normal(shape) * 0.3).astype(np.float32)
        if name.endswith("running_var"):
            w = np.abs(w) + np.float32(0.5)
        if name.endswith(".weight") and len(shape) >= 2 and shape[0] > 1:
            w[1] = -w[0]  # equal-norm filters 0 and 1: a tie the lower index loses
        state[name] = w
    return state


def _pair(model: str, shape):
    torch_be, tf_be = backend("torch"), backend("tensorflow")
    if model == "resnet8":
        th, kh = torch_be.load_model("resnet8", shape, 10), tf_be.load_model("resnet8", shape, 10)
    else:
        th, kh = torch_be.load_model(_torch_mbnet(), shape, 10), tf_be.load_model(_keras_mbnet(), shape, 10)
    state = _planted({k: v.shape for k, v in torch_be.state(th).items()})
    torch_be.load_state(th, state)
    tf_be.load_state(kh, state)
    return (torch_be, th), (tf_be, kh)


@pytest.mark.parametrize("model, shape", [("resnet8", (1, 28, 28)), ("mbnet", (3, 8, 8))])
def test_same_groups_same_channels_same_model(model, shape):
    import torch

    from lwdsl.backends.tf_backend.prune import KerasPruneParts
    from lwdsl.backends.torch_backend.prune import TorchPruneParts

    tf_plan, torch_plan = KerasPruneParts().plan_removal, TorchPruneParts().plan_removal

    (torch_be, th), (tf_be, kh) = _pair(model, shape)
    convs = [l.name for l in torch_be.layers(th) if l.kind == "conv"]
    assert convs == [l.name for l in tf_be.layers(kh) if l.kind == "conv"]
    groups_t, groups_k = torch_plan(th, convs), tf_plan(kh, convs)
    assert groups_t == groups_k
    assert len(groups_t) == {"resnet8": 6, "mbnet": 4}[model]
    assert any(len(g.producers) > 1 for g in groups_t)  # a residual group
    canon_t, canon_k = torch_be.state(th), tf_be.state(kh)
    keeps_t = [group_keep(g, lambda n: canon_t[f"{n}.weight"], 0.5, "l2", 2.0) for g in groups_t]
    keeps_k = [group_keep(g, lambda n: canon_k[f"{n}.weight"], 0.5, "l2", 2.0) for g in groups_k]
    assert all(np.array_equal(a, b) for a, b in zip(keeps_t, keeps_k))
    assert not any(k[0] and not k[1] for k in keeps_t)  # tied filters 0 and 1: 0 never outlives 1

    data = dataset(16, 16)
    th = torch_be.apply(th, SPEC, convs, context(data)) or th
    kh = tf_be.apply(kh, SPEC, convs, context(data))
    states = torch_be.state(th), tf_be.state(kh)
    outcome = compare_states(*states)
    assert outcome.ok, outcome.detail
    assert states[0]["fc.weight"].shape[1] < canon_t["fc.weight"].shape[1]

    x = np.random.default_rng(1).standard_normal((4, *shape)).astype(np.float32)
    th.module.eval()
    with torch.no_grad():
        a = th.module(torch.from_numpy(x)).numpy()
    b = kh.model(np.moveaxis(x, 1, -1), training=False).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
