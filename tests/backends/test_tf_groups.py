"""Removal by dependency group on tensorflow: Keras applications, refusals of Keras graphs. resnet8
on every backend: tests/contract/test_groups.py."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow
pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow

from lwdsl.backend import StepContext, get_backend  # noqa: E402
from lwdsl.errors import LwdslError  # noqa: E402
from lwdsl.runner.progress import NullBar  # noqa: E402
from lwdsl.semantics.groups import group_keep  # noqa: E402
from lwdsl.language.specs import PruneSpec  # noqa: E402
from lwdsl.backends.tf_backend._tf import keras  # noqa: E402
from lwdsl.backends.tf_backend.prune import KerasPruneParts  # noqa: E402

plan_removal = KerasPruneParts().plan_removal

SPEC = PruneSpec(method="l2", amount=0.5, structured="filters", remove=True)


def _ctx():
    return StepContext(None, seed=0, index=1, progress=lambda total, what: NullBar())


@pytest.fixture
def be():
    return get_backend("tensorflow")


def _randomize_norms(model) -> None:
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.uniform(-0.2, 0.2, b.shape), rng.uniform(-0.2, 0.2, m.shape), rng.uniform(0.5, 2, v.shape)])


def _masked_reference(handle, layers):
    """A copy whose pruned channels output zero (producers' kernels and biases, BatchNorm
    scale and shift, depthwise kernels and biases zeroed), kept channels chosen per group."""
    ref = handle.copy().model
    views = handle.view_map()
    by_name = {layer.name: layer for layer in ref.layers}
    for g in plan_removal(handle, layers):
        keep = group_keep(g, lambda n: views[n].weight.canonical(), 0.5, "l2", 2.0)
        for m in g.members:
            if m.role == "in":
                continue
            gone = m.positions(np.flatnonzero(~keep))
            arrays = by_name[m.layer].get_weights()
            for a in arrays[: 2 if m.role == "norm" else len(arrays)]:  # norm: gamma, beta
                if m.role == "depthwise" and a.ndim == 4:
                    a[:, :, gone, :] = 0.0
                elif a.ndim > 1:  # an out kernel: outputs on the last axis
                    a[..., gone] = 0.0
                else:
                    a[gone] = 0.0
            by_name[m.layer].set_weights(arrays)
    return ref


@pytest.mark.parametrize("ref, ratio", [("keras:MobileNetV2", 0.3)])
def test_every_conv_shrinks_and_the_model_computes_the_masked_model(be, ref, ratio):
    shape = (3, 32, 32)
    h = be.load_model(ref, shape, 10)
    _randomize_norms(h.model)
    convs = [l.name for l in be.layers(h) if l.kind == "conv"]
    widths = {l.name: l.shape[0] for l in be.layers(h) if l.kind == "conv"}
    reference = _masked_reference(h, convs)
    before = be.stats(h).params
    ctx = _ctx()
    small = be.apply(h, SPEC, convs, ctx)
    assert be.stats(small).params < ratio * before and ctx.notes["groups"]
    after = {l.name: l.shape[0] for l in be.layers(small) if l.kind == "conv"}
    for name, width in widths.items():  # depthwise convs follow their group: half of it too
        assert after[name] == width - round(0.5 * width), name
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(small.model(x, training=False).numpy(), reference(x, training=False).numpy(), rtol=1e-4, atol=1e-4)


def test_resnet50_residual_groups_shrink(be):
    h = be.load_model("keras:ResNet50", (3, 32, 32), 10)
    convs = [l.name for l in be.layers(h) if l.kind == "conv"]
    groups = plan_removal(h, convs)
    residual = next(g for g in groups if g.name == "conv2_block1_0_conv")
    assert residual.producers == ["conv2_block1_0_conv", "conv2_block1_3_conv", "conv2_block2_3_conv", "conv2_block3_3_conv"]
    small = be.apply(h, SPEC, convs, _ctx())
    assert be.stats(small).params < 0.3 * be.stats(h).params
    assert small.model(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 10)


def _net(kind: str):
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same", name="a")(inp)
    if kind == "reshape":
        x = L.Dense(3, name="fc")(L.Flatten()(L.Reshape((4, 8, 8))(a)))
    elif kind == "sigmoid":
        x = L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(L.Conv2D(4, 1, activation="sigmoid", name="b")(a)))
    else:  # partial: a and b meet at an addition
        x = L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(L.Add()([a, L.Conv2D(4, 1, name="b")(a)])))
    return keras.Model(inp, x)


@pytest.mark.parametrize(
    "kind, layers, message",
    [
        ("reshape", ["a"], "'reshape.*needs all its channels"),
        ("sigmoid", ["b"], "'b' ends in activation 'sigmoid'"),
        ("partial", ["b"], "tied to those of 'a' by a residual addition"),
    ],
)
def test_groups_that_cannot_shrink_are_refused_with_the_reason(be, kind, layers, message):
    h = be.load_model(_net(kind), (3, 8, 8), 3)
    before = [w.copy() for w in h.model.get_weights()]
    with pytest.raises(LwdslError, match=message) as err:
        be.apply(h, SPEC, layers, _ctx())
    assert layers[0] in err.value.message and err.value.hint
    assert all(np.array_equal(a, b) for a, b in zip(before, h.model.get_weights()))
