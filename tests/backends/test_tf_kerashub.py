"""KerasHub (issue 25): the same weights in lwdsl's Keras transformers, in ``transformers`` and in
KerasHub's own models, proven by equal logits.

- Hugging Face folders lwdsl's torch side writes load with KerasHub's own converter
  (``from_preset`` on a local folder, no tokenizer, nothing downloaded): Llama's logits equal
  ``transformers``' and lwdsl's Keras tiny-llama's; GPT-2's and BERT's hidden states equal (KerasHub's
  GPT-2 ties its head to ``wte``, and its BERT converter does not carry the classifier head).
- A KerasHub Llama or GPT-2 as lwdsl's model on tensorflow (an object, ``keras_hub:llama?SIZES``,
  ``keras_hub:FOLDER``): converted into lwdsl's tiny-llama / tiny-gpt2 with equal logits, the
  user's object untouched; what lwdsl's networks cannot compute refused.
- Back: :func:`to_keras_hub` gives a ``LlamaCausalLM`` (``GPT2CausalLM``) with the compressed
  weights, equal logits.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow
pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow
keras_hub = pytest.importorskip("keras_hub", reason="KerasHub models need keras-hub (pip install 'lwdsl[keras-hub]')")
import keras  # noqa: E402

from lwdsl.backend import get_backend  # noqa: E402
from lwdsl.backends.tf_backend.kerashub import from_keras_hub, hub_state, to_keras_hub  # noqa: E402
from lwdsl.errors import LoadWarning, UsageError  # noqa: E402

#: float32 rounding of logits of size ~0.5 after two layers (observed: about 1e-7)
TOL = 1e-5
IDS = np.random.default_rng(0).integers(0, 100, (2, 16))
SMALL = dict(vocabulary_size=100, num_layers=2, num_query_heads=2, num_key_value_heads=2, hidden_dim=32, intermediate_dim=64,
             dtype="float32")


@pytest.fixture(scope="module")
def be():
    return get_backend("tensorflow")


def hub_inputs(ids: np.ndarray, **extra: np.ndarray) -> dict:
    return {"token_ids": ids.astype("int32"), "padding_mask": np.ones_like(ids, "int32"), **extra}


def hub_llama(**config) -> keras_hub.models.LlamaCausalLM:
    return keras_hub.models.LlamaCausalLM(backbone=keras_hub.models.LlamaBackbone(**{**SMALL, **config}), preprocessor=None)


@pytest.fixture(scope="module")
def torch_side():
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    import torch

    torch.manual_seed(0)
    return get_backend("torch"), torch


def _torch_logits(torch, module, ids=IDS) -> np.ndarray:
    with torch.no_grad():
        return module.eval()(torch.tensor(ids)).numpy()


@pytest.mark.torch
def test_a_llama_folder_from_the_torch_side_loads_in_keras_hub_with_equal_logits(be, torch_side, tmp_path):
    """KerasHub's own converter (convert_llama3.py) reads the folder ``save_pretrained`` writes
    for lwdsl's torch tiny-llama: three frameworks, one set of weights, the same logits."""
    pt_be, torch = torch_side
    ref = "tiny-llama?hidden=32&heads=2&mlp=64"
    pt = pt_be.load_model(ref, (16,), 100)
    pt.module.save_pretrained(tmp_path)
    hub = keras_hub.models.LlamaCausalLM.from_preset(str(tmp_path), preprocessor=None)  # no tokenizer files: none needed
    assert isinstance(hub.backbone, keras_hub.models.LlamaBackbone)
    tf = be.load_model(ref, (16,), 100)
    be.load_state(tf, pt_be.state(pt))
    hf, kh, lw = _torch_logits(torch, pt.module), np.asarray(hub(hub_inputs(IDS))), np.asarray(tf.model(IDS))
    assert np.abs(hf).max() > 0.05 and np.abs(kh - hf).max() < TOL and np.abs(lw - kh).max() < TOL
    state = hub_state(hub)  # and KerasHub's variables read back are the torch state, bit for bit
    assert all(np.array_equal(v, pt_be.state(pt)[k]) for k, v in state.items())
    through = be.load_model(f"keras_hub:{tmp_path}", (16,), 100)  # the folder as a keras_hub: model on tensorflow
    assert np.abs(np.asarray(through.model(IDS)) - hf).max() < TOL


