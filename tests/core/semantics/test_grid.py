"""The integer grids (``grid=narrow|full``): the full grid's codes and scales, the clamp that
training keeps, GPTQ on it, and the state that stores it."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.errors import UsageError
from lwdsl.semantics.codes import (WeightQuant, code_bounds, codes_with_scale, int8_only, quantize_as, quantize_weight,
                                   requantize, snap)
from lwdsl.semantics.gptq import gptq_quantize
from lwdsl.semantics.hessian import output_error
from lwdsl.semantics.packing import pack_codes, unpack_codes
from lwdsl.semantics.state import check_state, pack_state, unpack_state

from .test_calibrated import layer


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group", [None, 32])
def test_full_grid_is_max_over_qmax_plus_a_half_clamped_to_all_codes(bits, group):
    rng = np.random.default_rng(bits)
    w = rng.standard_normal((6, 64)).astype(np.float32)
    w[2] = 0.0
    qmin, qmax = code_bounds(bits, "full")
    w[0] = np.clip(w[0], -1, 1) * np.float32((qmax + 0.5) / 4)
    w[0, 5] = -(qmax + 0.5) / 4  # row 0's max |w| is negative: scale 1/4 exactly, a tie at -qmax - 1/2 (to even: qmin)
    q = quantize_weight(w, bits, "per_channel", group, grid="full")
    assert (qmin, qmax) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) and q.grid == "full" and q.bounds() == (qmin, qmax)
    width = group or 64
    m = np.abs(w).reshape(6, -1, width).max(-1)
    want = np.where(m > 0, m / np.float32(qmax + 0.5), np.float32(1)).astype(np.float32)
    assert np.array_equal(q.scale.reshape(6, -1), want)
    ref = np.clip(np.rint(w / np.repeat(want, width, axis=1)), qmin, qmax)  # float32 division, ties to even
    assert np.array_equal(q.codes, ref.astype(np.int8)) and q.codes.min() == qmin and q.codes.max() == qmax
    assert q.codes[0, 5] == qmin and q.scale.reshape(6, -1)[0, 0] == 0.25 and (q.codes[2] == 0).all()
    assert np.array_equal(requantize(q.dequantize(), q).codes, q.codes)  # at its fixed scales: the same codes


def test_narrow_stays_the_default_and_per_tensor_takes_the_grid():
    w = np.array([[-7.5, 1.0, 3.75, 7.5]], np.float32)
    assert quantize_weight(w, 4).grid == "narrow" and quantize_weight(w, 4).codes.min() == -7
    q = quantize_weight(w, 4, "per_tensor", grid="full")
    assert q.axis is None and q.scale.shape == () and q.codes.tolist() == [[-8, 1, 4, 7]]
    assert quantize_as(w, "int2", grid="full").codes.tolist() == [[-2, 0, 1, 1]]
    for form in ("ternary", "binary", "cluster"):
        with pytest.raises(ValueError, match="applies to int8, int4 and int2"):
            quantize_as(w, form, grid="full")
    with pytest.raises(ValueError, match="no full grid"):
        code_bounds(1, "full")
    with pytest.raises(ValueError, match="grid must be one of narrow, full"):
        quantize_weight(w, 4, grid="wide")


@pytest.mark.parametrize("bits", [2, 4])
def test_full_grid_rounds_gaussian_weights_closer_than_narrow(bits):
    w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    err = {g: float(np.mean((quantize_weight(w, bits, group=32, grid=g).dequantize() - w) ** 2)) for g in ("narrow", "full")}
    assert err["full"] < err["narrow"]


def test_training_clamps_to_the_layers_grid():
    scale = np.array([1.0], np.float32)
    w = np.array([[-9.0, -7.6, 7.6, 9.0]], np.float32)
    assert codes_with_scale(w, scale, 4).tolist() == [[-7, -7, 7, 7]]
    assert codes_with_scale(w, scale, 4, "full").tolist() == [[-8, -8, 7, 7]]
    assert snap(w, scale, 2, "full").tolist() == [[-2.0, -2.0, 1.0, 1.0]]
    q = quantize_weight(np.array([[-1.5, 1.0]], np.float32), 2, grid="full")
    moved = requantize(np.array([[-5.0, 5.0]], np.float32), q)
    assert moved.grid == "full" and moved.codes.tolist() == [[-2, 1]]


def test_full_grid_int8_has_no_int8_kernels():
    w = np.ones((2, 3), np.float32)
    assert int8_only({"fc": quantize_weight(w, 8)}) and not int8_only({"fc": quantize_weight(w, 8, grid="full")})


@pytest.mark.parametrize("bits", [2, 4])
def test_gptq_on_the_full_grid_uses_its_scales_and_clamp_and_lowers_the_error(bits):
    w, _, gram = layer(cols=96)
    rtn = quantize_weight(w, bits, group=32, grid="full")
    q = gptq_quantize(w, gram.h, bits, 32, grid="full")
    assert q.grid == "full" and np.array_equal(q.scale, rtn.scale)
    assert q.codes.min() >= -(2 ** (bits - 1)) and q.codes.max() <= 2 ** (bits - 1) - 1 and (q.codes == -(2 ** (bits - 1))).any()
    narrow = gptq_quantize(w, gram.h, bits, 32)
    err = {k: output_error(w, v.dequantize(), gram.h) for k, v in (("rtn", rtn), ("gptq", q), ("narrow", narrow))}
    assert err["gptq"] < err["rtn"] and err["gptq"] < err["narrow"]


@pytest.mark.parametrize("bits, group", [(2, 32), (4, None), (8, 16)])
def test_full_grid_round_trips_through_the_state(bits, group):
    w, _, _ = layer(cols=64)
    q = quantize_weight(w, bits, group=group, grid="full")
    state = pack_state({"fc.bias": np.zeros(48, np.float32)}, {"fc": q})
    assert state["fc.weight.qmin"].dtype == np.int8 and int(state["fc.weight.qmin"]) == -(2 ** (bits - 1))
    out, quants = unpack_state(state)
    back = quants["fc"]
    assert back.grid == "full" and np.array_equal(back.codes, q.codes) and np.array_equal(out["fc.weight"], q.dequantize())
    narrow = pack_state({}, {"fc": quantize_weight(w, bits, group=group)})
    assert "fc.weight.qmin" not in narrow and unpack_state(narrow)[1]["fc"].grid == "narrow"  # as every older file
    with pytest.raises(UsageError, match="'fc.weight.qmin' is -3"):
        check_state({**state, "fc.weight.qmin": np.asarray(-3, np.int8)})
    without = {k: v for k, v in state.items() if k != "fc.weight.qmin"}  # -2^(b-1) codes need the full grid
    with pytest.raises(UsageError, match="fc.weight.codes"):
        check_state(without)


def test_packing_takes_the_full_grids_lowest_code_only_when_told():
    codes = np.array([-8, 7, 0, -1, -2], np.int8)
    assert unpack_codes(pack_codes(codes, 4, full=True), 4, (5,), full=True).tolist() == codes.tolist()
    with pytest.raises(ValueError, match=r"range \[-7, 7\]"):
        pack_codes(codes, 4)
    assert unpack_codes(pack_codes(np.array([-2, 1], np.int8), 2, full=True), 2, (2,), full=True).tolist() == [-2, 1]
    assert WeightQuant(codes, np.float32(1), 4, None).grid == "narrow"
