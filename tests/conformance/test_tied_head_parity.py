"""A tied head means the same on both backends (lwdsl/backend/hf_folder.py, "A tied head"):
a Hugging Face folder whose ``lm_head`` is tied to its embeddings (``tie_word_embeddings``, as
real GPT-2 folders) loads on torch and tensorflow with the head as a tensor of its own, warned
the same; ``quantize int4`` on ``lm_head`` leaves the embeddings alone on both, with
bit-identical codes; ``export hf`` writes one tensor again (``tie_word_embeddings`` true) while
the head equals the embeddings, else both with the same warning, the same bytes on both
backends, and ``transformers`` loads either folder with the handle's logits. A torch model
given as an object whose head shares the embeddings' ``Parameter`` is untied by the same rule
(``untie_heads``)."""

from __future__ import annotations

import json
from importlib import import_module

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the folder is written with transformers (pip install 'lwdsl[llm]')")
pytest.importorskip("safetensors", reason="export hf needs safetensors (pip install 'lwdsl[llm]')")

from lwdsl.errors import LoadWarning  # noqa: E402
from lwdsl.language.specs import ExportSpec, QuantizeSpec  # noqa: E402

from tests.contract.llm_smooth import patterns  # noqa: E402

from .cases import backend, context  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.tensorflow]

SEQ, VOCAB = 16, 64
BACKENDS = ("torch", "tensorflow")
UNTIED = "its head lm_head.weight was tied to transformer.wte.weight; lwdsl holds the head as a tensor of its own"
DIFFERS = ("export hf: the head lm_head.weight was tied to transformer.wte.weight in the model read and differs now; "
           "the config says tie_word_embeddings=false and the folder holds both")


