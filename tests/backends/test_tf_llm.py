"""tiny-llama on the tensorflow backend (issue 25): built from its sizes as Keras 3 layers with
Hugging Face's names, saved and loaded back in safe mode, the shipped transformer recipe
(`prune sparsegpt 50% nm=2:4 | finetune`) run end to end on `--data pydoc` as a user types it,
and SparseGPT 2:4 then GPTQ int4 in groups keeping the 2:4 mask in the codes.
Equal logits, equal masks and equal codes against torch: tests/conformance/test_llm_parity.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow
pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow
import keras  # noqa: E402

from lwdsl.backend import get_backend  # noqa: E402
from lwdsl.errors import UsageError  # noqa: E402
from llm_helpers import LLAMA_LINEAR  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def be():
    return get_backend("tensorflow")


def test_sizes_names_and_kinds(be):
    h = be.load_model("tiny-llama", (128,), 2048)
    assert be.stats(h).params == 1_049_216 == h.model.count_params()  # the torch backend's count (docs/semantics.md)
    layers = be.layers(h)
    linear = [i.name for i in layers if i.kind == "linear"]
    assert linear[:4] == [f"model.layers.0.self_attn.{p}_proj" for p in "qkvo"] and linear[-1] == "lm_head"
    assert len(linear) == 15 and layers[0].name == "model.embed_tokens" and layers[0].kind == "embedding"
    bert = be.load_model("tiny-bert", (64,), 3)
    assert be.stats(bert).params == bert.model.count_params() == 741_635  # the torch backend's BertForSequenceClassification
    small = be.load_model("tiny-llama?layers=1&hidden=32&heads=2&mlp=64", (16,), 100)
    assert be.stats(small).params == 100 * 32 + 4 * 32 * 32 + 3 * 32 * 64 + 3 * 32 + 32 * 100


@pytest.mark.parametrize("ref, shape, message", [
    ("tiny-llama?hidden=30&heads=4", (16,), "is not a multiple of heads=4"),
    ("tiny-llama?hidden=12&heads=4", (16,), "each head needs an even size"),
    ("tiny-llama?depth=3", (16,), "'depth=3' is not a size of tiny-llama"),
    ("tiny-llama", (1, 28, 28), "takes token sequences"),
])
def test_bad_sizes_and_inputs_are_refused(be, ref, shape, message):
    with pytest.raises(UsageError, match=message):
        be.load_model(ref, shape, 100)


@pytest.mark.parametrize("ref", ["tiny-llama?hidden=32&heads=2&mlp=64", "tiny-gpt2?hidden=32&heads=2&mlp=64"])
def test_keras_file_loads_back_in_safe_mode(be, tmp_path, ref):
    h = be.load_model(ref, (16,), 100)
    h.model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    ids = np.random.default_rng(0).integers(0, 100, (2, 16))
    assert np.array_equal(np.asarray(again(ids)), np.asarray(h.model(ids)))
    causal = np.asarray(h.model(np.concatenate([ids[:, :8], ids[::-1, 8:]], axis=1)))
    assert np.array_equal(causal[:, :8], np.asarray(h.model(ids))[:, :8])  # a token never sees the ones after it


@pytest.mark.slow
def test_the_transformer_recipe_runs_on_tensorflow(tmp_path):
    pytest.importorskip("tokenizers", reason="--data pydoc needs tokenizers (pip install 'lwdsl[llm]')")
    env = {**os.environ, "COLUMNS": "120"}
    env.setdefault("LWDSL_CACHE", str(tmp_path / "cache"))
    cli = Path(sys.executable).with_name("lwdsl")
    done = subprocess.run([str(cli), "run", str(ROOT / "recipes" / "sparsegpt-tiny-llama.lw"), "--backend", "tensorflow",
                           "--baseline-epochs", "1", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=1200, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("perplexity ") and "(next-token accuracy " in last
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    ppl = [step["metrics"]["perplexity"] for step in report["steps"]]
    assert ppl[0] < 1000 and ppl[2] < ppl[1]  # one epoch learns (untrained: ~2100); fine-tuning gives back
    sparsity = {layer["name"]: layer["sparsity"] for layer in report["steps"][1]["metrics"]["layers"]}
    assert sparsity["lm_head"] == 0.0 and sparsity["model.layers.1.mlp.down_proj"] == 0.5
    step = report["steps"][1]
    assert step["calibration"]["examples"] == 128 and len(step["layer_output_error"]) == 14
    assert (tmp_path / "out" / "model.keras").is_file()


@pytest.mark.slow
def test_sparsegpt_2_4_then_gptq_int4_keeps_the_mask(be, tmp_path, monkeypatch):
    """As on torch (tests/backends/test_torch_llm_gptq.py): GPTQ's updates never touch the 2:4
    zeros (the keep mask, read from the Keras layout into the canonical one), so every group of
    4 inputs of a row keeps at most 2 non-zero codes; its layer errors are in the report."""
    pytest.importorskip("tokenizers", reason="--data pydoc needs tokenizers (pip install 'lwdsl[llm]')")
    import lwdsl

    if not os.environ.get("LWDSL_CACHE"):
        monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    result = lwdsl.run('prune sparsegpt 50% nm=2:4 calibrate=32 except "lm_head"\n'
                       'quantize int4 method=gptq group=32 calibrate=32 except "lm_head"', "tiny-llama", data="pydoc",
                       backend="tensorflow", baseline_epochs=0, quiet=True, latency=False)
    row = result.report["steps"][-1]
    assert set(row["layer_output_error"]) == set(LLAMA_LINEAR) and row["calibration"]["examples"] == 32
    assert row["quantized"]["model.layers.0.self_attn.q_proj"] == {
        "bits": 4, "form": "int4", "granularity": "per_channel", "mode": "weights_only", "method": "gptq", "group": 32}
    plain = be.state(type(result.model)(result.model.model))
    for name in LLAMA_LINEAR:
        w, q = plain[f"{name}.weight"], result.model.quant[name]
        assert np.array_equal(w, q.dequantize()) and q.group == 32  # the Dense kernel holds codes * scale
        assert ((q.codes.reshape(q.codes.shape[0], -1, 4) != 0).sum(-1) <= 2).all(), name  # 2:4 survives quantization
        assert np.array_equal(q.codes != 0, w != 0)
        assert 0.5 <= float(np.mean(w == 0)) < 0.6
    assert "lm_head" not in result.model.quant and np.isfinite(row["metrics"]["perplexity"])


GPT2_PROJ = [f"transformer.h.{i}.{p}" for i in range(2) for p in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
GPT2_SHAPES = {"attn.c_attn": (384, 128), "attn.c_proj": (128, 128), "mlp.c_fc": (512, 128), "mlp.c_proj": (128, 512)}


def test_tiny_gpt2_projections_are_dense_layers_out_by_in(be):
    """GPT-2's ``Conv1D`` projections are ``Dense`` layers with bias (a kernel ``[in, out]`` is
    ``Conv1D``'s own layout); lwdsl lists them as linear layers of canonical shape ``[out, in]``,
    as the torch backend's ``Conv1DLinear``; the parameter count is torch's (docs/semantics.md)."""
    h = be.load_model("tiny-gpt2", (128,), 2048)
    assert be.stats(h).params == 986_624 == h.model.count_params()
    kinds = {i.name: (i.kind, i.shape) for i in be.layers(h)}
    assert [n for n, (k, _) in kinds.items() if k == "linear"] == [*GPT2_PROJ, "lm_head"]
    for name in GPT2_PROJ:
        assert kinds[name][1] == GPT2_SHAPES[name.split(".", 3)[3]]
    assert kinds["transformer.wte"][0] == kinds["transformer.wpe"][0] == "embedding"
    assert kinds["transformer.h.0.ln_1"][0] == kinds["transformer.ln_f"][0] == "norm"
    state = be.state(h)
    assert state["transformer.h.1.mlp.c_fc.bias"].shape == (512,) and "lm_head.bias" not in state
    assert state["transformer.wpe.weight"].shape == (512, 128)
    assert np.asarray(h.model(np.zeros((2, 128), np.int64))).shape == (2, 128, 2048)
    assert be.positions(h, (128,))["transformer.h.0.mlp.c_fc"] == 128


@pytest.mark.parametrize("ref", ["tiny-llama", "tiny-bert", "tiny-gpt2"])
def test_every_tensor_gets_its_own_random_numbers_and_the_seed_fixes_them(be, ref):
    """One initializer per tensor: a shared unseeded Keras initializer gives every tensor of a
    shape the same numbers (the head equal to the embeddings, every layer's q, k, v alike)."""
    keras.utils.set_random_seed(0)
    state = be.state(be.load_model(ref, (32,), 2048))
    drawn = [k for k, v in state.items() if v.ndim == 2]
    same = [(a, b) for i, a in enumerate(drawn) for b in drawn[i + 1:]
            if state[a].size == state[b].size and np.array_equal(state[a].ravel(), state[b].ravel())]
    assert len(drawn) >= 10 and same == []
    keras.utils.set_random_seed(0)
    again = be.state(be.load_model(ref, (32,), 2048))
    assert all(np.array_equal(state[k], again[k]) for k in state)
