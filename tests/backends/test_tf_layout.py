"""Keras weights <-> canonical layout: exact round trips and PyTorch's flatten order."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow
pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow
import keras  # noqa: E402

from lwdsl.backends.tf_backend.layers import flatten_source, layer_infos, load_state_into, state_of, views  # noqa: E402
from lwdsl.backends.tf_backend.models import build_zoo  # noqa: E402
from lwdsl.errors import LwdslError  # noqa: E402


def _mixed_model():
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = keras.layers.Conv2DTranspose(3, 2, name="up")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dropout(0.1, name="drop")(x)
    x = keras.layers.Dense(5, name="fc")(x)
    return keras.Model(inp, x)


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()])


def test_round_trip_is_exact():
    model = _mixed_model()
    _randomise(model)
    state = state_of(model)
    assert state["conv.weight"].shape == (4, 3, 3, 3)
    assert state["dw.weight"].shape == (8, 1, 3, 3)
    assert state["up.weight"].shape == (8, 3, 2, 2)  # PyTorch ConvTranspose: (in, out, kh, kw)
    assert {"bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"} <= set(state)
    other = _mixed_model()
    load_state_into(other, state)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), other.get_weights()))


def test_kinds_and_shapes():
    infos = {i.name: i for i in layer_infos(_mixed_model())}
    assert [infos[n].kind for n in ("conv", "bn", "dw", "up", "fc")] == ["conv", "norm", "conv", "other", "linear"]
    assert infos["conv"].params == 4 * 3 * 9 + 4 and infos["bn"].params == 8  # running stats are buffers


def test_dense_after_flatten_uses_torch_order():
    """canonical_fc @ torch_flatten(f) == keras_kernel.T @ keras_flatten(f) for any map f."""
    model = build_zoo("lenet5", (1, 28, 28), 10)
    _randomise(model, 1)
    fc1 = next(v for v in views(model) if v.name == "fc1")
    assert flatten_source(fc1.layer) == (4, 4, 50)
    f = np.random.default_rng(2).standard_normal((4, 4, 50)).astype(np.float64)  # H, W, C
    keras = fc1.weight.variable.numpy().astype(np.float64).T @ f.reshape(-1)
    torch_order = f.transpose(2, 0, 1).reshape(-1)  # C, H, W
    np.testing.assert_allclose(fc1.weight.canonical() @ torch_order, keras, rtol=1e-12)


def test_masks_convert_with_the_weights():
    model = build_zoo("seedcnn", (1, 28, 28), 10)
    fc1 = next(v for v in views(model) if v.name == "fc1")
    keep = np.random.default_rng(0).random(fc1.weight.shape) < 0.5
    assert np.array_equal(fc1.weight.to_canon(fc1.weight.from_canon(keep)), keep)


def test_mismatch_names_the_tensor():
    model = build_zoo("lenet5", (1, 28, 28), 10)
    state = state_of(model)
    state["fc2.weight"] = state["fc2.weight"][:, :7]
    with pytest.raises(LwdslError, match="fc2.weight"):
        load_state_into(model, state)
    state = state_of(model)
    del state["conv2.bias"]
    with pytest.raises(LwdslError, match="conv2.bias"):
        load_state_into(model, state)
    state = state_of(model)
    state["fc9.weight"] = np.zeros(3, np.float32)
    with pytest.raises(LwdslError, match="fc9.weight"):
        load_state_into(model, state)
