"""Batch-norm folding before ``quantize``: the same folded weights and codes on both backends.

One user model (conv -> batch norm -> relu -> depthwise conv -> batch norm -> conv -> batch
norm -> flatten -> linear) is built
in both frameworks with the same canonical weights and norm statistics (negative scales
included); ``quantize int8`` folds each norm into its conv with the core's rule, so the folded
biases and the int8 codes and scales must be bit-identical, the norms must be gone from both
models, and each quantized model must compute what the float model with its norms did (up to
the quantization error).
"""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.language.specs import QuantizeSpec

from .cases import backend, context, dataset

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

C1, C2 = 6, 8


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {
        "c1.weight": rng.standard_normal((C1, 1, 3, 3)) * 0.3,
        "c1.bias": rng.standard_normal(C1) * 0.1,
        "dw.weight": rng.standard_normal((C1, 1, 3, 3)) * 0.3,
        "c2.weight": rng.standard_normal((C2, C1, 3, 3)) * 0.2,
        "fc.weight": rng.standard_normal((10, C2 * 22 * 22)) * 0.01,
        "fc.bias": rng.standard_normal(10) * 0.1,
    }
    for bn, c in (("n1", C1), ("nd", C1), ("n2", C2)):
        w[f"{bn}.weight"] = rng.standard_normal(c)  # some negative scales
        w[f"{bn}.bias"] = rng.standard_normal(c) * 0.1
        w[f"{bn}.running_mean"] = rng.standard_normal(c) * 0.1
        w[f"{bn}.running_var"] = rng.random(c) + 0.5
    w["c2.weight"][0, 0, 0, 0] = 0.0  # a zero stays a zero code after the fold
    return {k: np.asarray(v, np.float32) for k, v in w.items()}


def _torch_handle(w):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.n1 = nn.Conv2d(1, C1, 3), nn.BatchNorm2d(C1)
            self.dw, self.nd = nn.Conv2d(C1, C1, 3, groups=C1, bias=False), nn.BatchNorm2d(C1)
            self.c2, self.n2 = nn.Conv2d(C1, C2, 3, bias=False), nn.BatchNorm2d(C2)
            self.fc = nn.Linear(C2 * 22 * 22, 10)

        def forward(self, x):
            x = torch.relu(self.n1(self.c1(x)))
            x = self.nd(self.dw(x))
            x = torch.relu(self.n2(self.c2(x)))
            return self.fc(torch.flatten(x, 1))

    net = Net()
    sd = net.state_dict()
    sd.update({k: torch.from_numpy(v) for k, v in w.items()})
    net.load_state_dict(sd)
    return backend("torch").load_model(net.eval(), (1, 28, 28), 10)


def _keras_handle(w):
    from lwdsl.backends.tf_backend._tf import keras

    L = keras.layers
    inp = keras.Input((28, 28, 1))
    x = L.Conv2D(C1, 3, name="c1")(inp)
    x = L.BatchNormalization(name="n1", epsilon=1e-5)(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, use_bias=False, name="dw")(x)
    x = L.BatchNormalization(name="nd", epsilon=1e-5)(x)
    x = L.Conv2D(C2, 3, use_bias=False, name="c2")(x)
    x = L.BatchNormalization(name="n2", epsilon=1e-5)(x)
    x = L.ReLU()(x)
    x = L.Dense(10, name="fc")(L.Flatten()(x))
    model = keras.Model(inp, x)
    be = backend("tensorflow")
    handle = be.load_model(model, (1, 28, 28), 10)
    be.load_state(handle, w)
    return handle


def _float_logits(name, handle, x):
    if name == "torch":
        import torch

        with torch.no_grad():
            return handle.module.eval()(torch.from_numpy(x)).numpy()
    return handle.model(np.transpose(x, (0, 2, 3, 1)), training=False).numpy()


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_fold_gives_identical_codes_on_both_backends(mode):
    w = _weights()
    data = dataset(128, 32)
    out = {}
    for name, make in (("torch", _torch_handle), ("tensorflow", _keras_handle)):
        be = backend(name)
        handle = make(w)
        before = _float_logits(name, handle, data.test_x)
        ctx = context(data)
        handle = be.apply(handle, QuantizeSpec(dtype="int8", mode=mode, calibrate=64), ["c1", "dw", "c2", "fc"], ctx)
        assert ctx.notes["folded"] == {"c1": "n1", "dw": "nd", "c2": "n2"}
        after = _float_logits(name, handle, data.test_x)
        kinds = {i.name: i.kind for i in be.layers(handle)}
        assert "norm" not in kinds.values(), kinds
        out[name] = (be.state(handle), before, after, dict(handle.quant))
    (st, bt, at, qt), (sk, bk, ak, qk) = out["torch"], out["tensorflow"]
    assert set(st) == set(sk)
    for k in st:
        a, b = np.ascontiguousarray(st[k]), np.ascontiguousarray(sk[k])
        assert a.dtype == b.dtype and a.shape == b.shape, k
        if ".act." in k:  # calibrated ranges: each framework's own forward pass (test_quantize_parity)
            assert np.allclose(a, b, rtol=1e-5, atol=0), k
        else:
            assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), k
    for layer in ("c1", "dw", "c2", "fc"):
        assert np.array_equal(qt[layer].codes, qk[layer].codes) and np.array_equal(qt[layer].scale, qk[layer].scale)
    assert qt["c2"].codes[0, 0, 0, 0] == 0
    # the folded, int8-weight model computes what the float model with its norms did
    for before, after in ((bt, at), (bk, ak)):
        assert np.max(np.abs(after - before)) < 0.05 * np.max(np.abs(before)), np.max(np.abs(after - before))


@pytest.mark.parametrize("name, make", [("torch", _torch_handle), ("tensorflow", _keras_handle)])
def test_a_folded_state_loads_back_into_a_fresh_model(name, make, tmp_path):
    """model.lwz of a folded, quantized model marks its norms (``<norm>.folded``): a freshly built
    model with the norms loads it and computes exactly what the saved one did."""
    from lwdsl.backend.weights import load_weights, save_weights

    be = backend(name)
    data = dataset(64, 16)
    handle = be.apply(make(_weights()), QuantizeSpec(dtype="int8", mode="dynamic"), ["c1", "dw", "c2", "fc"], context(data))
    state = be.state(handle)
    assert {k for k in state if k.endswith(".folded")} == {"n1.folded", "nd.folded", "n2.folded"}
    save_weights(tmp_path / "m.lwz", state)
    fresh = make(_weights(seed=1))  # other weights, norms still in place
    be.load_state(fresh, load_weights(tmp_path / "m.lwz")[0])
    assert "norm" not in {i.name: i.kind for i in be.layers(fresh)}.values()
    assert np.array_equal(_float_logits(name, fresh, data.test_x), _float_logits(name, handle, data.test_x))
    assert set(fresh.quant) == {"c1", "dw", "c2", "fc"}
    again = be.state(fresh)
    assert set(again) == set(state)
