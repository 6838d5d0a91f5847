"""``export hf`` and a Hugging Face folder as ``--model`` on both backends (one flow in the core,
lwdsl/backend/hf_folder.py):

- from one starting state, the same recipe (magnitude prune, ``quantize int4 group=32``: masks
  and codes decided by the core) exported by each backend gives byte-identical ``config.json``
  and ``model.safetensors`` (tiny-llama and tiny-bert: compressed-tensors packed; tiny-gpt2: its
  ``Conv1D`` layers stored dequantized ``[in, out]``, warned the same);
- a folder torch wrote loads into the Keras model with the same codes, scales and masks, logits
  equal to torch's within float32 rounding, and written again by tensorflow is the same bytes;
- a folder compressed-tensors' own compressor wrote (int4 ``[-8, 7]``, as llm-compressor) loads
  into Keras with transformers' logits, the layers using -8 as float weights (warned).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformer models on torch need transformers (pip install 'lwdsl[llm]')")
pytest.importorskip("safetensors", reason="export hf needs safetensors (pip install 'lwdsl[llm]')")

from lwdsl.language.specs import ExportSpec, PruneSpec, QuantizeSpec  # noqa: E402

from tests.contract.llm_smooth import SEQ, VOCAB, patterns  # noqa: E402

from .cases import backend, context  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.tensorflow]

LLAMA = "tiny-llama?layers=1&hidden=64&heads=4&mlp=128"
GPT2 = "tiny-gpt2?layers=1&hidden=64&heads=4&mlp=128"
BERT = "tiny-bert?layers=1&hidden=64&heads=4&mlp=128&vocab=64"
PRUNE = PruneSpec.model_validate({"op": "prune", "amount": 0.5})
INT4 = QuantizeSpec(dtype="int4", group=32)


def _exporter(name: str):
    if name == "torch":
        from lwdsl.backends.torch_backend.export import EXPORTERS
    else:
        from lwdsl.backends.tf_backend.export import EXPORTERS
    return EXPORTERS["hf"]


def _logits(name: str, handle, ids: np.ndarray) -> np.ndarray:
    if name == "torch":
        from lwdsl.backends.torch_backend.quantize import TorchQuantizeParts as Parts
    else:
        from lwdsl.backends.tf_backend.quantize import KerasQuantizeParts as Parts
    return np.asarray(Parts().logits(handle, ids), dtype=np.float64)


@pytest.fixture(scope="module")
def starts():
    import torch

    torch.manual_seed(0)
    be = backend("torch")
    return {model: be.state(be.load_model(model, (SEQ,), VOCAB)) for model in (LLAMA, GPT2, BERT)}


def _compressed(name: str, model: str, state: dict, folder):
    """The recipe on backend ``name`` from ``state``, exported to ``folder``; the handle and the export's context."""
    be = backend(name)
    handle = be.load_model(model, (SEQ,), VOCAB)
    be.load_state(handle, state)
    linears = [layer.name for layer in be.layers(handle) if layer.kind == "linear" and layer.name != "lm_head"]
    handle = be.apply(handle, PRUNE, linears, context(patterns(), index=0))
    handle = be.apply(handle, INT4, linears, context(patterns(), index=1))
    ctx = context(patterns(), index=2)
    ctx.warnings = []
    ctx.warn = ctx.warnings.append
    _exporter(name)(handle, folder, ctx, ExportSpec(format="hf"))
    return handle, ctx


@pytest.mark.parametrize("model", [LLAMA, GPT2, BERT], ids=["llama", "gpt2", "bert"])
def test_both_backends_write_the_same_folder_bytes(starts, model, tmp_path):
    (th, tctx), (kh, kctx) = (_compressed(name, model, starts[model], tmp_path / name) for name in ("torch", "tensorflow"))
    assert set(th.quant) == set(kh.quant) and len(th.quant) == {LLAMA: 7, GPT2: 4, BERT: 8}[model]
    for f in ("config.json", "model.safetensors"):
        assert (tmp_path / "torch" / f).read_bytes() == (tmp_path / "tensorflow" / f).read_bytes(), f
    assert tctx.notes["artifact"] == kctx.notes["artifact"] and tctx.warnings == kctx.warnings
    conf = json.loads((tmp_path / "torch" / "config.json").read_text())
    if model != GPT2:
        assert conf["quantization_config"]["sparsity_config"]["targets"] == ["Linear"]
    else:  # GPT-2's Conv1D layers: dequantized, [in, out] in the file, warned on both
        assert "quantization_config" not in conf and any("GPT-2 Conv1D" in w for w in kctx.warnings)


