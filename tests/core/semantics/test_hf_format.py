"""lwdsl.semantics.hf_format: lwdsl's codes in compressed-tensors' layout (export hf, --model FOLDER)."""

from __future__ import annotations

import doctest
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwdsl.errors import UsageError
from lwdsl.semantics import hf_format as H
from lwdsl.semantics.codes import WeightQuant, quantize_as, quantize_weight

LINEAR = ("Linear", "Module", "object")
CLASSES = {"model": ("LlamaModel", "Module"), "model.q": LINEAR, "model.k": LINEAR, "model.norm": ("RMSNorm", "Module"),
           "lm_head": LINEAR}


def test_docstring_examples_run():
    result = doctest.testmod(H)
    assert result.attempted and not result.failed


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.integers(0, 5), st.integers(0, 70), st.integers(0, 2**32 - 1))
def test_pack_int32_round_trips_at_every_width_and_size(bits, rows, cols, seed):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    codes = np.random.default_rng(seed).integers(lo, hi + 1, (rows, cols)).astype(np.int8)
    packed = H.pack_int32(codes, bits)
    assert packed.dtype == np.int32 and packed.shape == (rows, -(-cols * bits // 32))
    assert np.array_equal(H.unpack_int32(packed, bits, (rows, cols)), codes)


def test_pack_int32_is_compressed_tensors_layout():
    ct = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers",
                             reason="compressed-tensors not installed (pip install 'lwdsl[compressed-tensors]')")
    import torch

    rng = np.random.default_rng(1)
    for bits in (2, 3, 4, 8):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        codes = rng.integers(lo, hi + 1, (5, 77)).astype(np.int8)
        theirs = ct.pack_to_int32(torch.from_numpy(codes), bits).numpy()
        assert np.array_equal(H.pack_int32(codes, bits), theirs)
        back = ct.unpack_from_int32(torch.from_numpy(theirs), bits, torch.Size(codes.shape)).numpy()
        assert np.array_equal(back, codes)


def test_pack_int32_refuses_codes_outside_the_width():
    with pytest.raises(ValueError, match=r"codes outside the 4-bit range \[-8, 7\]"):
        H.pack_int32(np.array([[8]], np.int8), 4)
    with pytest.raises(UsageError, match=r"pack into int32 \(2, 1\)"):
        H.unpack_int32(np.zeros((2, 2), np.int32), 4, (2, 8))


def _quants():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    return {"group": quantize_weight(w, 4, group=32), "channel": quantize_weight(w, 8),
            "tensor": quantize_weight(w, 4, "per_tensor"), "binary": quantize_as(w, "binary")}


@pytest.mark.parametrize("kind", ["group", "channel", "tensor", "binary"])
def test_layer_tensors_decode_to_the_same_codes_and_scales(kind):
    q = _quants()[kind]
    tensors = H.layer_tensors(q, q.codes.shape)
    scale = tensors["weight_scale"]
    assert scale.shape == {"group": (8, 2), "channel": (8, 1), "tensor": (1,), "binary": (8, 1)}[kind]
    assert tensors["weight_shape"].tolist() == [8, 64] and tensors["weight_packed"].dtype == np.int32
    args = H.weight_args(q)
    scheme = H.Scheme(args["num_bits"], args["strategy"], args["group_size"], H.FORMAT)
    back, why = H.decode_layer(tensors, scheme, "here")
    assert why is None and np.array_equal(back.codes, q.codes) and np.array_equal(back.scale, q.scale)
    assert back.group == q.group and back.axis == q.axis
    assert np.array_equal(back.dequantize(), q.dequantize())


def test_binary_is_written_at_two_bits_and_clusters_or_ragged_groups_have_no_form():
    q = _quants()
    assert H.weight_args(q["binary"])["num_bits"] == 2 and H.weight_args(q["group"])["num_bits"] == 4
    w = np.random.default_rng(0).standard_normal((4, 40)).astype(np.float32)
    assert "whole number of groups of 32" in H.unsupported(quantize_weight(w, 4, group=32), w.shape)
    assert H.unsupported(quantize_as(w, "cluster", bits=3), w.shape).startswith("clustered")
    assert H.unsupported(quantize_weight(w, 4, group=8), w.shape) is None


def test_one_scheme_targets_linear_and_ignores_the_float_linear_layers():
    q = _quants()["group"]
    keep = np.ones((8, 64), bool)
    keep.reshape(8, 16, 4)[..., :2] = False  # 2:4
    conf = H.quantization_config({"model.q": q, "model.k": q}, CLASSES, {"model.q": keep}, params=10_000)
    (group,) = conf["config_groups"].values()
    assert group["targets"] == ["Linear"] and conf["ignore"] == ["lm_head"]
    assert group["weights"] == {"num_bits": 4, "type": "int", "symmetric": True, "group_size": 32, "strategy": "group",
                                "dynamic": False}
    assert conf["format"] == "pack-quantized" and conf["quantization_status"] == "compressed"
    sc = conf["sparsity_config"]
    assert sc["sparsity_structure"] == "2:4" and sc["format"] == "dense"
    assert sc["targets"] == ["Linear"] and sc["ignore"] == ["model.k", "lm_head"] and sc["global_sparsity"] == pytest.approx(256 / 10_000)
    json.dumps(conf)  # plain JSON


def test_several_schemes_name_their_layers_and_no_masks_no_sparsity():
    qs = _quants()
    conf = H.quantization_config({"model.q": qs["group"], "model.k": qs["channel"]}, CLASSES, {}, params=1)
    assert [g["targets"] for g in conf["config_groups"].values()] == [["model.q"], ["model.k"]]
    assert conf["ignore"] == [] and conf["sparsity_config"] == {}
    assert H.structure({"a": np.ones((2, 8), bool)}) == "unstructured"


def test_our_config_is_a_valid_compressed_tensors_config():
    ct = pytest.importorskip("compressed_tensors.quantization", reason="compressed-tensors not installed (pip install 'lwdsl[compressed-tensors]')")
    qs = _quants()
    conf = H.quantization_config({"model.q": qs["group"], "model.k": qs["channel"]}, CLASSES, {}, params=1)
    parsed = ct.QuantizationConfig.model_validate(conf)
    assert parsed.format == "pack-quantized" and parsed.quantization_status == "compressed"
    assert parsed.config_groups["group_0"].weights.group_size == 32 and parsed.config_groups["group_1"].weights.strategy == "channel"


def test_read_config_finds_the_layers_back_and_its_sparse_ones():
    q = _quants()["group"]
    keep = np.ones((8, 64), bool)
    conf = H.quantization_config({"model.q": q, "model.k": q}, CLASSES, {"model.k": keep}, params=1)
    schemes, sparse, structure = H.read_config(conf, CLASSES, "cfg")
    assert list(schemes) == ["model.q", "model.k"] and schemes["model.q"] == H.Scheme(4, "group", 32, "pack-quantized")
    assert sparse == ["model.k"] and structure == "unstructured"
    regex = dict(conf, config_groups={"g": dict(conf["config_groups"]["group_0"], targets=["re:.*\\.q$"])}, ignore=[])
    assert list(H.read_config(regex, CLASSES, "cfg")[0]) == ["model.q"]


@pytest.mark.parametrize("change, message", [
    ({"quant_method": "gptq"}, "quant_method 'gptq'; lwdsl reads compressed-tensors only"),
    ({"quantization_status": "frozen"}, "quantization_status 'frozen'"),
    ({"kv_cache_scheme": {"num_bits": 8}}, "kv_cache_scheme is set"),
    ({"config_groups": {"W4A16": ["Linear"]}}, "a preset name"),
    ({"config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"},
                              "input_activations": {"num_bits": 8}}}}, "input_activations are quantized"),
    ({"config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "channel"}}}},
     "symmetric=False"),
    ({"config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
                                                                  "group_size": 32, "actorder": "group"}}}}, "actorder=group"),
    ({"format": "nvfp4-pack-quantized", "config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "strategy": "channel"}}}},
     "format 'nvfp4-pack-quantized'"),
])
def test_read_config_refuses_what_lwdsl_cannot_hold(change, message):
    conf = H.quantization_config({"model.q": _quants()["group"]}, CLASSES, {}, params=1)
    with pytest.raises(UsageError, match=re.escape(message)):
        H.read_config({**conf, **change}, CLASSES, "cfg")


