"""``export hf`` (torch): a Hugging Face folder of the compressed model in compressed-tensors'
layout (lwdsl's int4 codes packed, the 2:4 sparsity said), loaded offline by ``transformers`` +
``compressed-tensors`` with lwdsl's logits, its tokenizer, and the folder read back as
``--model`` with the same codes; a folder written by compressed-tensors' own compressor read too."""

from __future__ import annotations

import json
import os
import warnings

import pytest

from torch_helpers import torch_backend  # first: skips unless torch is selected and installed

pytest.importorskip("transformers", reason="transformer models need transformers (pip install 'lwdsl[llm]')")
pytest.importorskip("tokenizers", reason="--data pydoc needs tokenizers (pip install 'lwdsl[llm]')")
pytest.importorskip("safetensors", reason="export hf needs safetensors (pip install 'lwdsl[llm]')")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import lwdsl  # noqa: E402
from llm_helpers import llm_cache  # noqa: E402,F401  (llm_cache: the shared cache, autouse)
from lwdsl.errors import LwdslError  # noqa: E402
from lwdsl.language.validate import check_backend  # noqa: E402
from lwdsl.semantics.hf_format import unpack_int32  # noqa: E402

pytestmark = pytest.mark.torch

RECIPE = ('prune sparsegpt 50% nm=2:4 calibrate=16 except "lm_head"\n'
          'quantize int4 method=gptq group=32 calibrate=16 except "lm_head"\n'
          'export hf "llm"\n')
NEEDS_CT = "loading a compressed-tensors folder in transformers needs compressed-tensors (pip install 'lwdsl[compressed-tensors]')"


def _tokens(n: int = 2) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, 2048, (n, 128)))


def _run(recipe: str, model: str, out):
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("LWDSL_CACHE"):
            mp.setenv("LWDSL_CACHE", str(out.parent.parent / "llm-cache"))
        return lwdsl.run(recipe, model, data="pydoc", baseline_epochs=0, quiet=True, latency=False, out=out)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """One run of RECIPE on tiny-llama (the result, the folder), shared by the tests below."""
    out = tmp_path_factory.mktemp("llama") / "run"
    return _run(RECIPE, "tiny-llama", out), out / "llm"


@pytest.mark.slow  # the shared run: about 30 s
def test_the_folder_holds_lwdsl_codes_in_compressed_tensors_layout(llama):
    from safetensors.numpy import load_file

    result, folder = llama
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    (artifact,) = result.report["steps"][-1]["artifacts"]
    quant = result.model.quant
    assert artifact["weights"].startswith(f"compressed-tensors pack-quantized: {len(quant)} layer(s) as int4")
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    (group,) = qc["config_groups"].values()
    assert group["targets"] == ["Linear"] and qc["ignore"] == ["lm_head"] and qc["format"] == "pack-quantized"
    assert group["weights"]["num_bits"] == 4 and group["weights"]["group_size"] == 32 and group["weights"]["strategy"] == "group"
    state = load_file(str(folder / "model.safetensors"))
    for name, q in quant.items():
        assert f"{name}.weight" not in state
        assert np.array_equal(unpack_int32(state[f"{name}.weight_packed"], 4, state[f"{name}.weight_shape"]), q.codes)
        assert np.array_equal(state[f"{name}.weight_scale"], q.scale)
    assert state["lm_head.weight"].dtype == np.float32  # left float, as the recipe says
    sc = qc["sparsity_config"]
    assert sc["sparsity_structure"] == "2:4" and sc["targets"] == ["Linear"] and sc["ignore"] == ["lm_head"]
    pruned = sum(q.codes.size for q in quant.values()) // 2  # 2:4 prunes half of every pruned layer
    params = sum(t.numel() for t in result.module.state_dict().values())
    assert sc["global_sparsity"] == pytest.approx(pruned / params, rel=1e-12)


@pytest.mark.slow  # the shared run: about 30 s
def test_transformers_and_compressed_tensors_load_it_with_lwdsl_logits(llama):
    pytest.importorskip("compressed_tensors", reason=NEEDS_CT)
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, folder = llama
    hf = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    x = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=x).logits, result.module(x), rtol=0, atol=1e-5)
        probe = "model.layers.0.mlp.down_proj"  # decompressed on the first forward: codes * scale exactly
        assert np.array_equal(hf.get_submodule(probe).weight.numpy(), result.model.quant[probe].dequantize())
    text = "def f(x):\n    return x + 1\n"
    path = result.report["data_source"]["tokenizer"]["path"]
    assert AutoTokenizer.from_pretrained(str(folder), local_files_only=True)(text).input_ids == Tokenizer.from_file(path).encode(text).ids


