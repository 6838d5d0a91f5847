"""``export hf`` (torch): a Hugging Face folder of the compressed model that ``transformers`` loads
offline with lwdsl's logits, its tokenizer, and the folder read back as ``--model``."""

from __future__ import annotations

import os

import pytest

from torch_helpers import torch_backend  # first: skips unless torch is selected and installed

pytest.importorskip("transformers", reason="transformer models need transformers (pip install 'lwdsl[llm]')")
pytest.importorskip("tokenizers", reason="--data pydoc needs tokenizers (pip install 'lwdsl[llm]')")
pytest.importorskip("safetensors", reason="export hf needs safetensors (pip install 'lwdsl[llm]')")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import lwdsl  # noqa: E402
from lwdsl.errors import LwdslError, RecipeError  # noqa: E402
from lwdsl.language.validate import check_backend  # noqa: E402

pytestmark = pytest.mark.torch

RECIPE = ('prune sparsegpt 50% nm=2:4 calibrate=16 except "lm_head"\n'
          'quantize int4 method=gptq group=32 calibrate=16 except "lm_head"\n'
          'export hf "llm"\n')


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    if not os.environ.get("LWDSL_CACHE"):
        monkeypatch.setenv("LWDSL_CACHE", str(tmp_path_factory.getbasetemp() / "llm-cache"))


@pytest.mark.parametrize("model, probe, transposed", [
    ("tiny-llama", "model.layers.0.mlp.down_proj", False),
    ("tiny-gpt2", "transformer.h.0.mlp.c_proj", True),  # Conv1D: [in, out] in the file, as transformers stores it
])
def test_the_compressed_model_round_trips_through_transformers(tmp_path, model, probe, transposed):
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = lwdsl.run(RECIPE, model, data="pydoc", baseline_epochs=0, quiet=True, latency=False, out=tmp_path / "run")
    folder = tmp_path / "run" / "llm"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    (artifact,) = result.report["steps"][-1]["artifacts"]
    assert artifact["format"] == "hf" and artifact["weights"].startswith("float32 (quantized layers dequantized")
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 2048, (2, 128)))
    hf = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        ours = result.module(x)
        torch.testing.assert_close(hf(input_ids=x).logits, ours, rtol=0, atol=1e-5)
    w = load_file(str(folder / "model.safetensors"))[f"{probe}.weight"]
    q = result.model.quant[probe]
    assert np.array_equal(w.T if transposed else w, q.dequantize())  # codes * scale, 2:4 zeros kept
    assert ((q.codes.reshape(q.codes.shape[0], -1, 4) != 0).sum(-1) <= 2).all()
    text = "def f(x):\n    return x + 1\n"
    path = result.report["data_source"]["tokenizer"]["path"]
    assert AutoTokenizer.from_pretrained(str(folder), local_files_only=True)(text).input_ids == Tokenizer.from_file(path).encode(text).ids
    back = torch_backend().load_model(str(folder), (128,), 2048)  # the folder as --model
    with torch.no_grad():
        torch.testing.assert_close(back.module(x), ours, rtol=0, atol=1e-5)


def test_export_hf_needs_a_transformers_model_and_the_torch_backend(tmp_path):
    with pytest.raises(LwdslError, match="export hf writes a Hugging Face transformers model; lenet300 is not one"):
        lwdsl.run("export hf", "lenet300", data="synthetic:1,28,28:10", baseline_epochs=0, quiet=True, latency=False,
                  out=tmp_path / "run")
    with pytest.raises(RecipeError, match="the tensorflow backend cannot export hf"):
        check_backend(lwdsl.parse("export hf"), "tensorflow", load=False)
