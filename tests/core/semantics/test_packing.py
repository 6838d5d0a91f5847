"""lwdsl.semantics.packing: the one bit packer, for quantized codes and cluster indices."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwdsl.errors import RunError
from lwdsl.semantics import packing as P


def test_docstring_examples_run():
    result = doctest.testmod(P)
    assert result.attempted and not result.failed


# ----------------------------------------------------------------------------- packing


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([1, 2, 4]), st.lists(st.integers(0, 6), min_size=0, max_size=3), st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip_and_size(bits, dims, seed):
    shape = tuple(dims)
    lo, hi = (-1, 1) if bits == 1 else (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
    rng = np.random.default_rng(seed)
    codes = rng.integers(lo, hi + 1, shape).astype(np.int8)
    if bits == 1:
        codes[codes == 0] = 1
    packed = P.pack_codes(codes, bits)
    n = int(np.prod(shape))
    assert packed.dtype == np.uint8 and packed.shape == (-(-n * bits // 8),)
    assert np.array_equal(P.unpack_codes(packed, bits, shape), codes)


def test_pack_layout_is_little_endian_twos_complement():
    # int4: element 0 in the low nibble; -1 is 0xF, 7 is 0x7, -7 is 0x9
    assert P.pack_codes(np.array([1, -1, 0, 7, -7], np.int8), 4).tolist() == [0xF1, 0x70, 0x09]
    # int2 / ternary: four per byte, element 0 in bits 0-1; -1 is 0b11
    assert P.pack_codes(np.array([1, -1, 0, 1, -1], np.int8), 2).tolist() == [0b01001101, 0b11]
    # binary: eight per byte, element 0 in bit 0; +1 is 1, -1 is 0
    assert P.pack_codes(np.array([1, -1, -1, -1, -1, -1, -1, -1, 1], np.int8), 1).tolist() == [1, 1]


def test_pack_refuses_codes_outside_the_form_and_unpack_refuses_damage():
    with pytest.raises(ValueError, match="outside the 4-bit range"):
        P.pack_codes(np.array([8], np.int8), 4)
    with pytest.raises(ValueError, match="binary"):
        P.pack_codes(np.array([0], np.int8), 1)
    with pytest.raises(ValueError, match="bits 1, 2 or 4"):
        P.pack_codes(np.array([0], np.int8), 8)
    with pytest.raises(RunError, match="do not fit shape"):
        P.unpack_codes(np.zeros(3, np.uint8), 4, (7,))
    with pytest.raises(RunError, match="damaged"):
        P.unpack_codes(np.array([0x08], np.uint8), 4, (1,))  # -8 is outside the narrow range



# ----------------------------------------------------------------------------- one packer, same bytes
#
# The two packers this module replaced, verbatim (quant.pack_codes / unpack_codes and
# cluster.pack_indices / unpack_indices before the split): the one packer gives their bytes.


def _old_pack_codes(codes, bits):
    c = np.asarray(codes).astype(np.int8, copy=False).reshape(-1)
    if bits == 1:
        return np.packbits(c > 0, bitorder="little")
    per = 8 // bits
    fields = c.view(np.uint8) & np.uint8((1 << bits) - 1)
    fields = np.concatenate([fields, np.zeros(-fields.size % per, np.uint8)]).reshape(-1, per)
    shifts = (np.arange(per) * bits).astype(np.uint8)
    return np.bitwise_or.reduce(fields << shifts, axis=1).astype(np.uint8)


def _old_unpack_codes(p, bits, shape):
    n = int(np.prod(shape, dtype=np.int64))
    if bits == 1:
        return np.where(np.unpackbits(p, count=n, bitorder="little") > 0, 1, -1).astype(np.int8).reshape(shape)
    per = 8 // bits
    shifts = (np.arange(per) * bits).astype(np.uint8)
    fields = ((p[:, None] >> shifts) & np.uint8((1 << bits) - 1)).reshape(-1)[:n].astype(np.int16)
    return np.where(fields >= 2 ** (bits - 1), fields - 2**bits, fields).astype(np.int8).reshape(shape)


def _old_pack_indices(codes, bits):
    c = np.asarray(codes).reshape(-1)
    fields = (c.astype(np.uint16)[:, None] >> np.arange(bits, dtype=np.uint16)) & 1
    return np.packbits(fields.astype(np.uint8).reshape(-1), bitorder="little")


def _old_unpack_indices(p, bits, shape):
    n = int(np.prod(shape, dtype=np.int64))
    fields = np.unpackbits(p, count=n * bits, bitorder="little").reshape(n, bits).astype(np.uint16)
    return (fields << np.arange(bits, dtype=np.uint16)).sum(axis=1).astype(np.uint8).reshape(shape)


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 8), st.lists(st.integers(0, 9), min_size=0, max_size=3), st.integers(0, 2**32 - 1))
def test_cluster_indices_pack_to_the_bytes_of_the_old_cluster_packer(bits, dims, seed):
    shape = tuple(dims)
    codes = np.random.default_rng(seed).integers(0, 2**bits, shape).astype(np.uint8)
    packed = P.pack_indices(codes, bits)
    assert packed.dtype == np.uint8 and packed.tobytes() == _old_pack_indices(codes, bits).tobytes()
    assert np.array_equal(P.unpack_indices(packed, bits, shape), _old_unpack_indices(packed, bits, shape))
    assert np.array_equal(P.unpack_indices(packed, bits, shape), codes)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([1, 2, 4]), st.lists(st.integers(0, 9), min_size=0, max_size=3), st.integers(0, 2**32 - 1))
def test_quantized_codes_pack_to_the_bytes_of_the_old_codes_packer(bits, dims, seed):
    shape = tuple(dims)
    lo, hi = P.code_range(bits)
    codes = np.random.default_rng(seed).integers(lo, hi + 1, shape).astype(np.int8)
    if bits == 1:
        codes[codes == 0] = 1
    packed = P.pack_codes(codes, bits)
    assert packed.tobytes() == _old_pack_codes(codes, bits).tobytes()
    assert np.array_equal(P.unpack_codes(packed, bits, shape), _old_unpack_codes(packed, bits, shape))


def test_codes_and_indices_share_the_layout():
    """Where both apply (1, 2, 4 bits), a code's unsigned field is its index: one layout."""
    rng = np.random.default_rng(7)
    for bits in P.PACKED_BITS:
        lo, hi = P.code_range(bits)
        signed = rng.integers(lo, hi + 1, 999).astype(np.int8)
        if bits == 1:
            signed[signed == 0] = 1
        fields = (signed > 0).astype(np.uint8) if bits == 1 else signed.view(np.uint8) & ((1 << bits) - 1)
        assert P.pack_codes(signed, bits).tobytes() == P.pack_indices(fields, bits).tobytes() == P.pack_fields(fields, bits).tobytes()


