"""``export torch``: a plain state dict with the masks applied, in the run folder."""

from __future__ import annotations

import pytest

from lwdsl.language.specs import ExportSpec, PruneSpec

from torch_helpers import make_ctx, torch_backend  # first: skips unless torch is selected and installed

pytestmark = pytest.mark.torch


def test_export_torch_writes_a_weights_only_state_dict_with_zeros(tmp_path):
    import torch

    be = torch_backend()
    h = be.load_model("lenet300", (1, 28, 28), 10)
    ctx = make_ctx()
    ctx.run_dir = tmp_path
    be.apply(h, PruneSpec(amount=0.5), ["fc1"], ctx)
    be.apply(h, ExportSpec(format="torch", path="out/m.pt"), [], ctx)
    state = torch.load(tmp_path / "out" / "m.pt", weights_only=True)
    assert set(state) == {f"fc{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    assert (state["fc1.weight"] == 0).float().mean().item() == pytest.approx(0.5, abs=1e-6)


def test_export_torch_says_quantized_layers_stay_float32_weights(tmp_path):
    from lwdsl.language.specs import QuantizeSpec

    be = torch_backend()
    h = be.load_model("lenet300", (1, 28, 28), 10)
    said: list[str] = []
    ctx = make_ctx()
    ctx.run_dir, ctx.warn = tmp_path, said.append
    be.apply(h, ExportSpec(format="torch", path="plain.pt"), [], ctx)
    assert said == []  # a float model: nothing to say
    be.apply(h, QuantizeSpec(dtype="int4"), ["fc1", "fc2"], ctx)
    be.apply(h, ExportSpec(format="torch", path="q.pt"), [], ctx)
    assert len(said) == 1 and said[0].startswith("export torch: the file stores 2 quantized layer(s) (fc1, fc2)")
    assert "model.lwz" in said[0] and "export onnx" in said[0]
