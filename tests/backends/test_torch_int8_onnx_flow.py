"""The int8 ONNX file flows int8 from layer to layer (lwdsl.backend.onnx_int8._activations): residual adds,
concatenations, pooling and ReLU/ReLU6 quantized as ONNX Runtime's own QDQ quantizer places them,
so ONNX Runtime runs every weighted layer in int8, with lwdsl's codes (all equal) and lwdsl's
input ranges; what stays float is named with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from torch_helpers import make_ctx, make_data, torch_backend  # first: skips unless torch is selected and installed

import torch
from torch import nn

from lwdsl.language.specs import QuantizeSpec

pytestmark = pytest.mark.torch
pytest.importorskip("onnxruntime")

SHAPE = (3, 16, 16)


class Blocks(nn.Module):
    """A stem (conv, batch norm, ReLU6), two branches concatenated, a projection added to the
    stem's output (residual), ReLU, average pooling, global pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.proj = nn.Conv2d(16, 8, 1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = nn.functional.relu6(self.bn(self.stem(x)))
        c = torch.cat([torch.relu(self.a(s)), self.b(s)], 1)
        y = torch.relu(self.proj(c) + s)
        y = nn.functional.adaptive_avg_pool2d(self.pool(y), 1)
        return self.fc(torch.flatten(y, 1))


def _handle(module=None, layers=None, name="blocks"):
    from lwdsl.backends.torch_backend.handle import TorchModel

    backend, data = torch_backend(), make_data(shape=SHAPE, n_train=64, n_test=64)
    ctx = make_ctx(data)
    torch.manual_seed(0)
    if module is None:
        handle = backend.load_model(name, data.input_shape, data.num_classes)
    else:
        handle = TorchModel(module.eval(), name, SHAPE, 10)
    names = [layer.name for layer in backend.layers(handle) if layer.kind in ("conv", "linear")]
    handle = backend.apply(handle, QuantizeSpec(dtype="int8", mode="static", calibrate=64), layers or names, ctx)
    return backend, data, ctx, handle


def _ops(model):
    from lwdsl.backends.torch_backend.int8_engine import runtime_ops

    return runtime_ops(model.SerializeToString())


def test_residual_concat_pool_and_relu6_run_int8_end_to_end_with_our_codes():
    from lwdsl.backend.engines import codes_agreement
    from lwdsl.backends.torch_backend.int8_engine import FLOAT_OPS, build_onnx, onnx_file, run_onnx, session

    torch.manual_seed(0)
    backend, data, ctx, handle = _handle(Blocks())
    model, info = build_onnx(handle)
    ops = _ops(model)
    assert not {op for op in ops if op in FLOAT_OPS}, ops  # no float Conv/Gemm/FusedConv left
    assert ops.get("QLinearConv") == 4 and ops.get("QGemm") == 1, ops
    assert ops.get("QLinearAdd") == 1 and ops.get("QLinearConcat") == 1, ops
    assert ops.get("QLinearGlobalAveragePool") == 1 and ops.get("QLinearAveragePool") == 1, ops
    assert not {"Add", "Concat", "Relu", "Clip"} & set(ops), ops
    assert info["why_float"] == {} and info["activations"]["observed"] > 0
    equal, total, _ = codes_agreement(onnx_file(model, info).codes, handle.quant)
    assert equal == total > 0
    # the file's logits stay close to lwdsl's own (fake-quantized) evaluation
    with torch.no_grad():
        ours = handle.module(torch.from_numpy(data.test_x)).numpy()
    theirs = run_onnx(session(model), data.test_x)
    assert np.abs(theirs - ours).max() <= 0.1 * (ours.max() - ours.min()), np.abs(theirs - ours).max()