def test_cluster_and_quant_modules_use_the_one_packer():
    from pathlib import Path

    from lwdsl.semantics import cluster, quant, state

    assert cluster.pack_indices is P.pack_indices and cluster.unpack_indices is P.unpack_indices
    assert quant.pack_codes is P.pack_codes and quant.unpack_codes is P.unpack_codes
    assert state.pack_codes is P.pack_codes and state.pack_indices is P.pack_indices
    others = [f.name for f in Path(P.__file__).parent.glob("*.py") if f.name != "packing.py" and 'bitorder="little"' in f.read_text()]
    assert not others, f"a second bit packer in {others}"


def test_packed_states_are_byte_identical_to_before_the_split():
    """A digest of packed states (every form, per channel and per tensor, dense and sparse
    layers, cluster at 2..8 bits) taken with the code before the split."""
    import hashlib

    from lwdsl.semantics import codes, state

    h = hashlib.sha256()
    rng = np.random.default_rng(20)
    w = rng.normal(size=(16, 3, 5, 7)).astype(np.float32)
    w[rng.random(w.shape) < 0.9] = 0  # sparse enough for the bitmap layout at some bits
    dense = rng.normal(size=(8, 77)).astype(np.float32)
    for x in (w, dense):
        for form in ("int8", "int4", "int2", "ternary", "binary"):
            for g in ("per_channel", "per_tensor"):
                st_ = state.pack_state({}, {"l": codes.quantize_as(x, form, g)})
                for k in sorted(st_):
                    h.update(k.encode())
                    h.update(np.ascontiguousarray(st_[k]).tobytes())
        for b in range(2, 9):
            st_ = state.pack_state({}, {"l": codes.quantize_as(x, "cluster", bits=b)})
            for k in sorted(st_):
                h.update(k.encode())
                h.update(np.ascontiguousarray(st_[k]).tobytes())
    assert h.hexdigest() == "8094cfee5f33bd2b56ff5866bf7871da34e8a0351641dcbd9a680acb62368711"