@pytest.mark.torch
def test_gpt2_and_bert_folders_give_keras_hub_the_same_hidden_states(be, torch_side, tmp_path):
    """GPT-2: KerasHub's backbone gives ``transformers``' last hidden state and lwdsl's (before its
    head); its GPT2CausalLM has no untied head, so its logits are that state times ``wte``, not
    tiny-gpt2's ``lm_head``. BERT: the backbone's sequence and pooled outputs are ``transformers``'
    and lwdsl's Keras tiny-bert's; KerasHub's converter does not carry the classifier head."""
    import transformers

    pt_be, torch = torch_side
    ref = "tiny-gpt2?hidden=32&heads=2&mlp=128"  # KerasHub's converter takes 4 * hidden as the MLP width
    plain = transformers.GPT2LMHeadModel(pt_be.load_model(ref, (16,), 100).module.config).eval()
    plain.save_pretrained(tmp_path / "gpt2")
    pt = pt_be.load_model(tmp_path / "gpt2", (16,), 100)  # lwdsl's torch side reads the folder (Conv1D as Linear)
    tf = be.load_model(ref, (16,), 100)
    be.load_state(tf, pt_be.state(pt))
    with torch.no_grad():
        hidden = plain.transformer(torch.tensor(IDS)).last_hidden_state.numpy()
    backbone = keras_hub.models.GPT2Backbone.from_preset(str(tmp_path / "gpt2"))
    lw_hidden = np.asarray(keras.Model(tf.model.inputs, tf.model.get_layer("transformer.ln_f").output)(IDS))
    assert np.abs(np.asarray(backbone(hub_inputs(IDS))) - hidden).max() < TOL and np.abs(lw_hidden - hidden).max() < TOL
    causal = np.asarray(keras_hub.models.GPT2CausalLM.from_preset(str(tmp_path / "gpt2"), preprocessor=None)(hub_inputs(IDS)))
    wte = pt_be.state(pt)["transformer.wte.weight"]
    assert np.abs(causal - lw_hidden @ wte.T).max() < TOL
    assert np.abs(causal - np.asarray(tf.model(IDS))).max() > 0.1  # tiny-gpt2's own head is not KerasHub's

    bert_ref = "tiny-bert?hidden=32&heads=2&mlp=64&vocab=100"
    ptb = pt_be.load_model(bert_ref, (16,), 3)
    ptb.module.eval().save_pretrained(tmp_path / "bert")
    tfb = be.load_model(bert_ref, (16,), 3)
    be.load_state(tfb, pt_be.state(ptb))
    out = keras_hub.models.BertBackbone.from_preset(str(tmp_path / "bert"))(hub_inputs(IDS, segment_ids=np.zeros_like(IDS, "int32")))
    with torch.no_grad():
        ref_out = ptb.module.bert(torch.tensor(IDS))
    lw_pooled = np.asarray(keras.Model(tfb.model.inputs, tfb.model.get_layer("bert.pooler.dense").output)(IDS))
    assert np.abs(np.asarray(out["sequence_output"]) - ref_out.last_hidden_state.numpy()).max() < TOL
    assert np.abs(np.asarray(out["pooled_output"]) - ref_out.pooler_output.numpy()).max() < TOL
    assert np.abs(lw_pooled - ref_out.pooler_output.numpy()).max() < TOL


@pytest.mark.parametrize("config", [{}, {"tie_word_embeddings": True}, {"rope_max_wavelength": 500.0, "layer_norm_epsilon": 1e-5}])
def test_a_keras_hub_llama_becomes_lwdsls_tiny_llama_with_equal_logits(be, config):
    """Sizes, rotary base and norm epsilon from KerasHub's config; a tied head becomes lm_head
    holding the embeddings; every projection a linear layer of lwdsl's; the user's object only read."""
    keras.utils.set_random_seed(1)
    hub = hub_llama(**config)
    before = [np.array(w.numpy()) for w in hub.weights]
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", LoadWarning)
        handle = be.load_model(hub, (16,), 100)
    untied = [str(w.message) for w in said if issubclass(w.category, LoadWarning)]
    assert untied == (["KerasHub LlamaBackbone: its head lm_head.weight was tied to model.embed_tokens.weight; lwdsl holds "
                       "the head as a tensor of its own (a copy: the same logits), so a step on it leaves the embeddings "
                       "alone; to_keras_hub gives an untied LlamaCausalLM back"] if config.get("tie_word_embeddings") else [])
    expected = np.asarray(hub(hub_inputs(IDS)))
    assert np.abs(np.asarray(handle.model(IDS)) - expected).max() < TOL
    linear = [i.name for i in be.layers(handle) if i.kind == "linear"]
    assert len(linear) == 15 and linear[-1] == "lm_head"
    state = be.state(handle)
    assert np.array_equal(state["lm_head.weight"], state["model.embed_tokens.weight"]) == bool(config.get("tie_word_embeddings"))
    other = hub_llama(**{**config, "rope_max_wavelength": 10000.0 if config.get("rope_max_wavelength") else 500.0})
    other.set_weights(hub.get_weights())  # the rotary base is read, not assumed: another base, other logits
    assert np.abs(np.asarray(other(hub_inputs(IDS))) - expected).max() > 10 * TOL
    for w in handle.model.weights:
        w.assign(np.zeros(w.shape, w.dtype))
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, hub.weights))


