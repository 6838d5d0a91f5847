"""``quantize`` on the torch backend: int8 codes bit for bit with its engine's report, calibration
through torch hooks, the int8 ONNX artifact, torch's fake quantization and snapping, ``auto``
and latency. What every backend does is in tests/contract/test_quantize.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from torch_helpers import make_ctx, make_data, torch_backend  # first: skips unless torch is selected and installed

import torch
from torch import nn

from lwdsl.data.dataset import Dataset
from lwdsl.semantics.order import calibration_indices
from lwdsl.semantics.quant import act_qparams, fake_quantize, quantize_weight, snap
from lwdsl.language.specs import ExportSpec, FinetuneSpec, PruneSpec, QuantizeSpec, TrainingOptions

pytestmark = pytest.mark.torch


def _model(backend, data, name="lenet5"):
    torch.manual_seed(0)
    return backend.load_model(name, data.input_shape, data.num_classes)


def _names(backend, handle):
    return [layer.name for layer in backend.layers(handle)]


def _weights(handle):
    return {name: m.weight.detach().numpy().copy() for name, m in handle.module.named_modules() if hasattr(m, "weight")}


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_codes_equal_the_cores_bit_for_bit_and_pruned_zeros_stay_code_0(granularity):
    backend, data = torch_backend(), make_data(n_train=64, n_test=32)
    ctx = make_ctx(data)
    handle = _model(backend, data)
    names = _names(backend, handle)
    backend.apply(handle, PruneSpec(scope="global", method="l1", amount=0.5), names, ctx)
    before = _weights(handle)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend.apply(handle, QuantizeSpec(dtype="int8", granularity=granularity), names, ctx)
    assert set(handle.quant) == set(names)
    for name in names:
        want = quantize_weight(before[name], 8, granularity)
        got = handle.quant[name]
        assert got.codes.dtype == np.int8 and np.array_equal(got.codes, want.codes)
        assert got.scale.tobytes() == want.scale.tobytes()
        assert handle.module.get_submodule(name).weight.detach().numpy().tobytes() == want.dequantize().tobytes()
        assert (got.codes[before[name] == 0] == 0).all()
        assert (got.codes[~handle.masks[name].numpy()] == 0).all()
    report = ctx.notes["int8_artifact"]
    assert report["codes_equal"] == report["codes_total"] == sum(before[n].size for n in names)


def test_torch_fake_quantize_is_the_cores():
    from backends.torch_backend.fakequant import fake_quantize_t

    aq = act_qparams(-1.3, 2.7)
    x = np.concatenate([np.random.default_rng(0).normal(0, 2, 5000), (np.arange(-300, 300) + 0.5) * aq.scale]).astype(np.float32)
    assert fake_quantize_t(torch.from_numpy(x), aq).numpy().tobytes() == fake_quantize(x, aq).tobytes()


def test_static_calibration_ranges_equal_a_numpy_observer_and_too_many_warns():
    backend, data = torch_backend(), make_data(n_train=300, n_test=64)
    ctx = make_ctx(data, seed=3)
    said = []
    ctx.warn = said.append
    handle = _model(backend, data)
    names = _names(backend, handle)
    backend.apply(handle, QuantizeSpec(dtype="int8", mode="static", calibrate=200), names, ctx)
    # the same inputs, collected in numpy: float activations, quantized weights
    seen = {name: [] for name in names}
    hooks = [
        handle.module.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: seen[n].append(a[0].numpy().copy()))
        for n in names
    ]
    with torch.no_grad():
        handle.module(torch.from_numpy(data.train_x[calibration_indices(300, 200, 3)]))
    for h in hooks:
        h.remove()
    for name in names:
        x = np.concatenate([v.ravel() for v in seen[name]])
        lo, hi = float(x.min()), float(x.max())
        assert ctx.notes["quantized"][name]["act_range"] == [lo, hi]
        assert handle.act[name] == act_qparams(lo, hi)
    assert not said
    ctx2 = make_ctx(data)
    ctx2.warn = said.append
    backend.apply(_model(backend, data), QuantizeSpec(dtype="int8", mode="static", calibrate=1000), names, ctx2)
    assert len(said) == 1 and "calibrate=1000" in said[0] and "all 300" in said[0]


@pytest.mark.parametrize("mode", ["static", "qat"])
def test_training_after_quantize_keeps_every_weight_on_the_grid_and_the_masks(mode):
    backend, data = torch_backend(), make_data(n_train=256, n_test=32)
    ctx = make_ctx(data)
    handle = _model(backend, data)
    names = _names(backend, handle)
    backend.apply(handle, PruneSpec(amount=0.5), names, ctx)
    keep = {n: handle.masks[n].numpy().copy() for n in names}
    backend.apply(handle, QuantizeSpec(dtype="int8", mode=mode, calibrate=64), names, ctx)
    codes = {n: handle.quant[n].codes.copy() for n in names}
    backend.apply(handle, FinetuneSpec(epochs=1, lr=0.05), names, ctx)
    moved = 0
    for n in names:
        w, q = handle.module.get_submodule(n).weight.detach().numpy(), handle.quant[n]
        assert w.tobytes() == snap(w, q.scale).tobytes()
        assert w.tobytes() == q.dequantize().tobytes()
        assert (w[~keep[n]] == 0).all() and (q.codes[~keep[n]] == 0).all()
        moved += int((q.codes != codes[n]).sum())
    assert moved > 0  # it trained


def test_a_layer_that_cannot_be_quantized_is_named():
    backend, data = torch_backend(), make_data(shape=(1, 8, 8), n_train=64, n_test=32)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    handle = backend.load_model(net, data.input_shape, data.num_classes)
    ctx = make_ctx(data)
    said = []
    ctx.warn = said.append
    backend.apply(handle, QuantizeSpec(dtype="int8", mode="static", calibrate=32), _names(backend, handle), ctx)
    assert set(handle.quant) == {"0", "3"}
    assert len(said) == 1 and "1 (norm)" in said[0]
    assert ctx.notes["float_layers"] == [{"layer": "1", "kind": "norm", "why": "only conv and linear layers are quantized"}]


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


def test_auto_quantizes_each_layer_to_the_cores_choice_from_measured_sensitivity():
    from lwdsl.semantics.auto_bits import TRIAL_FORMS, choose_bits, kl_sensitivity, trial_weight
    from lwdsl.semantics.quant import quantize_as

    backend, data = torch_backend(), make_data(n_train=64, n_test=32)
    ctx = make_ctx(data)
    handle = _model(backend, data)
    names = _names(backend, handle)
    before = _weights(handle)
    spec = QuantizeSpec(dtype="auto", budget=3, calibrate=48)
    # the sensitivity by hand: the model's logits on the calibration images, one layer quantized
    x = torch.as_tensor(data.train_x[calibration_indices(len(data.train_x), 48, ctx.seed)])
    ref_model = _model(backend, data).module.eval()
    with torch.no_grad():
        reference = ref_model(x).numpy()
        sens = {}
        for n in names:
            sens[n] = {}
            for form in TRIAL_FORMS:
                ref_model.get_submodule(n).weight.copy_(torch.from_numpy(trial_weight(before[n], form)))
                sens[n][form] = kl_sensitivity(reference, ref_model(x).numpy())
            ref_model.get_submodule(n).weight.copy_(torch.from_numpy(before[n]))
    backend.apply(handle, spec, names, ctx)
    report = ctx.notes["auto_bits"]
    assert report["sensitivity"] == "kl" and report["calibration_images"] == 48
    assert {r["layer"]: {f: r["sensitivity"][f] for f in TRIAL_FORMS} for r in report["layers"]} == sens
    want = {c.layer: c.form for c in choose_bits({n: before[n] for n in names}, 3, sensitivity=sens)}
    assert [r["form"] for r in report["layers"]] == [want[n] for n in names] and report["average_bits"] <= 3
    for name in names:
        if want[name] == "float":
            assert name not in handle.quant
            assert handle.module.get_submodule(name).weight.detach().numpy().tobytes() == before[name].tobytes()
        else:
            q = quantize_as(before[name], want[name])
            assert np.array_equal(handle.quant[name].codes, q.codes) and handle.qstate.mode[name] == "weights_only"
    assert len(set(want.values())) > 1  # mixed precision on lenet5 at 3 bits
    bars = [b.description for b in ctx.extra["bars"]]
    assert any(d.startswith("auto: sensitivity on 48 images") for d in bars)
    # same seed, same choice; the weight-error fallback without training images
    again = make_ctx(data)
    h2 = _model(backend, data)
    backend.apply(h2, spec, names, again)
    assert again.notes["auto_bits"] == report
    empty = Dataset("none", data.train_x[:0], data.train_y[:0], data.test_x, data.test_y, data.num_classes)
    h3, ctx3 = _model(backend, data), make_ctx(empty)
    backend.apply(h3, spec, names, ctx3)
    assert ctx3.notes["auto_bits"]["sensitivity"] == "weight_error"
    assert [r["form"] for r in ctx3.notes["auto_bits"]["layers"]] == [
        c.form for c in choose_bits({n: before[n] for n in names}, 3)]


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


