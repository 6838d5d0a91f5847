"""lwdsl.semantics.nm_layout and the N:M layout of the state format (lwdsl.semantics.state):
kept codes and each group's pattern rank, decided from the keep mask, round trips, sizes, checks."""

from __future__ import annotations

import dataclasses
import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwdsl.semantics import code_layouts as C
from lwdsl.semantics import codes as W
from lwdsl.semantics import masks as M
from lwdsl.semantics import nm_layout as L
from lwdsl.semantics import packing as P
from lwdsl.semantics import state as S


@pytest.mark.parametrize("module", [L, C], ids=["nm_layout", "code_layouts"])
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted and not result.failed


@pytest.mark.parametrize("n,m", [(1, 2), (2, 4), (1, 4), (3, 4), (4, 8), (2, 8), (1, 16), (2, 16)])
def test_patterns_are_every_way_to_keep_n_of_m_once_in_lexicographic_order(n, m):
    p = L.nm_patterns(n, m)
    assert p.shape == (math.comb(m, n), m) and (p.sum(axis=1) == n).all()
    tuples = [tuple(np.flatnonzero(row)) for row in p]
    assert tuples == sorted(set(tuples))
    assert 2 ** (L.pattern_bits(n, m) - 1) < len(p) <= 2 ** L.pattern_bits(n, m) or len(p) == 2


def _two_four(rows: int, cols: int, seed: int, bits: int = 4, group: int | None = 32):
    """A 2:4 layer quantized after pruning: its mask, its WeightQuant; some kept weights so small
    that their code is 0 (the layout must keep them as kept), some rows all zero."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.1, (rows, cols)).astype(np.float32)
    keep = M.nm_keep_mask(w, 2, 4)
    w[~keep] = 0
    tiny = keep & (rng.random(w.shape) < 0.03)
    w[tiny] = 1e-6  # kept, but code 0
    w[rows // 2] = 0  # a whole row of zeros: extra zeros in a 2:4 layer
    q = W.quantize_weight(w, bits, group=group)
    return keep, q, tiny


@pytest.mark.parametrize("rows,cols", [(64, 128), (33, 70), (16, 4 * 64 + 3), (32, 4 * 64 + 1)])
def test_nm_layout_round_trips_codes_scales_and_the_mask_not_the_nonzero_codes(rows, cols):
    keep, q, tiny = _two_four(rows, cols, seed=cols)
    assert ((q.codes == 0) & keep).any() and tiny.any()  # kept weights with code 0
    packed = S.pack_state({"fc.bias": np.ones(rows, np.float32)}, {"fc": q}, keep={"fc": keep})
    assert packed["fc.weight.nm"].tolist() == [2, 4] and "fc.weight.nonzero" not in packed
    kept, ranks = L.nm_counts(rows, cols, 2, 4)
    assert packed["fc.weight.codes"].size == -(-kept * 4 // 8) and packed["fc.weight.positions"].size == -(-ranks * 3 // 8)
    flat, quants = S.unpack_state(packed)
    back = quants["fc"]
    assert np.array_equal(back.codes, q.codes) and back.codes.dtype == np.int8
    assert back.scale.tobytes() == q.scale.tobytes() and back.group == 32 and back.bits == 4
    assert np.array_equal(flat["fc.weight"], q.dequantize()) and np.array_equal(flat["fc.bias"], np.ones(rows))
    mask = S.unpack_keep(packed)["fc"]
    assert np.array_equal(mask, keep) and not np.array_equal(mask, q.codes != 0)
    S.check_state(packed)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 7), m=st.integers(2, 8), rows=st.integers(1, 5), groups=st.integers(1, 6), rest=st.integers(0, 7),
       seed=st.integers(0, 2**16))
def test_split_and_join_are_inverse_for_any_nm_and_the_codes_of_either_grid(n, m, rows, groups, rest, seed):
    """Every N:M (M <= 8), rows with a partial last group, codes -8..7 (the full int4 grid) and 0
    at kept positions: join(split(codes)) gives the codes and the mask back."""
    if n >= m:
        return
    rest %= m
    rng = np.random.default_rng(seed)
    keep = M.nm_keep_scores(rng.random((rows, groups * m + rest)), n, m)
    codes = np.where(keep, rng.integers(-8, 8, keep.shape), 0).astype(np.int8)
    kept, ranks = L.nm_split(codes, keep, n, m)
    assert (kept.size, ranks.size) == L.nm_counts(rows, keep.shape[1], n, m)
    assert ranks.max() < math.comb(m, n)
    back, mask = L.nm_join(kept, ranks, keep.shape, n, m)
    assert np.array_equal(back, codes) and np.array_equal(mask, keep)
    assert (n, m) in L.find_nm(keep)


def test_full_grid_int4_codes_round_trip_through_the_state():
    """Codes -8..7 (``grid=full``) in the N:M layout: needs the full grid (``WeightQuant.grid``)."""
    if "grid" not in {f.name for f in dataclasses.fields(W.WeightQuant)}:
        pytest.skip("the full int4 grid (grid=full) is not in this tree yet")
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.1, (32, 128)).astype(np.float32)
    keep = M.nm_keep_mask(w, 2, 4)
    w[~keep] = 0
    q = W.quantize_weight(w, 4, group=32, grid="full")
    assert (q.codes == -8).any()
    _, quants = S.unpack_state(S.pack_state({}, {"fc": q}, keep={"fc": keep}))
    assert np.array_equal(quants["fc"].codes, q.codes)


def _main_bytes(packed: dict, layer: str) -> int:
    """Bytes of a layer's codes, positions and scales (the rest: a few bytes of shape, bits, group, nm)."""
    return sum(packed[f"{layer}.weight{part}"].nbytes for part in (".codes", ".positions", ".scale") if f"{layer}.weight{part}" in packed)


