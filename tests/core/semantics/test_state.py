"""lwdsl.semantics.state: quantized and cast layers in the canonical state, sparse packing, load
checks."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwdsl.errors import UsageError
from lwdsl.semantics import activations as A
from lwdsl.semantics import casts as H
from lwdsl.semantics import codes as W
from lwdsl.semantics import packing as P
from lwdsl.semantics import state as S


def test_docstring_examples_run():
    result = doctest.testmod(S)
    assert result.attempted and not result.failed


def test_pack_state_round_trip_mixed_forms_and_activations():
    rng = np.random.default_rng(0)
    state = {f"l{i}.weight": rng.normal(size=(6, 5, 3)).astype(np.float32) for i in range(5)}
    state["l0.bias"] = rng.normal(size=6).astype(np.float32)
    state["other.scale"] = np.ones(3, np.float32)  # a model's own tensor named like a suffix stays
    forms = ["int8", "int4", "int2", "ternary", "binary"]
    quants = {f"l{i}": W.quantize_as(state[f"l{i}.weight"], f, g) for i, (f, g) in enumerate(zip(forms, ["per_channel", "per_tensor"] * 3))}
    acts = {"l1": A.act_qparams(-0.5, 2.0)}
    packed = S.pack_state(state, quants, acts)
    assert packed["l0.weight.codes"].dtype == np.int8 and "l0.weight.shape" not in packed
    for i, bits in ((1, 4), (2, 2), (3, 2), (4, 1)):
        assert packed[f"l{i}.weight.codes"].dtype == np.uint8
        kept = int(np.count_nonzero(quants[f"l{i}"].codes)) if f"l{i}.weight.nonzero" in packed else 90
        assert packed[f"l{i}.weight.codes"].size == -(-kept * bits // 8)
        assert packed[f"l{i}.weight.shape"].tolist() == [6, 5, 3] and int(packed[f"l{i}.weight.bits"]) == bits
    assert not any(k.endswith(".nonzero") for k in packed)  # 90 weights: sparse would save under 256 bytes
    assert packed["l1.act.scale"].dtype == np.float32 and packed["l1.act.zero_point"].dtype == np.int32
    flat, back = S.unpack_state(packed)
    assert set(flat) == set(state) and S.unpack_act(packed) == acts
    for layer, q in quants.items():
        assert np.array_equal(back[layer].codes, q.codes) and back[layer].scale.tobytes() == q.scale.tobytes()
        assert back[layer].bits == q.bits and back[layer].axis == q.axis
        assert flat[f"{layer}.weight"].tobytes() == q.dequantize().tobytes()
    assert np.array_equal(flat["other.scale"], state["other.scale"])
    del packed["l2.weight.shape"]
    with pytest.raises(UsageError, match="no 'l2.weight.shape'"):
        S.unpack_state(packed)


@pytest.mark.parametrize("form,factor", [("int4", 2.0), ("int2", 4.0), ("ternary", 4.0), ("binary", 8.0)])
def test_packed_codes_take_the_promised_fraction_of_int8(form, factor):
    w = np.random.default_rng(2).normal(size=(64, 800)).astype(np.float32)
    raw8 = S.pack_state({}, {"l": W.quantize_as(w, "int8")})["l.weight.codes"].nbytes
    q = W.quantize_as(w, form)
    assert raw8 / P.pack_codes(q.codes, q.bits).nbytes == factor  # all codes packed
    packed = S.pack_state({}, {"l": q})
    stored = packed["l.weight.codes"].nbytes + (packed["l.weight.nonzero"].nbytes if "l.weight.nonzero" in packed else 0)
    assert raw8 / stored >= factor  # sparse packing only where it is smaller


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["int4", "int2", "ternary", "cluster"]), st.floats(0.0, 1.0), st.integers(1, 2000), st.integers(0, 2**32 - 1))
def test_sparse_packing_is_chosen_by_its_rule_and_is_lossless(form, density, n, seed):
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(3, n)) * (rng.random((3, n)) < density)).astype(np.float32)
    q = W.quantize_as(w, form, bits=3) if form == "cluster" else W.quantize_as(w, form)
    packed = S.pack_state({}, {"l": q})
    size, kept = 3 * n, int(np.count_nonzero(q.codes))
    dense_bytes, sparse_bytes = -(-size * q.bits // 8), -(-size // 8) + -(-kept * q.bits // 8)
    sparse = 4 * sparse_bytes <= 3 * dense_bytes and dense_bytes - sparse_bytes >= 256
    assert ("l.weight.nonzero" in packed) == sparse == S.sparse_pays(size, kept, q.bits)
    if sparse:
        assert packed["l.weight.nonzero"].size == -(-size // 8) and packed["l.weight.codes"].size == -(-kept * q.bits // 8)
        assert np.array_equal(np.unpackbits(packed["l.weight.nonzero"], count=size).reshape(3, n).astype(bool), q.codes != 0)
    _, back = S.unpack_state(packed)
    assert np.array_equal(back["l"].codes, q.codes) and back["l"].dequantize().tobytes() == q.dequantize().tobytes()


def test_sparse_packing_refuses_a_damaged_bitmap():
    w = np.zeros((4, 4096), np.float32)
    w[0, :3] = [0.5, -0.25, 1.0]
    for form in ("int4", "cluster"):
        packed = S.pack_state({}, {"l": W.quantize_as(w, form, bits=2) if form == "cluster" else W.quantize_as(w, form)})
        assert packed["l.weight.nonzero"].size == 2048
        with pytest.raises(UsageError, match="nonzero' has 2047 uint8 bytes, not the 2048 of shape"):
            S.unpack_state(dict(packed, **{"l.weight.nonzero": packed["l.weight.nonzero"][:2047]}))
        more = packed["l.weight.nonzero"].copy()
        more[5] = 0xFF  # eight more non-zeros than there are codes
        with pytest.raises(UsageError, match="do not fit shape"):
            S.unpack_state(dict(packed, **{"l.weight.nonzero": more}))
        zero = dict(packed, **{"l.weight.codes": np.zeros_like(packed["l.weight.codes"])})
        with pytest.raises(UsageError, match="holds a zero where"):
            S.unpack_state(zero)


def test_pack_state_stores_casts_in_16_bits():
    w = np.random.default_rng(3).normal(size=(4, 6)).astype(np.float32)
    state = {"a.weight": H.cast_weight(w, "fp16"), "b.weight": H.cast_weight(w, "bf16"), "a.bias": w[0]}
    packed = S.pack_state(state, {}, None, {"a": "fp16", "b": "bf16"})
    assert sorted(packed) == ["a.bias", "a.weight.fp16", "b.weight.bf16"]
    assert packed["a.weight.fp16"].dtype == np.uint16 and packed["a.weight.fp16"].nbytes == w.nbytes // 2
    flat, quants = S.unpack_state(packed)
    assert not quants and S.unpack_casts(packed) == {"a": "fp16", "b": "bf16"}
    assert all(flat[k].tobytes() == state[k].tobytes() for k in state)


def test_unpack_state_reads_a_per_tensor_scale_stored_as_shape_1():
    """A writer may store 0-d arrays as shape (1,): a per-tensor scale stays per tensor (from the
    weight's first dimension, for int8 codes and packed ones), a one-channel layer's (1,) scale
    stays per channel, and bits read the same either way."""
    w = np.random.default_rng(3).normal(size=(4, 300)).astype(np.float32)
    one = w[:1]
    quants = {"a": W.quantize_as(w, "int8", "per_tensor"), "b": W.quantize_as(w, "int4", "per_tensor"),
              "c": W.quantize_as(one, "int4", "per_channel")}
    packed = S.pack_state({}, quants)
    stored = {k: (np.asarray(v).reshape(1) if np.ndim(v) == 0 else v) for k, v in packed.items()}
    assert stored["a.weight.scale"].shape == stored["b.weight.bits"].shape == (1,)
    flat, back = S.unpack_state(stored)
    for layer, q in quants.items():
        assert back[layer].scale.shape == np.shape(q.scale) and back[layer].axis == q.axis and back[layer].bits == q.bits
        assert flat[f"{layer}.weight"].tobytes() == q.dequantize().tobytes()
    assert back["a"].axis is None and back["c"].axis == 0
