"""What every backend does with a language model (``task`` lm: token ids in): the steps that only
mean something for images are refused before any training, located, exit 2, with what to use."""

from __future__ import annotations

import pytest

import lwdsl
from lwdsl.errors import RecipeError

MODEL = "tiny-llama?layers=1&hidden=32&heads=2&mlp=64"


@pytest.mark.parametrize("recipe, says, hint", [
    ("prune l1 50%\nquantize int8 mode=dynamic", "step 2 `quantize int8 mode=dynamic`: mode=dynamic quantizes activations "
     "inside an ONNX Runtime or LiteRT int8 model", "quantize int4"),
    ("finetune epochs=1 jitter=2", "jitter=2 translates images; pydoc is token sequences", "leave jitter out"),
])
def test_image_only_steps_are_refused_before_training(backend_name, recipe, says, hint, tmp_path, monkeypatch):
    pytest.importorskip("transformers" if backend_name == "torch" else "keras")
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RecipeError) as caught:
        lwdsl.run(recipe, MODEL, backend=backend_name, data="pydoc", out=None, baseline_epochs=1)
    assert says in str(caught.value) and hint in (caught.value.hint or "") and caught.value.exit_code == 2
    assert caught.value.location is not None and caught.value.location.line == recipe.count("\n") + 1
    cached = {p.name for p in (tmp_path / "cache").iterdir()} if (tmp_path / "cache").exists() else set()
    assert cached <= {"parser"}  # refused before the tokenizer was trained or any baseline (only the parser's tables)


def test_your_own_text_files_are_a_language_model_task_too(backend_name, tmp_path, monkeypatch):
    """A folder of .txt files is token data: image-only steps are refused for it before the
    tokenizer is trained or any baseline, as for pydoc."""
    pytest.importorskip("transformers" if backend_name == "torch" else "keras")
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "notes.txt").write_text("some text of mine\n" * 2000, encoding="utf-8")
    with pytest.raises(RecipeError) as caught:
        lwdsl.run("finetune epochs=1 jitter=2", MODEL, backend=backend_name, data=str(corpus), out=None, baseline_epochs=1)
    assert "jitter=2 translates images" in str(caught.value) and "is token sequences" in str(caught.value)
    assert not (tmp_path / "cache" / "tokenizers").exists()


def test_a_language_model_with_int8_gptq_codes_is_timed_as_it_runs(backend, backend_name):
    """``quantize int8 method=gptq`` gives int8 weight codes (weight-only) but no int8 file (token
    ids in): the latency is the model's own forward pass, not an int8 engine fed image-like floats."""
    pytest.importorskip("transformers" if backend_name == "torch" else "keras")
    import numpy as np

    from lwdsl.backend import StepContext
    from lwdsl.data.dataset import Dataset
    from lwdsl.runner.progress import NullBar

    rng = np.random.default_rng(0)
    seqs = rng.integers(0, 100, (24, 17))
    data = Dataset("walk", seqs[:16, :-1], seqs[:16, 1:], seqs[16:, :-1], seqs[16:, 1:], 100, task="lm")
    handle = backend.load_model(MODEL, (16,), 100)
    (step,) = lwdsl.parse('quantize int8 method=gptq calibrate=8 except "lm_head"').steps
    layers = [i.name for i in backend.layers(handle) if i.kind == "linear" and i.name != "lm_head"]
    handle = backend.apply(handle, step, layers, StepContext(data=data, seed=0, index=0, progress=lambda t, d: NullBar()))
    assert handle.quant and all(q.bits == 8 for q in handle.quant.values())
    assert backend.latency_ms(handle, 1, (16,), 1) > 0
