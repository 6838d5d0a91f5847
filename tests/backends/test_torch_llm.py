"""Transformers on the torch backend: tiny-llama and tiny-bert from a config, a Hugging Face
folder as --model, token data, and prune wanda / sparsegpt through a real run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torch_helpers import torch_backend  # first: skips unless torch is selected and installed

pytest.importorskip("transformers", reason="transformer models need transformers (pip install 'lwdsl[llm]')")
pytest.importorskip("tokenizers", reason="--data pydoc needs tokenizers (pip install 'lwdsl[llm]')")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import lwdsl  # noqa: E402
from llm_helpers import LLAMA_LINEAR, llm_cache  # noqa: E402,F401  (llm_cache: the shared cache, autouse)
from lwdsl.errors import RecipeError, UsageError  # noqa: E402

pytestmark = pytest.mark.torch

LINEAR = LLAMA_LINEAR


def test_tiny_llama_layers_kinds_and_size():
    be = torch_backend()
    torch.manual_seed(0)
    handle = be.load_model("tiny-llama", (128,), 2048)
    layers = be.layers(handle)
    kinds = {layer.name: layer.kind for layer in layers}
    assert [n for n in kinds if kinds[n] == "linear"] == [*LINEAR, "lm_head"]
    assert kinds["model.embed_tokens"] == "embedding" and kinds["model.norm"] == "norm"
    assert kinds["model.layers.0.input_layernorm"] == "norm"
    assert be.stats(handle).params == 1_049_216
    out = handle.module(torch.zeros(2, 128, dtype=torch.long))
    assert out.shape == (2, 128, 2048)
    assert be.positions(handle, (128,))["lm_head"] == 128
    assert be.latency_ms(handle, 1, (128,), 1) > 0


def test_tiny_bert_and_other_sizes():
    be = torch_backend()
    bert = be.load_model("tiny-bert", (64,), 3)
    assert bert.module(torch.zeros(2, 64, dtype=torch.long)).shape == (2, 3)
    assert "bert.encoder.layer.1.attention.self.query" in {layer.name for layer in be.layers(bert)}
    big = be.load_model("tiny-llama?layers=3&hidden=64&heads=2&mlp=128", (32,), 100)
    assert sum(1 for layer in be.layers(big) if layer.name.endswith("q_proj")) == 3
    with pytest.raises(UsageError, match="'depth=3' is not a size of tiny-llama"):
        be.load_model("tiny-llama?depth=3", (32,), 100)
    with pytest.raises(UsageError, match="transformers: tiny-llama, tiny-bert") as err:
        be.load_model("tiny-lama", (32,), 100)
    assert err.value.hint == "did you mean 'tiny-llama'?"


def test_a_hugging_face_folder_as_model(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=64)
    original = LlamaForCausalLM(config).eval()
    original.save_pretrained(tmp_path / "hf")
    handle = torch_backend().load_model(str(tmp_path / "hf"), (16,), 300)
    x = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(handle.module(x), original(input_ids=x).logits)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"architectures": ["NoSuchModel"]}')
    with pytest.raises(UsageError, match="holds no \\*.safetensors weights"):  # the core's first check, on every backend
        torch_backend().load_model(str(tmp_path / "bad"), (16,), 300)
    shutil.copy(tmp_path / "hf" / "model.safetensors", tmp_path / "bad")
    with pytest.raises(UsageError, match="not a transformers model class"):
        torch_backend().load_model(str(tmp_path / "bad"), (16,), 300)


def test_an_except_that_matches_nothing_is_a_located_error_exit_2(tmp_path):
    recipe = tmp_path / "r.lw"
    recipe.write_text('prune l1 20% on "lm_head"\nprune sparsegpt 50% except "lm_haed"\n')
    with pytest.raises(RecipeError) as err:
        lwdsl.run(recipe, "tiny-llama", data="pydoc", quiet=True, latency=False)
    assert err.value.location.line == 2 and 'did you mean "lm_head"?' in err.value.hint
    cli = Path(sys.executable).with_name("lwdsl")
    done = subprocess.run([str(cli), "run", str(recipe), "--model", "tiny-llama", "--data", "pydoc"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "120"})
    assert done.returncode == 2, done.stderr
    assert f"{recipe}:2:" in done.stderr and '`except "lm_haed"` matches no layer' in done.stderr
    assert "Traceback" not in done.stderr


def test_calibrated_pruning_refuses_embeddings_before_any_work():
    with pytest.raises(RecipeError, match="works on linear layers only") as err:
        lwdsl.run('prune wanda 50% on embedding, linear', "tiny-llama", data="pydoc", quiet=True, latency=False)
    assert "model.embed_tokens (embedding)" in err.value.found


@pytest.mark.parametrize("recipe, pattern", [
    ('prune wanda 50% except "lm_head"', None),
    ('prune sparsegpt 50% nm=2:4 calibrate=32 except "lm_head"', (2, 4)),
])
def test_wanda_and_sparsegpt_run_on_tiny_llama(recipe, pattern):
    result = lwdsl.run(recipe, "tiny-llama", data="pydoc", baseline_epochs=0, quiet=True, latency=False)
    row = result.report["steps"][-1]
    assert row["layers"] == LINEAR
    assert set(row["layer_output_error"]) == set(LINEAR) and all(0 < e < 1 for e in row["layer_output_error"].values())
    assert row["calibration"]["examples"] == (32 if pattern else 128)
    assert row["calibration"]["rows"] == row["calibration"]["examples"] * 128
    sparsity = {layer["name"]: layer["sparsity"] for layer in row["metrics"]["layers"]}
    assert all(sparsity[name] == 0.5 for name in LINEAR) and sparsity["lm_head"] == 0.0
    assert "perplexity" in row["metrics"] and result.report["steps"][0]["metrics"]["perplexity"] > 1000  # untrained
    if pattern:
        w = result.module.get_submodule(LINEAR[4]).weight.detach().numpy()
        assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all()


def test_sequential_gptq_calibrates_a_pass_per_group_of_layers_sharing_an_input():
    """q/k/v and gate/up read one input each: a Llama block is 4 passes (q/k/v, o, gate/up,
    down), 8 for the two blocks; the errors are on the inputs each layer was calibrated on."""
    recipe = 'quantize int4 method=gptq group=32 calibrate=16 sequential=true except "lm_head"'
    row = lwdsl.run(recipe, "tiny-llama", data="pydoc", baseline_epochs=0, quiet=True, latency=False).report["steps"][-1]
    assert row["calibration"] == {"examples": 16, "rows": 16 * 128, "passes": 8, "damp": 0.01, "block": 128}
    assert set(row["layer_output_error"]) == set(LINEAR) and all(0 < e < 0.1 for e in row["layer_output_error"].values())