@pytest.mark.slow  # the shared run: about 30 s
def test_the_folder_reads_back_as_model_with_the_same_codes_masks_and_logits(llama, tmp_path):
    from safetensors.numpy import load_file

    result, folder = llama
    back = torch_backend().load_model(str(folder), (128,), 2048)  # the folder as --model: no compressed-tensors needed
    assert set(back.quant) == set(result.model.quant) and set(back.qstate.mode.values()) == {"weights_only"}
    for name, q in result.model.quant.items():
        assert np.array_equal(back.quant[name].codes, q.codes) and np.array_equal(back.quant[name].scale, q.scale)
        keep = back.masks[name]  # kept where the weight is non-zero (a code 0 reads as pruned): still 2:4
        assert back.quant[name].group == 32 and torch.equal(keep, torch.from_numpy(q.codes != 0))
        assert (keep.reshape(keep.shape[0], -1, 4).sum(-1) <= 2).all()
    x = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(back.module(x), result.module(x), rtol=0, atol=1e-5)
    again = _run('export hf "again"', str(folder), tmp_path / "run")  # written again from what was read: the same tensors
    first, second = load_file(str(folder / "model.safetensors")), load_file(str(tmp_path / "run" / "again" / "model.safetensors"))
    assert sorted(first) == sorted(second) and all(np.array_equal(first[k], second[k]) for k in first)
    assert again.report["steps"][-1]["artifacts"][0]["sparsity_config"]["structure"] == "2:4"


@pytest.mark.slow  # one run, about 20 s
def test_a_full_grid_folder_holds_minus_8_loads_in_transformers_and_reads_back_on_the_full_grid(tmp_path):
    """``quantize int4 group=32 grid=full``: the codes -8..7 are written as they are (``code + 8``),
    transformers + compressed-tensors give lwdsl's logits, and the folder reads back as
    ``--model`` with the same codes on the full grid."""
    pytest.importorskip("compressed_tensors", reason=NEEDS_CT)
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    result = _run('quantize int4 group=32 grid=full except "lm_head"\nexport hf "full"\n', "tiny-llama", tmp_path / "run")
    folder = tmp_path / "run" / "full"
    quant = result.model.quant
    assert quant and all(q.grid == "full" for q in quant.values()) and min(int(q.codes.min()) for q in quant.values()) == -8
    state = load_file(str(folder / "model.safetensors"))
    for name, q in quant.items():
        assert np.array_equal(unpack_int32(state[f"{name}.weight_packed"], 4, state[f"{name}.weight_shape"]), q.codes)
    hf = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    x = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=x).logits, result.module(x), rtol=0, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = torch_backend().load_model(str(folder), (128,), 2048)
    assert set(back.quant) == set(quant)
    assert all(back.quant[n].grid == "full" and np.array_equal(back.quant[n].codes, q.codes) for n, q in quant.items())


@pytest.mark.slow  # two runs, about 20 s
def test_gpt2_conv1d_layers_stay_float_with_a_warning_and_nothing_quantized_is_the_plain_folder(tmp_path):
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    result = _run(RECIPE, "tiny-gpt2", tmp_path / "run")
    folder = tmp_path / "run" / "llm"
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert any("stored dequantized" in w and "GPT-2 Conv1D" in w for w in result.report["steps"][-1].get("warnings", ()))
    probe = "transformer.h.0.mlp.c_proj"
    w = load_file(str(folder / "model.safetensors"))[f"{probe}.weight"]
    assert np.array_equal(w.T, result.model.quant[probe].dequantize())  # Conv1D: [in, out] in the file
    hf = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    x = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=x).logits, result.module(x), rtol=0, atol=1e-5)
    plain = _run("export hf", "tiny-llama", tmp_path / "plain")
    conf = json.loads((tmp_path / "plain" / "model-hf" / "config.json").read_text())
    assert "quantization_config" not in conf and plain.report["steps"][-1]["artifacts"][0]["weights"] == "float32"


