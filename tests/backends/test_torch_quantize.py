"""``quantize`` on the torch backend: int8 codes bit for bit with its engine's report, calibration
through torch hooks, the int8 ONNX artifact, torch's fake quantization and snapping, ``auto``
and latency. What every backend does is in tests/contract/test_quantize.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from torch_helpers import make_ctx, make_data, torch_backend  # first: skips unless torch is selected and installed

import torch

from lwdsl.data.dataset import Dataset
from lwdsl.semantics.quant import act_qparams, fake_quantize, snap
from lwdsl.language.specs import ExportSpec, QuantizeSpec, TrainingOptions

pytestmark = pytest.mark.torch


def _model(backend, data, name="lenet5"):
    torch.manual_seed(0)
    return backend.load_model(name, data.input_shape, data.num_classes)


def _names(backend, handle):
    return [layer.name for layer in backend.layers(handle)]


def _weights(handle):
    return {name: m.weight.detach().numpy().copy() for name, m in handle.module.named_modules() if hasattr(m, "weight")}


def test_torch_fake_quantize_is_the_cores():
    from backends.torch_backend.fakequant import fake_quantize_t

    aq = act_qparams(-1.3, 2.7)
    x = np.concatenate([np.random.default_rng(0).normal(0, 2, 5000), (np.arange(-300, 300) + 0.5) * aq.scale]).astype(np.float32)
    assert fake_quantize_t(torch.from_numpy(x), aq).numpy().tobytes() == fake_quantize(x, aq).tobytes()


def _onnx_accuracy(path, data):
    from backends.torch_backend.int8_engine import run_onnx, session

    return float((run_onnx(session(str(path)), data.test_x).argmax(1) == data.test_y).mean())


@pytest.mark.slow
def test_lenet5_mnist_static_int8_accuracy_and_onnx_exports(mnist, tmp_path):
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    tr, te = rng.permutation(len(mnist.train_x))[:4000], rng.permutation(len(mnist.test_x))[:2000]
    data = Dataset("mnist-4k", mnist.train_x[tr], mnist.train_y[tr], mnist.test_x[te], mnist.test_y[te], 10)
    backend = torch_backend()
    ctx = make_ctx(data)
    ctx.run_dir = tmp_path
    said = []
    ctx.warn = said.append
    handle = _model(backend, data)
    names = _names(backend, handle)
    backend.train(handle, TrainingOptions(epochs=1, lr=0.02, momentum=0.9), ctx)
    dynamic = backend.copy_model(handle)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        float_acc, _ = backend.evaluate(handle, ctx)
        backend.apply(handle, ExportSpec(format="onnx", path="float.onnx"), names, ctx)
        assert abs(_onnx_accuracy(tmp_path / "float.onnx", data) - float_acc) <= 0.002
        backend.apply(handle, QuantizeSpec(dtype="int8", mode="static", calibrate=512), names, ctx)
        int8_acc, _ = backend.evaluate(handle, ctx)
        backend.apply(handle, ExportSpec(format="onnx", path="int8.onnx"), names, ctx)
        onnx_acc = _onnx_accuracy(tmp_path / "int8.onnx", data)
        backend.apply(dynamic, QuantizeSpec(dtype="int8", mode="dynamic"), names, ctx)
        dyn_acc, _ = backend.evaluate(dynamic, ctx)
        backend.apply(dynamic, ExportSpec(format="onnx", path="dynamic.onnx"), names, ctx)
        dyn_onnx_acc = _onnx_accuracy(tmp_path / "dynamic.onnx", data)
    assert float_acc > 0.85
    assert abs(int8_acc - float_acc) <= 0.005, (float_acc, int8_acc)
    assert abs(onnx_acc - int8_acc) <= 0.002, (onnx_acc, int8_acc)
    assert abs(dyn_onnx_acc - dyn_acc) <= 0.002, (dyn_onnx_acc, dyn_acc)
    # each export's artifact entry (the report's "Artifacts" rows), measured in ONNX Runtime
    arts = {a["path"]: a for a in ctx.notes["artifacts"]}
    static, dyn = arts["int8.onnx"], arts["dynamic.onnx"]
    assert static["codes_equal"] == static["codes_total"] > 0 and static["runs_float"] == {}
    for b in (1, 32):  # beside each int8 file, the same model as a float32 file in ONNX Runtime
        assert static[f"fp32_latency_ms_b{b}"] > 0 and dyn[f"fp32_latency_ms_b{b}"] > 0
        assert "fp32_latency_ms_b1" not in arts["float.onnx"]
    assert static["size_bytes"] == (tmp_path / "int8.onnx").stat().st_size and static["runtime"] == "onnxruntime"
    assert static["ops"].get("QLinearConv (int8)") == 2 and static["ops"].get("QGemm (int8)") == 2, static["ops"]
    assert static["int8_ops"] == 4 and static["float_ops"] == 0
    assert abs(static["accuracy"] - onnx_acc) < 1e-9 and abs(dyn["accuracy"] - dyn_onnx_acc) < 1e-9
    assert dyn["float_ops"] == 0 and dyn["int8_ops"] == 4, dyn["ops"]
    assert arts["float.onnx"]["int8_ops"] == 0 and arts["float.onnx"]["float_ops"] == 4
    assert 0 < static["latency_ms_b1"] < static["latency_ms_b32"]
    assert not said
    # the file holds int8 weights: about 4x smaller than the float one
    assert (tmp_path / "int8.onnx").stat().st_size < 0.35 * (tmp_path / "float.onnx").stat().st_size
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


# ----------------------------------------------------------------------------- low-bit forms

LOW_BIT = ["int4", "int2", "ternary", "binary"]


@pytest.mark.parametrize("dtype", LOW_BIT)
def test_torch_snap_of_a_low_bit_layer_is_the_cores(dtype):
    """Training snaps each master weight to its layer's grid in torch (fakequant.snap_t), as the
    core's snap does in numpy (what every backend trains to: tests/contract/test_quantize.py)."""
    from backends.torch_backend.fakequant import snap_t

    backend, data = torch_backend(), make_data(n_train=64, n_test=32)
    handle = _model(backend, data)
    names = _names(backend, handle)
    start = _weights(handle)
    backend.apply(handle, QuantizeSpec(dtype=dtype), names, make_ctx(data))
    for n in names:
        q = handle.quant[n]
        assert snap_t(torch.from_numpy(start[n]), q).numpy().tobytes() == snap(start[n], q.scale, q.bits).tobytes()