@pytest.mark.parametrize("model", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_a_torch_folder_loads_into_keras_with_its_codes_masks_and_logits(starts, model, tmp_path):
    from safetensors.numpy import load_file

    th, _ = _compressed("torch", model, starts[model], tmp_path / "llm")
    tb, kb = backend("torch"), backend("tensorflow")
    back_t = tb.load_model(str(tmp_path / "llm"), (SEQ,), VOCAB)
    back_k = kb.load_model(str(tmp_path / "llm"), (SEQ,), VOCAB)
    assert set(back_k.quant) == set(back_t.quant) and (len(back_k.quant) == 7) == (model == LLAMA)
    for name, q in back_t.quant.items():
        assert np.array_equal(back_k.quant[name].codes, q.codes) and np.array_equal(back_k.quant[name].scale, q.scale)
    assert set(back_k.masks) == set(back_t.masks)
    vm = back_k.view_map()
    for name, keep in back_t.masks.items():
        assert np.array_equal(vm[name].weight.to_canon(back_k.masks[name]), keep.numpy())
    ids = patterns().test_x[:8]
    a, b = _logits("torch", back_t, ids), _logits("tensorflow", back_k, ids)
    assert np.max(np.abs(a - b)) <= 1e-5 * max(1.0, float(np.max(np.abs(a))))
    assert np.max(np.abs(a - _logits("torch", th, ids))) <= 1e-5 * max(1.0, float(np.max(np.abs(a))))
    _exporter("tensorflow")(back_k, tmp_path / "again", context(patterns(), index=0), ExportSpec(format="hf"))
    first, second = load_file(str(tmp_path / "llm" / "model.safetensors")), load_file(str(tmp_path / "again" / "model.safetensors"))
    assert sorted(first) == sorted(second) and all(np.array_equal(first[k], second[k]) for k in first)
    assert (tmp_path / "llm" / "config.json").read_bytes() == (tmp_path / "again" / "config.json").read_bytes()


def test_a_folder_compressed_tensors_wrote_loads_into_keras(tmp_path):
    pytest.importorskip("compressed_tensors", reason="writing the folder needs compressed-tensors")
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme, apply_quantization_config
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                         intermediate_size=128, max_position_embeddings=SEQ, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    scheme = QuantizationScheme(targets=["Linear"], weights={"num_bits": 4, "type": "int", "symmetric": True,
                                                             "strategy": "group", "group_size": 32})
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"],
                                                        quantization_status="frozen"))
    for _, m in model.named_modules():
        if getattr(m, "quantization_scheme", None) is not None:
            w = m.weight.detach().reshape(m.weight.shape[0], -1, 32)
            scale, zp = calculate_qparams(w.amin(-1), w.amax(-1), m.quantization_scheme.weights)
            m.weight_scale.data.copy_(scale)
            m.weight_zero_point.data.copy_(zp.to(m.weight_zero_point.dtype))
    compressor = ModelCompressor.from_pretrained_model(model)
    compressor.compress_model(model)
    folder = tmp_path / "ct"
    model.save_pretrained(str(folder))
    compressor.update_config(str(folder))
    hf = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    back = backend("tensorflow").load_model(str(folder), (SEQ,), VOCAB)
    ids = patterns().test_x[:8]
    with torch.no_grad():
        want = hf(input_ids=torch.from_numpy(ids)).logits.numpy().astype(np.float64)
    assert np.max(np.abs(_logits("tensorflow", back, ids) - want)) <= 1e-5 * max(1.0, float(np.max(np.abs(want))))
    on_torch = backend("torch").load_model(str(folder), (SEQ,), VOCAB)  # what is recorded as codes: the core's rule
    assert set(back.quant) == set(on_torch.quant)
    for name, q in on_torch.quant.items():
        assert np.array_equal(back.quant[name].codes, q.codes) and np.array_equal(back.quant[name].scale, q.scale)