def test_resnet8_every_weighted_layer_int8_in_onnx_runtime():
    from lwdsl.backend.engines import codes_agreement
    from lwdsl.backends.torch_backend.int8_engine import FLOAT_OPS, build_onnx, onnx_file

    backend, data, ctx, handle = _handle(name="resnet8")
    model, info = build_onnx(handle)
    ops = _ops(model)
    weighted = len(handle.quant)
    assert not {op for op in ops if op in FLOAT_OPS}, ops
    assert ops.get("QLinearConv", 0) + ops.get("QGemm", 0) == weighted, ops
    assert ops.get("QLinearAdd", 0) >= 1 and "Add" not in ops, ops
    equal, total, _ = codes_agreement(onnx_file(model, info).codes, handle.quant)
    assert equal == total > 0


def test_a_layer_left_float_is_named_with_the_reason():
    from lwdsl.backends.torch_backend.int8_engine import build_onnx

    torch.manual_seed(0)
    backend, data, ctx, handle = _handle(Blocks(), layers=["stem", "a", "b", "fc"])  # proj not quantized
    model, info = build_onnx(handle)
    why = info["why_float"]
    assert "not quantized" in why["proj"]
    # a and b feed the concatenation, which feeds the float proj: they cannot emit int8
    assert "runs in float" in why["a"] and "QLinearConv" in why["a"], why
    assert _ops(model).get("QLinearConv") == 1, _ops(model)  # the stem still runs int8


def test_without_calibration_images_the_unranged_tensors_stay_float_and_say_so():
    from lwdsl.backend.onnx_int8 import _BUILT
    from lwdsl.backends.torch_backend.int8_engine import build_onnx, run_onnx, session

    torch.manual_seed(0)
    backend, data, ctx, handle = _handle(Blocks())
    handle.qstate.calib = None  # as for a model loaded already quantized
    _BUILT.clear()
    model, info = build_onnx(handle)
    assert "calibration images are not at hand" in info["why_float"]["proj"], info["why_float"]
    assert np.isfinite(run_onnx(session(model), data.test_x)).all()


@pytest.mark.parametrize("lo, hi, scale, zp, removable", [
    (0.0, 6.0, 6.0 / 255, 0, True),    # ReLU6, range [0, 6]
    (0.0, 6.0, 4.0 / 255, 0, True),    # the range ends below 6: the quantizer clamps first
    (0.0, 6.0, 8.0 / 255, 0, False),   # codes above 6 exist: the clip cuts them
    (0.0, 6.0, 6.0 / 255, 10, False),  # zero point above qmin: negatives have codes
])
def test_a_clip_goes_only_where_the_quantizer_clamps_exactly_as_it_does(lo, hi, scale, zp, removable):
    from onnx import helper, numpy_helper

    from lwdsl.backend.onnx_int8 import _removable
    from lwdsl.semantics.activations import ActQuant

    node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"])
    consts = {"lo": numpy_helper.to_array(numpy_helper.from_array(np.float32(lo))), "hi": np.float32(hi)}
    assert _removable(node, ActQuant(float(np.float32(scale)), zp), consts) is removable
    relu = helper.make_node("Relu", ["x"], ["y"])
    assert _removable(relu, ActQuant(0.1, zp), {}) is (zp == 0)


def test_export_onnx_reports_int8_end_to_end_or_each_float_layer_with_why(tmp_path):
    from lwdsl.language.specs import ExportSpec

    torch.manual_seed(0)
    for layers, path in ((None, "all.onnx"), (["stem", "a", "b", "fc"], "mixed.onnx")):
        backend, data, ctx, handle = _handle(Blocks(), layers=layers)
        ctx.run_dir = tmp_path
        said: list[str] = []
        ctx.warn = said.append
        backend.apply(handle, ExportSpec(format="onnx", path=path), [], ctx)
        art = {a["path"]: a for a in ctx.notes["artifacts"]}[path]
        assert art["codes_equal"] == art["codes_total"] > 0
        if layers is None:
            assert art["int8_ops"] == 9 and art["float_ops"] == 0 and art["float_layers"] == [] and not said, (art, said)
        else:
            assert art["float_ops"] == 3 and "runs_float_unexplained" not in art, art
            assert set(art["runs_float"]) == {"a", "b", "proj"}
            assert any(f.startswith("proj (not quantized") for f in art["float_layers"]), art["float_layers"]
            assert len(said) == 1 and "a: its output feeds" in said[0], said