def test_decode_layer_records_full_range_codes_on_the_full_grid():
    codes = np.array([[-8, 7, 0, 1]], np.int8)
    tensors = {"weight_packed": H.pack_int32(codes, 4), "weight_scale": np.array([[0.5]], np.float32),
               "weight_shape": np.array([1, 4])}
    q, why = H.decode_layer(tensors, H.Scheme(4, "channel", None, H.FORMAT), "L")
    assert why is None and q.grid == "full" and q.bounds() == (-8, 7)
    assert q.dequantize().tolist() == [[-4.0, 3.5, 0.0, 0.5]]
    narrow = {**tensors, "weight_packed": H.pack_int32(np.array([[-7, 7, 0, 1]], np.int8), 4)}
    assert H.decode_layer(narrow, H.Scheme(4, "channel", None, H.FORMAT), "L")[0].grid == "narrow"
    with pytest.raises(UsageError, match="weight_g_idx is stored"):
        H.decode_layer({**tensors, "weight_g_idx": np.zeros(4)}, H.Scheme(4, "channel", None, H.FORMAT), "L")
    with pytest.raises(UsageError, match=r"weight_scale \(1, 1\) for \[1, 4\] in groups of 2"):
        H.decode_layer(tensors, H.Scheme(4, "group", 2, H.FORMAT), "L")
    naive = {"weight": np.array([[3, -3]], np.int8), "weight_scale": np.array([[2.0]], np.float32)}
    q, why = H.decode_layer(naive, H.Scheme(8, "channel", None, "naive-quantized"), "L")
    assert why is None and q.dequantize().tolist() == [[6.0, -6.0]] and isinstance(q, WeightQuant)
