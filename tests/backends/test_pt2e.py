"""``export pt2e``: PT2E's x86 int8 program holding lwdsl's codes, scales and input ranges
(pt2e_engine.py), saved without float copies, loaded back and compiled by inductor; where there
is no such file, the export falls back (said) and the run goes on.

Inductor compiles are slow (tens of seconds each on a small CPU): one module-scoped model and
file, and one slow test that compiles."""

from __future__ import annotations

import io

import numpy as np
import pytest

from torch_helpers import make_ctx, make_data, torch_backend  # first: skips unless torch is selected and installed

import torch
from torch import nn

from lwdsl.backend.engines import codes_agreement
from lwdsl.errors import LwdslError, RecipeError
from lwdsl.language.specs import ExportSpec, QuantizeSpec

pytestmark = pytest.mark.torch
pytest.importorskip("torchao", reason="export pt2e needs the pt2e extra (pip install 'lwdsl[pt2e]')")
pytest.importorskip("onnxruntime")

SHAPE = (3, 16, 16)


class Net(nn.Module):
    """A conv and ReLU, a max pool (PT2E shares its quantization across it), a residual block,
    global pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.max_pool2d(torch.relu(self.a(x)), 2)
        y = torch.relu(self.b(y)) + y
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def _quantized(mode: str = "static", layers=None):
    from lwdsl.backends.torch_backend.handle import TorchModel

    backend, data = torch_backend(), make_data(shape=SHAPE, n_train=64, n_test=64)
    ctx = make_ctx(data)
    torch.manual_seed(0)
    handle = TorchModel(Net().eval(), "net", SHAPE, 10)
    names = layers or [layer.name for layer in backend.layers(handle) if layer.kind in ("conv", "linear")]
    return backend, ctx, backend.apply(handle, QuantizeSpec(dtype="int8", mode=mode, calibrate=64), names, ctx)


@pytest.fixture(scope="module")
def quantized():
    return _quantized()


@pytest.fixture(scope="module")
def built(quantized):
    from lwdsl.backends.torch_backend.pt2e_engine import PT2E

    return PT2E.build(quantized[2])


def _program(data: bytes):
    from lwdsl.backends.torch_backend.pt2e_engine import read

    return read(data)


def test_the_files_codes_scales_and_input_ranges_are_lwdsls(quantized, built):
    from lwdsl.backends.torch_backend.pt2e_engine import _tensors, codes_in

    handle = quantized[2]
    codes = codes_in(built.data)  # read back from the saved bytes
    assert set(codes) == set(handle.quant) == {"a", "b", "fc"}
    equal, total, _ = codes_agreement(codes, handle.quant)
    assert equal == total == sum(q.codes.size for q in handle.quant.values())
    program, meta = _program(built.data)
    tensors = _tensors(program)
    for layer, q in handle.quant.items():
        assert tensors[meta["layers"][layer]["codes"]].dtype == torch.int8
        np.testing.assert_array_equal(tensors[meta["layers"][layer]["scale"]].numpy(),
                                      np.broadcast_to(np.asarray(q.scale, np.float32).reshape(-1), (q.codes.shape[0],)))
    # each layer reads its input through lwdsl's (scale, zero point): the weight's placeholder names the layer
    sig = program.graph_signature
    constant = {**sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants, **sig.inputs_to_parameters}
    layer_of = {names["codes"]: layer for layer, names in meta["layers"].items()}
    seen = {}
    for node in program.graph.nodes:
        if node.op == "call_function" and str(node.target) in ("aten.conv2d.default", "aten.linear.default"):
            weight_codes = node.args[1].args[0]
            layer = layer_of[constant[weight_codes.name]]
            x_dq = node.args[0]
            assert "dequantize_per_tensor" in str(x_dq.target)
            seen[layer] = (x_dq.args[1], x_dq.args[2])
            assert "quantize_per_tensor" in str(x_dq.args[0].target) and x_dq.args[0].args[1:3] == x_dq.args[1:3]
    assert seen == {layer: (float(aq.scale), int(aq.zero_point)) for layer, aq in handle.act.items()}
    # no float copy of a quantized weight is kept (convert_pt2e leaves them on the module), and the
    # example input the program keeps is zeros, not calibration images
    assert not [k for k in tensors if k.endswith(".weight")]
    args, _ = program.example_inputs
    assert args[0].shape == (2, *SHAPE) and not args[0].any()


def test_saving_and_loading_gives_the_same_program(quantized):
    from lwdsl.backends.torch_backend.pt2e_engine import _layout, build_program, save

    program, meta = build_program(quantized[2])
    x = _layout(torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        before = program.module()(x)
        loaded, meta_back = _program(save(program, meta))
        after = loaded.module()(x)
    assert meta_back == meta
    assert torch.equal(before, after)


def test_models_without_a_pt2e_int8_form_are_refused_with_the_reason():
    from lwdsl.backends.torch_backend.pt2e_engine import build_program

    with pytest.raises(LwdslError, match="mode static or qat.*a, b, fc are not"):
        build_program(_quantized("dynamic")[2])
    with pytest.raises(LwdslError, match="quantizes every conv and linear layer; fc is not quantized"):
        build_program(_quantized("static", ["a", "b"])[2])


def _export(backend, ctx, handle, tmp_path):
    ctx.run_dir = tmp_path
    said: list[str] = []
    ctx.warn = said.append
    ctx.notes.clear()
    backend.apply(handle, ExportSpec(format="pt2e"), [], ctx)
    return ctx.notes["artifacts"][-1], said


def test_no_vnni_or_a_failed_compile_falls_back_to_the_onnx_file_with_the_reason(quantized, built, tmp_path, monkeypatch):
    from lwdsl.backends.torch_backend import pt2e_engine

    backend, ctx, handle = quantized
    monkeypatch.setattr(pt2e_engine, "cpu_refusal", lambda: "this CPU has no VNNI or AMX int8 dot-product instructions")
    entry, said = _export(backend, ctx, handle, tmp_path)
    assert entry["written"] is False and "no VNNI or AMX" in entry["fallback"] and "size_bytes" not in entry
    assert not (tmp_path / "model.pt2").exists()
    assert len(said) == 1 and "no .pt2 file written" in said[0] and "int8 ONNX file" in said[0]
    monkeypatch.undo()

    def broken(self, data, threads=1):
        raise AssertionError("expected size 20==20, stride 1==576 at dim=1")

    monkeypatch.setattr(pt2e_engine.Pt2eEngine, "load", broken)
    entry, said = _export(backend, ctx, handle, tmp_path)
    assert entry["written"] is False and "inductor cannot compile it (AssertionError: expected size" in entry["fallback"]
    assert not (tmp_path / "model.pt2").exists() and len(said) == 1


def test_a_missing_torchao_is_refused_before_the_run_naming_the_extra(monkeypatch):
    import lwdsl
    from lwdsl.backends.torch_backend import pt2e_engine
    from lwdsl.language.validate import check_backend

    backend = torch_backend()
    monkeypatch.setattr(pt2e_engine, "torchao_missing", lambda: "export pt2e needs torchao's PT2E flow (ModuleNotFoundError)")
    why = backend.unsupported(ExportSpec(format="pt2e"))
    assert why is not None and "pip install 'lwdsl[pt2e]'" in why
    assert backend.unsupported(ExportSpec(format="onnx")) is None
    with pytest.raises(RecipeError) as info:
        check_backend(lwdsl.parse("quantize int8\nexport pt2e"), backend)
    assert info.value.exit_code == 2 and "lwdsl[pt2e]" in info.value.render()


def test_pt2e_after_a_form_it_cannot_hold_is_refused_by_check():
    import lwdsl

    with pytest.raises(RecipeError, match="export pt2e holds int8 models"):
        lwdsl.parse("quantize fp16\nexport pt2e")


@pytest.mark.slow
def test_export_writes_the_file_inductor_runs_measured_from_disk(quantized, built, tmp_path):
    """One export (inductor compiles the file at batch 1, 32 and the test set's batch, and its
    fp32 twin): the file on disk is the one built, its codes all equal, every weighted op int8,
    the int8 ONNX file's latency beside it; loaded back and compiled, its outputs are the
    program's (int8 kernels: within a few output steps, the same classes)."""
    from lwdsl.backends.torch_backend.pt2e_engine import PT2E, _layout

    backend, ctx, handle = quantized
    entry, said = _export(backend, ctx, handle, tmp_path)
    assert said == []
    data = (tmp_path / "model.pt2").read_bytes()
    assert data == built.data and entry["size_bytes"] == len(data) and entry["format"] == "pt2e"
    assert entry["codes_equal"] == entry["codes_total"] > 0
    assert (entry["int8_ops"], entry["float_ops"]) == (3, 0)
    assert entry["accuracy"] is not None
    for key in ("latency_ms_b1", "latency_ms_b32", "fp32_latency_ms_b1", "onnx_latency_ms_b1", "onnx_latency_ms_b32"):
        assert entry[key] > 0
    assert {entry["faster_b1"], entry["faster_b32"]} <= {"pt2e", "onnx"}
    x = np.random.default_rng(2).standard_normal((32, *SHAPE)).astype(np.float32)
    compiled = PT2E.load(data, 1)(x)()
    program, _ = _program(data)
    with torch.no_grad():
        eager = program.module()(_layout(torch.from_numpy(x))).numpy()
    assert np.abs(compiled - eager).max() <= 0.05 * np.abs(eager).max()
    assert np.mean(compiled.argmax(1) == eager.argmax(1)) >= 0.9
