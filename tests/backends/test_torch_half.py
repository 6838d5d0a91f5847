"""``quantize fp16|bf16`` on the torch backend: ``model.pt`` (and ``export torch``) hold the cast
weights as torch.float16/bfloat16 tensors, half the bytes, loading back (``weights_only=True``)
to the same model; ``export onnx`` holds them as FLOAT16/BFLOAT16 initializers."""

from __future__ import annotations

import numpy as np
import pytest

from torch_helpers import make_ctx, make_data, torch_backend  # first: skips unless torch is selected and installed

import torch

from lwdsl.semantics.quant import cast_weight, half_bits
from lwdsl.language.specs import ExportSpec, QuantizeSpec

pytestmark = pytest.mark.torch

_TORCH = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _cast_model(dtype, data, ctx):
    backend = torch_backend()
    torch.manual_seed(0)
    handle = backend.load_model("lenet5", data.input_shape, data.num_classes)
    names = [layer.name for layer in backend.layers(handle)]
    before = {n: handle.module.get_submodule(n).weight.detach().numpy().copy() for n in names}
    backend.apply(handle, QuantizeSpec(dtype=dtype), names, ctx)
    return backend, handle, names, before


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_model_pt_holds_half_weights_and_loads_back_to_the_same_model(dtype, tmp_path):
    data = make_data(n_train=64, n_test=64)
    ctx = make_ctx(data)
    backend, handle, names, before = _cast_model(dtype, data, ctx)
    backend.save_native(handle, tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    for n in names:  # the cast weights in the half dtype, each the core's rounding; biases float32
        w = state[f"{n}.weight"]
        assert w.dtype == _TORCH[dtype] and state[f"{n}.bias"].dtype == torch.float32
        assert w.to(torch.float32).numpy().tobytes() == cast_weight(before[n], dtype).tobytes()
    torch.save(dict(handle.module.state_dict()), tmp_path / "fp32.pt")
    ratio = (tmp_path / "model.pt").stat().st_size / (tmp_path / "fp32.pt").stat().st_size
    assert 0.49 < ratio < 0.52, ratio
    # lwdsl loads it back to the same model, still cast (so it saves in half again)
    back = backend.load_model("lenet5", data.input_shape, data.num_classes, checkpoint=tmp_path / "model.pt")
    got, want = back.module.state_dict(), handle.module.state_dict()
    assert all(got[k].dtype == torch.float32 and torch.equal(got[k], want[k]) for k in want)
    assert back.qstate.mode == {n: dtype for n in names} and back.quant == {}
    backend.save_native(back, tmp_path / "again.pt")
    assert (tmp_path / "again.pt").read_bytes() != b"" and all(
        t.dtype == _TORCH[dtype] for k, t in torch.load(tmp_path / "again.pt", weights_only=True).items() if k.endswith(".weight"))
    # and plain PyTorch loads it into a float32 model: load_state_dict widens exactly
    plain = backend.load_model("lenet5", data.input_shape, data.num_classes).module
    plain.load_state_dict(state)
    assert all(torch.equal(plain.state_dict()[k], want[k]) for k in want)
    # a .lwz of the cast model loads back cast too
    from lwdsl.backend.weights import save_weights

    save_weights(tmp_path / "half.lwz", backend.state(handle))
    lwz = backend.load_model("lenet5", data.input_shape, data.num_classes, checkpoint=tmp_path / "half.lwz")
    assert lwz.qstate.mode == {n: dtype for n in names}


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_export_torch_and_onnx_hold_16_bit_weights_measured_in_their_runtime(dtype, tmp_path):
    import onnx
    from onnx import TensorProto

    data = make_data(n_train=64, n_test=200)
    ctx = make_ctx(data)
    ctx.run_dir = tmp_path
    backend, handle, names, before = _cast_model(dtype, data, ctx)
    acc, _ = backend.evaluate(handle, ctx)
    backend.apply(handle, ExportSpec(format="torch"), names, ctx)
    backend.apply(handle, ExportSpec(format="onnx"), names, ctx)
    pt, ox = ctx.notes["artifacts"]
    assert pt["path"] == "model-export.pt" and pt["weights_dtype"] == str(_TORCH[dtype]).replace("torch.", "")
    assert pt["accuracy"] == acc and pt["half_layers_equal"] == pt["half_layers"] == len(names) and pt["latency_ms_b1"] > 0
    model = onnx.load(str(tmp_path / "model.onnx"))
    inits = {t.name: t for t in model.graph.initializer}
    kind = TensorProto.FLOAT16 if dtype == "fp16" else TensorProto.BFLOAT16
    for n in names:
        t = inits[f"{n}.weight_{dtype}"]
        assert t.data_type == kind and f"{n}.weight" not in inits
        assert np.frombuffer(t.raw_data, np.uint16).tobytes() == half_bits(before[n], dtype).tobytes()
    assert sum(node.op_type == "Cast" for node in model.graph.node) == len(names)
    assert ox["weights_dtype"] == ("float16" if dtype == "fp16" else "bfloat16") and ox["half_layers"] == len(names)
    assert abs(ox["accuracy"] - acc) <= 0.01, (ox["accuracy"], acc)  # ONNX Runtime's float32 kernels
    # the float32 ONNX of the same model is about twice the size
    from lwdsl.backends.torch_backend.int8_engine import export_float

    fp32 = len(export_float(handle.module, handle.input_shape).SerializeToString())
    assert 0.49 < ox["size_bytes"] / fp32 < 0.52, (ox["size_bytes"], fp32)
