"""``export hf`` and the folder as ``--model``, on every backend (one flow in the core,
lwdsl/backend/hf_folder.py): a pruned int4 tiny-llama written as a Hugging Face folder reads
back with the same codes, scales and masks and the same logits, is written again as the same
bytes, and the report's artifact says what the folder holds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lwdsl.language.specs import ExportSpec, PruneSpec, QuantizeSpec

from .helpers import make_ctx
from .llm_smooth import SEQ, VOCAB, logits, patterns

MODEL = "tiny-llama?layers=1&hidden=64&heads=4&mlp=128"


@pytest.fixture
def llm(backend, backend_name):
    pytest.importorskip("transformers" if backend_name == "torch" else "keras")
    pytest.importorskip("safetensors", reason="export hf needs safetensors (pip install 'lwdsl[llm]')")
    return backend


def _export(be, handle, folder):
    from importlib import import_module

    package = "torch_backend" if be.name == "torch" else "tf_backend"
    ctx = make_ctx(patterns(), index=2)
    import_module(f"lwdsl.backends.{package}.export").EXPORTERS["hf"](handle, folder, ctx, ExportSpec(format="hf"))
    return ctx


def test_an_exported_folder_reads_back_with_its_codes_masks_and_logits(llm, tmp_path):
    be = llm
    be.set_seed(0)
    handle = be.load_model(MODEL, (SEQ,), VOCAB)
    linears = [layer.name for layer in be.layers(handle) if layer.kind == "linear" and layer.name != "lm_head"]
    handle = be.apply(handle, PruneSpec.model_validate({"op": "prune", "amount": 0.5}), linears, make_ctx(patterns()))
    handle = be.apply(handle, QuantizeSpec(dtype="int4", group=32), linears, make_ctx(patterns(), index=1))
    ctx = _export(be, handle, tmp_path / "llm")
    artifact = ctx.notes["artifact"]
    assert artifact["weights"].startswith("compressed-tensors pack-quantized: 7 layer(s) as int4")
    assert artifact["sparsity_config"]["structure"] == "unstructured"
    qc = json.loads((tmp_path / "llm" / "config.json").read_text())["quantization_config"]
    assert qc["ignore"] == ["lm_head"] and qc["config_groups"]["group_0"]["weights"]["group_size"] == 32
    back = be.load_model(str(tmp_path / "llm"), (SEQ,), VOCAB)
    assert set(back.quant) == set(handle.quant) == set(linears)
    for name, q in handle.quant.items():
        assert np.array_equal(back.quant[name].codes, q.codes) and np.array_equal(back.quant[name].scale, q.scale)
    assert set(back.masks) == set(linears)
    for name in linears:  # a pruned weight reads back as pruned
        assert np.array_equal(np.asarray(back.masks[name]), np.asarray(handle.masks[name]))
    ids = patterns().test_x[:8]
    a, b = logits(be, handle, ids), logits(be, back, ids)
    assert np.max(np.abs(a - b)) <= 1e-6 * max(1.0, float(np.abs(a).max()))
    _export(be, back, tmp_path / "again")
    for f in ("config.json", "model.safetensors"):
        assert (tmp_path / "llm" / f).read_bytes() == (tmp_path / "again" / f).read_bytes(), f
