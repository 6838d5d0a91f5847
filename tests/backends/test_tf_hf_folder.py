"""A Hugging Face folder on the tensorflow backend (hf_folder.py): what it builds and refuses, a
tied GPT-2 head, and ``export hf`` through a run, loaded by ``transformers`` +
``compressed-tensors`` with the Keras model's logits. Both backends' bytes and a torch folder
read into Keras: tests/conformance/test_hf_folder_parity.py."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow
pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow
pytest.importorskip("transformers", reason="the folders are written with transformers (pip install 'lwdsl[llm]')")
pytest.importorskip("safetensors", reason="export hf needs safetensors (pip install 'lwdsl[llm]')")

import lwdsl  # noqa: E402
from lwdsl.backend import get_backend  # noqa: E402
from lwdsl.errors import LwdslError, UsageError  # noqa: E402
from llm_helpers import llm_cache  # noqa: E402,F401  (llm_cache: the shared cache, autouse)

SEQ, VOCAB = 16, 64


def _logits(handle, ids):
    from lwdsl.backends.tf_backend.quantize import KerasQuantizeParts

    return np.asarray(KerasQuantizeParts().logits(handle, ids), dtype=np.float64)


def _save(model, folder):
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


def test_a_tied_gpt2_folder_loads_with_transformers_logits_and_is_written_with_one_head(tmp_path):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from lwdsl.backends.tf_backend.export import EXPORTERS
    from lwdsl.backend import StepContext
    from lwdsl.language.specs import ExportSpec

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1, n_head=2)).eval()
    for m in hf.modules():  # initialised 0 and 1: make every bias and norm count
        if isinstance(m, torch.nn.LayerNorm):
            torch.nn.init.normal_(m.weight, 1.0, 0.1), torch.nn.init.normal_(m.bias, 0.0, 0.1)
    folder = _save(hf, tmp_path / "gpt2")
    handle = get_backend("tensorflow").load_model(str(folder), (SEQ,), VOCAB)
    ids = np.random.default_rng(0).integers(0, VOCAB, (4, SEQ))
    with torch.no_grad():
        want = hf(input_ids=torch.from_numpy(ids)).logits.numpy()
    assert np.max(np.abs(_logits(handle, ids) - want)) <= 1e-5 * max(1.0, float(np.abs(want).max()))
    assert not handle.quant and not handle.masks
    ctx = StepContext(data=None, seed=0, index=0, progress=None)
    EXPORTERS["hf"](handle, tmp_path / "again", ctx, ExportSpec(format="hf"))
    from safetensors.numpy import load_file

    state = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert "lm_head.weight" not in state and "transformer.wte.weight" in state  # tied: stored once
    assert json.loads((tmp_path / "again" / "config.json").read_text())["tie_word_embeddings"] is True
    back = GPT2LMHeadModel.from_pretrained(str(tmp_path / "again"), local_files_only=True).eval()
    with torch.no_grad():
        assert np.max(np.abs(back(input_ids=torch.from_numpy(ids)).logits.numpy() - want)) <= 1e-6


def test_folders_the_keras_model_cannot_compute_are_refused_with_the_key(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

    be = get_backend("tensorflow")
    bert = _save(BertForSequenceClassification(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1,
                                                          num_attention_heads=2, intermediate_size=64)), tmp_path / "bert")
    with pytest.raises(UsageError, match="architectures\\[0\\] is 'BertForSequenceClassification'; the tensorflow backend "
                                         "builds LlamaForCausalLM and GPT2LMHeadModel") as caught:
        be.load_model(str(bert), (SEQ,), 2)
    assert "--backend torch" in caught.value.hint and caught.value.exit_code == 2
    gqa = _save(LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                             num_key_value_heads=2, intermediate_size=64)), tmp_path / "gqa")
    with pytest.raises(UsageError, match="num_key_value_heads=2, which the tensorflow backend's Keras model does not compute"):
        be.load_model(str(gqa), (SEQ,), VOCAB)
    (gqa / "config.json").write_text(json.dumps({**json.loads((gqa / "config.json").read_text()), "num_key_value_heads": 4}))
    import safetensors.numpy as stn

    state = stn.load_file(str(gqa / "model.safetensors"))
    del state["model.layers.0.self_attn.k_proj.weight"]
    stn.save_file(state, str(gqa / "model.safetensors"))
    with pytest.raises(UsageError, match="no tensor model.layers.0.self_attn.k_proj.weight in its \\*.safetensors"):
        be.load_model(str(gqa), (SEQ,), VOCAB)


def test_export_hf_of_a_model_that_is_not_a_transformer_is_refused(tmp_path):
    from lwdsl.backends.tf_backend.hf_folder import hf_model

    handle = get_backend("tensorflow").load_model("lenet300", (1, 28, 28), 10)
    with pytest.raises(UsageError, match="export hf writes a Hugging Face transformers model; lenet300 is not one"):
        hf_model(handle)


@pytest.mark.slow  # a run on --data pydoc (the tokenizer, tiny-llama at 128 tokens): about 30 s
def test_a_run_exports_a_folder_transformers_loads_with_the_keras_logits(tmp_path):
    pytest.importorskip("compressed_tensors", reason="loading the folder in transformers needs compressed-tensors")
    pytest.importorskip("tokenizers", reason="--data pydoc needs tokenizers (pip install 'lwdsl[llm]')")
    import torch
    from transformers import AutoModelForCausalLM

    recipe = 'quantize int4 group=32 except "lm_head"\nexport hf "llm"\n'
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("LWDSL_CACHE"):
            mp.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
        result = lwdsl.run(recipe, "tiny-llama?layers=1", backend="tensorflow", data="pydoc", baseline_epochs=0,
                           quiet=True, latency=False, out=tmp_path / "run")
    folder = tmp_path / "run" / "llm"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    (artifact,) = result.report["steps"][-1]["artifacts"]
    assert artifact["weights"].startswith("compressed-tensors pack-quantized: 7 layer(s) as int4")
    hf = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    ids = np.random.default_rng(0).integers(0, 2048, (2, 128))
    with torch.no_grad():
        want = hf(input_ids=torch.from_numpy(ids)).logits.numpy()
    assert np.max(np.abs(_logits(result.model, ids) - want)) <= 1e-5 * max(1.0, float(np.abs(want).max()))
    with pytest.raises(LwdslError, match="export hf writes a Hugging Face transformers model"):
        lwdsl.run("export hf", "lenet300", backend="tensorflow", data="synthetic:1,28,28:10", baseline_epochs=0,
                  quiet=True, latency=False, out=tmp_path / "lenet")