@pytest.mark.parametrize("n,m,bits,group", [(2, 4, 4, 32), (2, 4, 4, None), (4, 8, 4, 32), (1, 4, 2, 16)])
def test_an_nm_layer_takes_the_fraction_of_int_alone_its_layout_gives(n, m, bits, group):
    """The layer pruned N:M and quantized against the same layer quantized alone: codes,
    positions and scales take exactly the bytes the layout's bit counts give (2:4 int4 g32: 2 +
    3/4 + 1 bits a weight against 4 + 1, 25% fewer)."""
    rows, cols = 256, 512
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (rows, cols)).astype(np.float32)
    keep = M.nm_keep_mask(w, n, m)
    alone = S.pack_state({}, {"fc": W.quantize_weight(w, bits, group=group)})
    q = W.quantize_weight(np.where(keep, w, 0), bits, group=group)
    sparse = S.pack_state({}, {"fc": q}, keep={"fc": keep})
    assert sparse["fc.weight.nm"].tolist() == [n, m] and set(alone) == {f"fc.weight.{p}" for p in ("codes", "scale", "shape", "bits", "group")} - (set() if group else {"fc.weight.group"})
    code_bytes, pos_bytes = S.nm_bytes((rows, cols), bits, n, m)
    assert _main_bytes(sparse, "fc") == code_bytes + pos_bytes + q.scale.nbytes
    scale_bits = 32 / group if group else 32 / cols
    want = (bits * n / m + L.pattern_bits(n, m) / m + scale_bits) / (bits + scale_bits)
    assert _main_bytes(sparse, "fc") / _main_bytes(alone, "fc") == pytest.approx(want, rel=1e-12)
    if (n, m, bits, group) == (2, 4, 4, 32):
        assert want == 0.75