def _gpt2(tied: bool = True):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1, n_head=2,
                                       tie_word_embeddings=tied, bos_token_id=None, eos_token_id=None)).eval()
    for m in model.modules():  # initialised 0 and 1: make every bias and norm count
        if isinstance(m, torch.nn.LayerNorm):
            torch.nn.init.normal_(m.weight, 1.0, 0.1), torch.nn.init.normal_(m.bias, 0.0, 0.1)
    return model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny tied GPT-2 saved by transformers (no lm_head.weight in the file), and its embeddings."""
    model = _gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    path = tmp_path_factory.mktemp("tied") / "gpt2"
    model.save_pretrained(str(path), safe_serialization=True)
    from safetensors.numpy import load_file

    assert "lm_head.weight" not in load_file(str(path / "model.safetensors"))
    return path, model.transformer.wte.weight.detach().numpy().copy()


def _load(name: str, path):
    with pytest.warns(LoadWarning) as said:
        handle = backend(name).load_model(str(path), (SEQ,), VOCAB)
    (message,) = [str(w.message) for w in said if issubclass(w.category, LoadWarning)]
    return handle, message


def _export(name: str, handle, path) -> list[str]:
    package = "torch_backend" if name == "torch" else "tf_backend"
    ctx = context(patterns(), index=1)
    ctx.warnings = []
    ctx.warn = ctx.warnings.append
    import_module(f"lwdsl.backends.{package}.export").EXPORTERS["hf"](handle, path, ctx, ExportSpec(format="hf"))
    return ctx.warnings


def _logits(name: str, handle, ids: np.ndarray) -> np.ndarray:
    if name == "torch":
        from lwdsl.backends.torch_backend.quantize import TorchQuantizeParts as Parts
    else:
        from lwdsl.backends.tf_backend.quantize import KerasQuantizeParts as Parts
    return np.asarray(Parts().logits(handle, ids), dtype=np.float64)


def _hf_logits(path, ids: np.ndarray) -> np.ndarray:
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(str(path), local_files_only=True).eval()
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids)).logits.numpy().astype(np.float64)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.max(np.abs(a - b))) <= 1e-5 * max(1.0, float(np.max(np.abs(a))))


def test_a_tied_head_loads_untied_on_both_backends_and_int4_on_it_leaves_the_embeddings(folder, tmp_path):
    path, wte = folder
    handles, messages, said = {}, {}, {}
    for name in BACKENDS:
        handle, messages[name] = _load(name, path)
        assert UNTIED in messages[name] and messages[name].startswith(f"--model {path}: ")
        state = backend(name).state(handle)
        assert np.array_equal(state["lm_head.weight"], wte) and np.array_equal(state["transformer.wte.weight"], wte)
        handles[name] = backend(name).apply(handle, QuantizeSpec(dtype="int4"), ["lm_head"], context(patterns(), index=0))
        state = backend(name).state(handles[name])
        assert np.array_equal(state["transformer.wte.weight"], wte), f"{name}: the embeddings changed"
        said[name] = _export(name, handles[name], tmp_path / name)
    assert messages["torch"] == messages["tensorflow"]
    module = handles["torch"].module
    assert module.lm_head.weight is not module.transformer.wte.weight and module.config.tie_word_embeddings is False
    qt, qk = handles["torch"].quant["lm_head"], handles["tensorflow"].quant["lm_head"]
    assert np.array_equal(qt.codes, qk.codes) and np.array_equal(qt.scale, qk.scale)
    assert not np.array_equal(qt.dequantize(), wte)
    assert said["torch"] == said["tensorflow"] and DIFFERS in said["torch"]
    for f in ("config.json", "model.safetensors"):
        assert (tmp_path / "torch" / f).read_bytes() == (tmp_path / "tensorflow" / f).read_bytes(), f
    from safetensors.numpy import load_file

    written = load_file(str(tmp_path / "torch" / "model.safetensors"))
    assert json.loads((tmp_path / "torch" / "config.json").read_text())["tie_word_embeddings"] is False
    assert np.array_equal(written["transformer.wte.weight"], wte)
    assert "lm_head.weight_packed" in written and "lm_head.weight" not in written  # the head's codes, packed
    pytest.importorskip("compressed_tensors", reason="transformers reads the packed head with compressed-tensors")
    ids = patterns().test_x[:4, :SEQ]
    want = _hf_logits(tmp_path / "torch", ids)
    for name in BACKENDS:
        assert _close(want, _logits(name, handles[name], ids)), name


def test_an_unchanged_tied_head_is_written_once_again_on_both_backends(folder, tmp_path):
    path, wte = folder
    ids = patterns().test_x[:4, :SEQ]
    want = _hf_logits(path, ids)
    for name in BACKENDS:
        handle, _ = _load(name, path)
        assert _close(want, _logits(name, handle, ids)), name
        assert _export(name, handle, tmp_path / name) == []
        assert json.loads((tmp_path / name / "config.json").read_text())["tie_word_embeddings"] is True
        assert _close(want, _hf_logits(tmp_path / name, ids)), name
    for f in ("config.json", "model.safetensors"):
        assert (tmp_path / "torch" / f).read_bytes() == (tmp_path / "tensorflow" / f).read_bytes(), f
    from safetensors.numpy import load_file

    written = load_file(str(tmp_path / "torch" / "model.safetensors"))
    assert "lm_head.weight" not in written and np.array_equal(written["transformer.wte.weight"], wte)


def test_an_untied_folder_loads_without_the_warning(tmp_path):
    import warnings

    _gpt2(tied=False).save_pretrained(str(tmp_path / "gpt2"), safe_serialization=True)
    for name in BACKENDS:
        with warnings.catch_warnings():
            warnings.simplefilter("error", LoadWarning)
            handle = backend(name).load_model(str(tmp_path / "gpt2"), (SEQ,), VOCAB)
        state = backend(name).state(handle)
        assert not np.array_equal(state["lm_head.weight"], state["transformer.wte.weight"])


def test_a_torch_model_whose_head_shares_the_embeddings_parameter_is_untied():
    import torch

    from lwdsl.backends.torch_backend.hf import untie_heads

    model = _gpt2()
    wte = model.transformer.wte.weight.detach().clone()
    params = sum(p.numel() for p in model.parameters())  # the shared Parameter once
    assert untie_heads(model) == {"lm_head.weight": "transformer.wte.weight"}
    assert model.lm_head.weight is not model.transformer.wte.weight and model.config.tie_word_embeddings is False
    assert model.lwdsl_tied == {"lm_head.weight": "transformer.wte.weight"}
    assert np.array_equal(model.lm_head.weight.detach().numpy(), wte.numpy())
    with torch.no_grad():
        model.lm_head.weight.zero_()
    assert np.array_equal(model.transformer.wte.weight.detach().numpy(), wte.numpy())
    assert untie_heads(model) == {}  # nothing shared any more
    assert sum(p.numel() for p in model.parameters()) == params + VOCAB * 32  # the head counted as its own tensor