def _ct_folder(tmp_path, group: int = 32):
    """A tiny Llama quantized W4A16 (group ``group``) and saved by compressed-tensors' own code,
    as llm-compressor saves: apply the config, set the scales, compress, save, update the config."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme, apply_quantization_config
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=2048, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         intermediate_size=512, max_position_embeddings=128, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    scheme = QuantizationScheme(targets=["Linear"], weights={"num_bits": 4, "type": "int", "symmetric": True,
                                                             "strategy": "group", "group_size": group})
    qconfig = QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"], quantization_status="frozen")
    apply_quantization_config(model, qconfig)
    for name, m in model.named_modules():
        if getattr(m, "quantization_scheme", None) is not None:
            w = m.weight.detach().reshape(m.weight.shape[0], -1, group)
            scale, zp = calculate_qparams(w.amin(-1), w.amax(-1), m.quantization_scheme.weights)
            m.weight_scale.data.copy_(scale)
            m.weight_zero_point.data.copy_(zp.to(m.weight_zero_point.dtype))
    compressor = ModelCompressor.from_pretrained_model(model)
    compressor.compress_model(model)
    folder = tmp_path / "ct"
    model.save_pretrained(str(folder))
    compressor.update_config(str(folder))
    return folder


def test_a_folder_compressed_tensors_wrote_reads_with_its_weights(tmp_path):
    pytest.importorskip("compressed_tensors", reason=NEEDS_CT)
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    folder = _ct_folder(tmp_path)
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert qc["format"] == "pack-quantized" and qc["ignore"] == ["lm_head"]
    hf = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its -8 codes are lwdsl's full grid now: nothing to warn of
        back = torch_backend().load_model(str(folder), (128,), 2048)
    x = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(back.module(x), hf(input_ids=x).logits, rtol=0, atol=1e-5)
    state = load_file(str(folder / "model.safetensors"))
    layers = [k[: -len(".weight_packed")] for k in state if k.endswith(".weight_packed")]
    assert len(layers) == 14
    grids = set()
    for name in layers:  # its int4 codes are [-8, 7]: every layer recorded, a layer using -8 on the full grid
        codes = unpack_int32(state[f"{name}.weight_packed"], 4, state[f"{name}.weight_shape"])
        assert np.array_equal(back.quant[name].codes, codes)
        assert back.quant[name].grid == ("full" if codes.min() == -8 else "narrow")
        grids.add(back.quant[name].grid)
    assert "full" in grids


@pytest.mark.parametrize("bits,group", [(4, 32), (2, 32), (4, None), (8, None)])
def test_grid_full_is_compressed_tensors_own_rtn_bit_for_bit(bits, group):
    """compressed-tensors' symmetric qparams and quantizer (what llm-compressor's RTN W4A16 runs)
    give lwdsl's ``grid=full`` codes and scales exactly, per channel and in groups."""
    pytest.importorskip("compressed_tensors", reason=NEEDS_CT)
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import quantize
    from compressed_tensors.quantization.utils import calculate_qparams

    from lwdsl.semantics.codes import quantize_weight

    w = np.random.default_rng(bits).standard_normal((16, 128)).astype(np.float32)
    w[3] = 0.0  # a zero row: scale 1 (lwdsl) or eps (compressed-tensors), codes 0 either way
    args = QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy="group" if group else "channel",
                            group_size=group)
    t = torch.from_numpy(w)
    view = t.reshape(16, -1, group) if group else t.reshape(16, 1, -1)
    scale, zp = calculate_qparams(view.amin(-1), view.amax(-1), args)
    codes = quantize(t, scale, zp, args, dtype=torch.int8).numpy()
    q = quantize_weight(w, bits, "per_channel", group, grid="full")
    assert np.array_equal(q.codes, codes) and q.codes.min() == -(2 ** (bits - 1))
    live = np.abs(w).reshape(16, -1, group or 128).max(-1) > 0
    assert np.array_equal(q.scale.reshape(16, -1)[live], scale.numpy().reshape(16, -1)[live])


def test_folders_lwdsl_cannot_read_are_refused_with_the_reason(tmp_path):
    pytest.importorskip("compressed_tensors", reason=NEEDS_CT)
    bad = _ct_folder(tmp_path)
    conf = json.loads((bad / "config.json").read_text())
    conf["quantization_config"]["config_groups"]["group_0"]["input_activations"] = {"num_bits": 8, "type": "int"}
    (bad / "config.json").write_text(json.dumps(conf))
    with pytest.raises(LwdslError, match="input_activations are quantized"):
        torch_backend().load_model(str(bad), (128,), 2048)
    conf["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (bad / "config.json").write_text(json.dumps(conf))
    with pytest.raises(LwdslError, match="quant_method 'gptq'; lwdsl reads compressed-tensors only"):
        torch_backend().load_model(str(bad), (128,), 2048)


@pytest.mark.slow  # one more run: about 25 s
def test_2_4_int4_against_int4_alone(llama, tmp_path):
    """compressed-tensors 0.20 loads no sparse storage: the 2:4 + int4 folder holds the zeros
    packed as int4 like int4 alone (the same tensor bytes); lwdsl's own .lwz stores a 2:4
    layer's non-zero codes only (with a bitmap): about n/8 bytes less for n weights (0.96 n/8 measured
    with lm_head, bench/hf_size.py)."""
    result, folder = llama
    int4 = _run('quantize int4 method=gptq group=32 calibrate=16 except "lm_head"\nexport hf "llm"\n', "tiny-llama",
                tmp_path / "run")
    dense = tmp_path / "run" / "llm" / "model.safetensors"
    assert (folder / "model.safetensors").stat().st_size == dense.stat().st_size
    assert "sparsity_config" not in int4.report["steps"][-1]["artifacts"][0]
    n = sum(q.codes.size for q in result.model.quant.values())
    saved = (tmp_path / "run" / "model.lwz").stat().st_size - (folder.parent / "model.lwz").stat().st_size
    assert saved > n // 16, (saved, n)


def test_export_hf_needs_a_transformers_model_on_either_backend(tmp_path):
    with pytest.raises(LwdslError, match="export hf writes a Hugging Face transformers model; lenet300 is not one"):
        lwdsl.run("export hf", "lenet300", data="synthetic:1,28,28:10", baseline_epochs=0, quiet=True, latency=False,
                  out=tmp_path / "run")
    for name in ("torch", "tensorflow"):  # the support tables accept it (tests/conformance/test_hf_folder_parity.py)
        check_backend(lwdsl.parse("export hf"), name, load=False)