def test_lwdsls_llama_goes_to_keras_hub_and_back_bit_for_bit(be, tmp_path):
    """to_keras_hub then from_keras_hub: the same canonical state exactly (reshapes and
    transposes only), the same logits within rounding; also through KerasHub's save_to_preset."""
    keras.utils.set_random_seed(2)
    handle = be.load_model("tiny-llama?hidden=32&heads=2&mlp=64", (16,), 100)
    hub = to_keras_hub(handle)
    assert isinstance(hub, keras_hub.models.LlamaCausalLM) and hub.backbone.num_layers == 2 and hub.preprocessor is None
    assert np.abs(np.asarray(hub(hub_inputs(IDS))) - np.asarray(handle.model(IDS))).max() < TOL
    again = from_keras_hub(hub, (16,), 100)
    first, second = be.state(handle), be.state(type(handle)(again))
    assert first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)
    hub.save_to_preset(str(tmp_path / "preset"))  # KerasHub's own files: its from_preset and keras_hub:FOLDER read them
    reloaded = keras_hub.models.LlamaCausalLM.from_preset(str(tmp_path / "preset"))
    assert np.abs(np.asarray(reloaded(hub_inputs(IDS))) - np.asarray(handle.model(IDS))).max() < TOL
    third = be.state(be.load_model(f"keras_hub:{tmp_path / 'preset'}", (16,), 100))
    assert all(np.array_equal(first[k], third[k]) for k in first)


def test_keras_hub_references_build_and_load_local_presets(be, tmp_path):
    keras.utils.set_random_seed(3)
    h = be.load_model("keras_hub:llama?layers=1&hidden=32&heads=2&mlp=64", (16,), 100)
    assert be.stats(h).params == 100 * 32 + 4 * 32 * 32 + 3 * 32 * 64 + 3 * 32 + 32 * 100
    assert be.stats(be.load_model("keras_hub:llama", (128,), 2048)).params == 1_049_216  # tiny-llama's default sizes
    hub = hub_llama(rope_max_wavelength=1000.0)
    hub.backbone.save_to_preset(str(tmp_path / "preset"))
    loaded = be.load_model(f"keras_hub:{tmp_path / 'preset'}", (16,), 100)
    assert np.abs(np.asarray(loaded.model(IDS)) - np.asarray(hub(hub_inputs(IDS)))).max() < TOL


@pytest.mark.parametrize("config, message", [
    ({"num_key_value_heads": 1}, "num_key_value_heads=1 differs from num_query_heads=2"),
    ({"rope_position_scaling_factor": 2.0}, "rope_position_scaling_factor=2.0"),
    ({"dropout": 0.1}, "dropout=0.1"),
])
def test_what_lwdsls_llama_cannot_compute_is_refused(be, config, message):
    with pytest.raises(UsageError, match=message):
        be.load_model(hub_llama(**config), (16,), 100)


@pytest.mark.parametrize("ref, message", [
    ("keras_hub:llama?kv_heads=2", "grouped-query attention"),
    ("keras_hub:llama?depth=2", "'depth=2' is not a size of keras_hub:llama"),
    ("keras_hub:llama?rope_base=nan", "'rope_base=nan' is not a size"),
    ("keras_hub:llama?hidden=30&heads=4", "must be heads=4 times an even size"),
    ("keras_hub:llama3_8b_en", "nor a local KerasHub preset folder"),  # a Kaggle preset name: never downloaded
])
def test_bad_keras_hub_references_are_refused(be, ref, message):
    with pytest.raises(UsageError, match=message):
        be.load_model(ref, (16,), 100)


def test_other_models_dropout_and_small_vocabularies_are_refused(be):
    bert = keras_hub.models.BertBackbone(vocabulary_size=100, num_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64)
    with pytest.raises(UsageError, match="cannot convert a KerasHub BertBackbone"):
        be.load_model(bert, (16,), 100)
    with pytest.raises(UsageError, match="tiny-gpt2 cannot compute dropout=0.1"):  # KerasHub GPT-2's default
        be.load_model(keras_hub.models.GPT2Backbone(**GPT2), (16,), 100)
    with pytest.raises(UsageError, match="vocabulary of 100 tokens, the data 2048"):
        be.load_model(hub_llama(), (16,), 2048)
    with pytest.raises(UsageError, match="max_sequence_length=32, the data's sequences 64"):
        be.load_model(keras_hub.models.GPT2Backbone(**GPT2, dropout=0.0), (64,), 100)
    with pytest.raises(UsageError, match="ties its head to the token embeddings"):  # lwdsl's own tiny-gpt2: untied
        to_keras_hub(be.load_model("tiny-gpt2?hidden=32&heads=2&mlp=64", (16,), 100))
    with pytest.raises(UsageError, match="takes lwdsl's tiny-llama or tiny-gpt2"):
        to_keras_hub(be.load_model("lenet300", (1, 28, 28), 10))


