"""``quantize int4 method=gptq group=G`` on tiny-llama (torch): the layer objective GPTQ lowers
below round-to-nearest on every targeted layer, its codes in the quantization state (the .lwz),
and SparseGPT 2:4 followed by GPTQ int4 keeping the 2:4 mask."""

from __future__ import annotations


import pytest

from torch_helpers import make_ctx, torch_backend  # first: skips unless torch is selected and installed

pytest.importorskip("transformers", reason="transformer models need transformers (pip install 'lwdsl[llm]')")
pytest.importorskip("tokenizers", reason="--data pydoc needs tokenizers (pip install 'lwdsl[llm]')")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import lwdsl  # noqa: E402
from llm_helpers import LLAMA_LINEAR, llm_cache  # noqa: E402,F401  (llm_cache: the shared cache, autouse)

pytestmark = pytest.mark.torch

LINEAR = LLAMA_LINEAR


@pytest.mark.parametrize("dtype, bits, group", [("int4", 4, 32), ("int8", 8, None), ("int2", 2, 64)])
def test_gptq_is_below_round_to_nearest_on_every_layer_and_stores_its_codes(dtype, bits, group):
    from lwdsl.backend.calibrated import gram_matrices
    from lwdsl.backends.torch_backend.quantize import TorchQuantizeParts, quantize
    from lwdsl.data.builtin import load_data
    from lwdsl.semantics.hessian import output_error
    from lwdsl.semantics.quant import quantize_weight

    be = torch_backend()
    torch.manual_seed(0)
    handle = be.load_model("tiny-llama", (128,), 2048)
    ctx = make_ctx(load_data("pydoc"))
    parts = TorchQuantizeParts()
    floats = {name: parts.weight(handle, name) for name in LINEAR}
    grams, examples = gram_matrices(parts, handle, LINEAR, 32, ctx, "test")  # the same examples as the step's
    g = f" group={group}" if group else ""
    (spec,) = lwdsl.parse(f'quantize {dtype} method=gptq{g} calibrate=32 except "lm_head"').steps
    quantize(handle, spec, LINEAR, ctx)
    errors = ctx.notes["layer_output_error"]
    assert set(errors) == set(LINEAR) and ctx.notes["calibration"]["examples"] == examples == 32
    qmax = 2 ** (bits - 1) - 1
    for name in LINEAR:
        w, h = floats[name], grams[name].h
        rtn = quantize_weight(w, bits, group=group)
        q = handle.quant[name]
        gptq = output_error(w, q.dequantize(), h)
        assert gptq == pytest.approx(errors[name], abs=1e-8)  # the notes round to 8 decimals
        assert gptq < output_error(w, rtn.dequantize(), h), name  # every targeted layer
        assert q.codes.dtype == np.int8 and np.abs(q.codes).max() <= qmax and q.group == group
        assert np.array_equal(q.scale, rtn.scale)  # the group's (row's) round-to-nearest scale
        assert np.array_equal(parts.weight(handle, name), q.dequantize())  # the model computes with codes * scale
        assert ctx.notes["quantized"][name]["method"] == "gptq"
    assert "lm_head" not in handle.quant
    state = be.state(handle)  # the .lwz holds the codes, scales and groups
    assert (state["model.layers.0.mlp.up_proj.weight.group"] == group) if group else "model.layers.0.mlp.up_proj.weight.group" not in state
    fresh = be.load_model("tiny-llama", (128,), 2048)
    be.load_state(fresh, state)
    assert np.array_equal(fresh.quant["model.layers.1.mlp.down_proj"].codes, handle.quant["model.layers.1.mlp.down_proj"].codes)
    x = torch.randint(0, 2048, (1, 128), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fresh.module(x), handle.module(x))


def test_sparsegpt_2_4_then_gptq_int4_keeps_the_mask():
    result = lwdsl.run('prune sparsegpt 50% nm=2:4 calibrate=32 except "lm_head"\n'
                       'quantize int4 method=gptq group=32 calibrate=32 except "lm_head"', "tiny-llama", data="pydoc",
                       baseline_epochs=0, quiet=True, latency=False)
    row = result.report["steps"][-1]
    assert set(row["layer_output_error"]) == set(LINEAR) and row["calibration"]["examples"] == 32
    assert row["quantized"]["model.layers.0.self_attn.q_proj"] == {
        "bits": 4, "form": "int4", "granularity": "per_channel", "mode": "weights_only", "method": "gptq", "group": 32}
    sparsity = {layer["name"]: layer["sparsity"] for layer in row["metrics"]["layers"]}
    # at least half: a kept weight may round to code 0 too
    assert all(0.5 <= sparsity[name] < 0.6 for name in LINEAR) and sparsity["lm_head"] == 0.0
    for name in LINEAR:
        w = result.module.get_submodule(name).weight.detach().numpy()
        assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all(), name  # 2:4 survives quantization
        codes = result.model.quant[name].codes  # GPTQ updates every column not yet visited: the mask keeps the zeros
        assert np.array_equal(codes != 0, w != 0) and ((codes.reshape(codes.shape[0], -1, 4) != 0).sum(-1) <= 2).all()
    assert np.isfinite(row["metrics"]["perplexity"])


def test_group_scales_stay_fixed_while_fine_tuning(tmp_path):
    """``quantize int4 group=32 | finetune``: training snaps each weight to its group's fixed
    scale (a partial last group included: lenet300's fc1 has 784 inputs), and the .lwz reloads it."""
    from lwdsl.semantics.quant import codes_with_scale

    result = lwdsl.run("quantize int4 group=32 on linear | finetune epochs=1 lr=0.01", "lenet300", data="synthetic:1,28,28:10",
                       baseline_epochs=0, quiet=True, latency=False, out=tmp_path / "run")
    handle = result.model
    q = handle.quant["fc1"]
    assert q.group == 32 and q.scale.shape == (300, 25)
    w = handle.module.fc1.weight.detach().numpy()
    assert np.array_equal(w, q.dequantize())  # on the grid after training
    assert np.array_equal(q.codes, codes_with_scale(w, q.full_scale(), 4))
    fresh = torch_backend().load_model("lenet300", (1, 28, 28), 10, checkpoint=tmp_path / "run" / "model.lwz")
    assert np.array_equal(fresh.module.fc1.weight.detach().numpy(), w) and fresh.quant["fc1"].group == 32
