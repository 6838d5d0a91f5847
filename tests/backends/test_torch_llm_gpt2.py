"""GPT-2 on the torch backend: ``tiny-gpt2`` from a config, its ``Conv1D`` projections (weight
stored ``[in, out]``) as linear layers in the canonical ``[out, in]`` layout, a GPT-2 Hugging Face
folder as --model, and prune (magnitude, wanda, sparsegpt) and quantize (rtn, gptq) on them."""

from __future__ import annotations


import pytest

from torch_helpers import torch_backend  # first: skips unless torch is selected and installed

pytest.importorskip("transformers", reason="transformer models need transformers (pip install 'lwdsl[llm]')")
pytest.importorskip("tokenizers", reason="--data pydoc needs tokenizers (pip install 'lwdsl[llm]')")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import lwdsl  # noqa: E402
from llm_helpers import llm_cache  # noqa: E402,F401  (llm_cache: the shared cache, autouse)

pytestmark = pytest.mark.torch

PROJ = [f"transformer.h.{i}.{p}" for i in range(2) for p in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
SHAPES = {"attn.c_attn": (384, 128), "attn.c_proj": (128, 128), "mlp.c_fc": (512, 128), "mlp.c_proj": (128, 512)}


def _gpt2(seed: int = 0, vocab: int = 300):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=64, n_layer=1, n_head=2, n_inner=128, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    return GPT2LMHeadModel(config).eval()


def test_tiny_gpt2_projections_are_linear_layers_out_by_in():
    from transformers.pytorch_utils import Conv1D

    be = torch_backend()
    torch.manual_seed(0)
    handle = be.load_model("tiny-gpt2", (128,), 2048)
    kinds = {layer.name: (layer.kind, layer.shape) for layer in be.layers(handle)}
    assert [n for n, (k, _) in kinds.items() if k == "linear"] == [*PROJ, "lm_head"]
    for name in PROJ:
        assert kinds[name][1] == SHAPES[name.split(".", 3)[3]]
    assert kinds["transformer.wte"][0] == "embedding" and kinds["transformer.h.0.ln_1"][0] == "norm"
    assert not any(isinstance(m, Conv1D) for m in handle.module.modules())
    assert handle.module.lm_head.weight.data_ptr() != handle.module.transformer.wte.weight.data_ptr()  # untied
    assert handle.module(torch.zeros(2, 128, dtype=torch.long)).shape == (2, 128, 2048)
    assert be.positions(handle, (128,))["transformer.h.0.mlp.c_fc"] == 128


def test_conv1d_as_linear_computes_what_conv1d_does():
    from lwdsl.backends.torch_backend.hf import Conv1DLinear
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(48, 32)
    torch.nn.init.normal_(conv.bias)
    linear = Conv1DLinear.of(conv)
    assert linear.weight.shape == (48, 32) and torch.equal(linear.weight, conv.weight.t())
    x = torch.randn(3, 5, 32)
    torch.testing.assert_close(linear(x), conv(x), rtol=0, atol=1e-6)


def test_a_gpt2_folder_as_model(tmp_path):
    original = _gpt2()
    original.save_pretrained(tmp_path / "hf")
    be = torch_backend()
    handle = be.load_model(str(tmp_path / "hf"), (16,), 300)
    linear = [layer.name for layer in be.layers(handle) if layer.kind == "linear"]
    assert linear == ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_fc",
                      "transformer.h.0.mlp.c_proj", "lm_head"]
    assert tuple(handle.module.get_submodule("transformer.h.0.mlp.c_fc").weight.shape) == (128, 64)
    x = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(handle.module(x), original(input_ids=x).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("recipe", [
    'prune l1 50% nm=2:4 except "lm_head"',
    'prune wanda 50% nm=2:4 calibrate=16 except "lm_head"',
    'prune sparsegpt 50% nm=2:4 calibrate=16 except "lm_head"',
])
def test_prune_gpt2_projections_along_their_inputs(recipe):
    result = lwdsl.run(recipe, "tiny-gpt2", data="pydoc", baseline_epochs=0, quiet=True, latency=False)
    row = result.report["steps"][-1]
    assert row["layers"] == PROJ
    sparsity = {layer["name"]: layer["sparsity"] for layer in row["metrics"]["layers"]}
    assert all(sparsity[name] == 0.5 for name in PROJ) and sparsity["lm_head"] == 0.0
    for name in PROJ:  # N:M groups run along the input axis: axis 1 of [out, in] (axis 0 of Conv1D's [in, out])
        w = result.module.get_submodule(name).weight.detach().numpy()
        assert w.shape == SHAPES[name.split(".", 3)[3]] and ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) == 2).all(), name
    if "calibrate" in recipe:
        assert set(row["layer_output_error"]) == set(PROJ)


def test_quantize_gpt2_rtn_and_gptq():
    from lwdsl.backend.calibrated import gram_matrices
    from lwdsl.backends.torch_backend.quantize import TorchQuantizeParts, quantize
    from lwdsl.data.builtin import load_data
    from lwdsl.semantics.hessian import output_error
    from lwdsl.semantics.quant import quantize_weight
    from torch_helpers import make_ctx

    be = torch_backend()
    torch.manual_seed(0)
    handle = be.load_model("tiny-gpt2", (128,), 2048)
    ctx = make_ctx(load_data("pydoc"))
    parts = TorchQuantizeParts()
    floats = {name: parts.weight(handle, name) for name in PROJ}
    grams, _ = gram_matrices(parts, handle, PROJ, 16, ctx, "test")
    (spec,) = lwdsl.parse('quantize int4 method=gptq group=32 calibrate=16 except "lm_head"').steps
    quantize(handle, spec, PROJ, ctx)
    for name in PROJ:
        w, h, q = floats[name], grams[name].h, handle.quant[name]
        rtn = quantize_weight(w, 4, group=32)
        assert q.codes.shape == w.shape and q.scale.shape == (w.shape[0], w.shape[1] // 32)
        assert output_error(w, q.dequantize(), h) < output_error(w, rtn.dequantize(), h), name
        assert np.array_equal(handle.module.get_submodule(name).weight.detach().numpy(), q.dequantize())
    result = lwdsl.run('quantize int4 group=32 except "lm_head"', "tiny-gpt2", data="pydoc", baseline_epochs=0, quiet=True,
                       latency=False)
    notes = result.report["steps"][-1]["quantized"]
    assert set(notes) == set(PROJ) and notes[PROJ[0]]["group"] == 32 and notes[PROJ[0]]["method"] == "rtn"