GPT2 = dict(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=48, max_sequence_length=32)


def test_a_keras_hub_gpt2_becomes_tiny_gpt2_and_goes_back(be, tmp_path):
    """convert_gpt2.py's mapping: q, k, v kernels stacked into c_attn's rows, KerasHub's tied head
    as lm_head; equal logits, and back to a GPT2CausalLM with the same variables bit for bit. A
    preset folder (saved with KerasHub's default dropout 0.1) loads with dropout 0."""
    keras.utils.set_random_seed(5)
    hub = keras_hub.models.GPT2CausalLM(backbone=keras_hub.models.GPT2Backbone(**GPT2, dropout=0.0), preprocessor=None)
    with pytest.warns(LoadWarning, match="KerasHub GPT2Backbone: its head lm_head.weight was tied to transformer.wte.weight; "
                      ".* to_keras_hub gives a GPT2CausalLM back while they are equal"):
        handle = be.load_model(hub, (16,), 100)
    expected = np.asarray(hub(hub_inputs(IDS)))
    assert np.abs(expected).max() > 0.05 and np.abs(np.asarray(handle.model(IDS)) - expected).max() < TOL
    kinds = {i.name: (i.kind, i.shape) for i in be.layers(handle)}
    assert kinds["transformer.h.0.attn.c_attn"] == ("linear", (96, 32)) and kinds["transformer.h.1.mlp.c_fc"] == ("linear", (48, 32))
    state = be.state(handle)
    query = hub.backbone.get_layer("transformer_layer_0")._self_attention_layer._query_dense.kernel.numpy()
    assert np.array_equal(state["transformer.h.0.attn.c_attn.weight"][:32], query.reshape(32, 32).T)
    back = to_keras_hub(handle)
    assert isinstance(back, keras_hub.models.GPT2CausalLM)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(hub.backbone.weights, back.backbone.weights))
    saved = keras_hub.models.GPT2Backbone(**GPT2)
    saved.save_to_preset(str(tmp_path / "gpt2"))
    loaded = be.load_model(f"keras_hub:{tmp_path / 'gpt2'}", (16,), 100)
    saved_logits = np.asarray(keras_hub.models.GPT2CausalLM(backbone=saved, preprocessor=None)(hub_inputs(IDS)))
    assert np.abs(np.asarray(loaded.model(IDS)) - saved_logits).max() < TOL


@pytest.mark.slow
def test_a_keras_hub_model_runs_through_lwdsl_and_comes_back_compressed(tmp_path, monkeypatch):
    """``lwdsl.run(recipe, model=<KerasHub LlamaCausalLM>, backend="tensorflow", data="pydoc")``:
    pruned and quantized as lwdsl's tiny-llama, then :func:`to_keras_hub` gives KerasHub the
    compressed weights (half zeros, each kernel exactly the int8 codes times their scales) and
    the same logits; the user's KerasHub object is unchanged."""
    pytest.importorskip("tokenizers", reason="--data pydoc needs tokenizers (pip install 'lwdsl[llm]')")
    import os

    import lwdsl

    if not os.environ.get("LWDSL_CACHE"):
        monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    keras.utils.set_random_seed(4)
    hub = hub_llama(vocabulary_size=2048)
    before = [np.array(w.numpy()) for w in hub.weights]
    result = lwdsl.run('prune 50% except "lm_head"\nquantize int8 except "lm_head"', hub, data="pydoc", backend="tensorflow",
                       baseline_epochs=0, quiet=True, latency=False)
    assert result.report["model"] == "LlamaCausalLM" and [s["op"] for s in result.report["steps"]][-2:] == ["prune", "quantize"]
    back = to_keras_hub(result.model)
    ids = np.random.default_rng(1).integers(0, 2048, (2, 128))
    assert np.abs(np.asarray(back(hub_inputs(ids))) - np.asarray(result.model.model(ids))).max() < TOL
    query = back.backbone.get_layer("transformer_layer_0")._self_attention_layer._query_dense.kernel.numpy()
    q = result.model.quant["model.layers.0.self_attn.q_proj"]
    assert np.array_equal(query.reshape(32, -1).T, q.dequantize()) and float(np.mean(query == 0)) == 0.5
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, hub.weights))