def test_the_layout_follows_the_rule_mask_first_then_bytes():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.1, (128, 256)).astype(np.float32)
    keep = M.nm_keep_mask(w, 2, 4)
    w[~keep] = 0
    q = W.quantize_weight(w, 4)
    # no mask given: the bitmap of the non-zero codes, as before (old files' layout)
    assert "fc.weight.nonzero" in S.pack_state({}, {"fc": q}) and "fc.weight.nm" not in S.pack_state({}, {"fc": q})
    # a mask that is not N:M (one more weight pruned): the bitmap layout
    odd = keep.copy()
    odd[0, np.flatnonzero(odd[0])[0]] = False
    q_odd = W.quantize_weight(np.where(odd, w, 0), 4)
    assert "fc.weight.nm" not in S.pack_state({}, {"fc": q_odd}, keep={"fc": odd})
    # a 2:4 mask whose kept codes are nearly all 0: the bitmap is smaller and wins
    sparse_w = np.where(keep & (rng.random(w.shape) < 0.05), w, 0).astype(np.float32)
    packed = S.pack_state({}, {"fc": W.quantize_weight(sparse_w, 4)}, keep={"fc": keep})
    assert "fc.weight.nonzero" in packed and "fc.weight.nm" not in packed
    # binary has no code 0: a pruned weight is ±1, so the mask cannot give the codes back
    packed = S.pack_state({}, {"fc": W.quantize_as(w, "binary")}, keep={"fc": keep})
    assert "fc.weight.nm" not in packed
    # a clustered 2:4 layer: indices in the N:M layout, the codebook beside them
    qc = W.quantize_as(w, "cluster", bits=3)
    packed = S.pack_state({}, {"fc": qc}, keep={"fc": keep})
    assert "fc.weight.nm" in packed
    assert np.array_equal(S.unpack_state(packed)[1]["fc"].codes, qc.codes)
    with pytest.raises(ValueError, match="keep mask of shape"):
        S.pack_state({}, {"fc": q}, keep={"fc": keep[:, :8]})


def test_an_old_state_without_the_layout_loads_as_it_did():
    """What lwdsl wrote before the N:M layout (bitmap of the non-zero codes) loads unchanged,
    and gives no mask."""
    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.1, (64, 128)).astype(np.float32)
    w[~M.nm_keep_mask(w, 2, 4)] = 0
    q = W.quantize_weight(w, 4, group=32)
    flat = q.codes.reshape(-1)
    old = {"fc.weight.codes": P.pack_codes(flat[flat != 0], 4), "fc.weight.nonzero": np.packbits(flat != 0),
           "fc.weight.shape": np.array([64, 128], np.int64), "fc.weight.scale": q.scale, "fc.weight.bits": np.int8(4).reshape(()),
           "fc.weight.group": np.int32(32).reshape(())}
    _, quants = S.unpack_state(old)
    assert np.array_equal(quants["fc"].codes, q.codes) and S.unpack_keep(old) == {}


def _damaged(packed: dict, key: str, value) -> dict:
    out = dict(packed)
    if value is None:
        del out[key]
    else:
        out[key] = value
    return out


def test_a_damaged_nm_layer_is_refused_naming_the_tensor():
    keep, q, _ = _two_four(64, 70, seed=4)
    good = S.pack_state({}, {"fc": q}, keep={"fc": keep})
    pos, codes = good["fc.weight.positions"], good["fc.weight.codes"]
    bad_rank = pos.copy()
    bad_rank[0] |= 0b111  # rank 7: 2:4 has 6 patterns
    cases = {
        "fc.weight.positions": [bad_rank, pos[:-1], None],
        "fc.weight.nm": [np.array([2, 2], np.int32), np.array([4, 70], np.int32), np.array([2.0, 4.0], np.float32), None],
        "fc.weight.codes": [codes[:-1]],
    }
    for key, values in cases.items():
        for value in values:
            with pytest.raises(S.DamagedTensor, match=r"fc\.weight\.(positions|nm|codes)"):
                S.check_state(_damaged(good, key, value))
    with pytest.raises(S.DamagedTensor, match="stored one way"):
        S.check_state({**good, "fc.weight.nonzero": np.packbits(keep.reshape(-1))})
    # the partial last group (70 = 17 * 4 + 2, 2 of 2 kept) has no rank; a rank past the end of
    # a row is refused where the last group is partial and prunes
    keep3, q3, _ = _two_four(64, 67, seed=5)
    ok = S.pack_state({}, {"fc": q3}, keep={"fc": keep3})
    kept, ranks = L.nm_split(q3.codes, keep3, 2, 4)
    ranks[16] = 5  # positions (2, 3) of a last group of 3 inputs: position 3 is past the row
    bad = dict(ok, **{"fc.weight.positions": P.pack_fields(ranks, 3)})
    with pytest.raises(S.DamagedTensor, match="past the last"):
        S.check_state(bad)
