"""GPTQ and per-group scales (lwdsl.semantics.gptq, .codes, .state): the rules of
docs/semantics.md and the layer objective GPTQ lowers below round-to-nearest's."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.errors import UsageError
from lwdsl.semantics.codes import WeightQuant, codes_with_scale, int8_only, quantize_as, quantize_weight, requantize
from lwdsl.semantics.gptq import gptq_quantize
from lwdsl.semantics.hessian import Gram, output_error
from lwdsl.semantics.state import check_state, pack_state, unpack_state

from .test_calibrated import layer


def test_group_scales_are_each_groups_max_over_qmax() -> None:
    w, _, _ = layer(cols=100)
    q = quantize_weight(w, 4, group=32)
    assert q.scale.shape == (48, 4) and q.scale.dtype == np.float32 and q.group == 32 and q.axis == 0
    for g, start in enumerate(range(0, 100, 32)):  # the last group holds 4 inputs
        m = np.abs(w[:, start : start + 32]).max(axis=1)
        assert np.array_equal(q.scale[:, g], (m / np.float32(7)).astype(np.float32))
    assert np.abs(q.codes).max() == 7 and q.codes.dtype == np.int8
    full = np.repeat(q.scale, 32, axis=1)[:, :100]
    assert np.array_equal(q.dequantize(), q.codes.astype(np.float32) * full)
    assert np.array_equal(q.codes, codes_with_scale(w, full, 4))  # round to nearest at the group's scale
    again = quantize_weight(q.dequantize(), 4, group=32)  # the fixed point holds per group
    assert np.array_equal(again.codes, q.codes) and np.array_equal(again.scale, q.scale)
    assert np.array_equal(requantize(q.dequantize(), q).codes, q.codes) and requantize(w, q).group == 32


def test_a_zero_group_has_scale_one_and_codes_zero() -> None:
    w = np.ones((2, 8), np.float32)
    w[0, 4:] = 0
    q = quantize_weight(w, 4, group=4)
    assert q.scale.tolist() == [[np.float32(1 / 7), 1.0], [np.float32(1 / 7), np.float32(1 / 7)]]
    assert (q.codes[0, 4:] == 0).all()


@pytest.mark.parametrize("bad", [dict(granularity="per_tensor"), dict(w=np.ones((2, 3, 3), np.float32))])
def test_groups_need_a_2d_weight_per_channel(bad) -> None:
    w = bad.pop("w", np.ones((2, 8), np.float32))
    with pytest.raises(ValueError, match="group=4 quantizes a 2-d"):
        quantize_weight(w, 4, group=4, **bad)
    with pytest.raises(ValueError, match="not ternary"):
        quantize_as(np.ones((2, 8)), "ternary", group=4)


def test_grouped_int8_has_no_int8_kernels() -> None:
    assert not int8_only({"fc": quantize_as(np.ones((2, 8)), "int8", group=4)})


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
@pytest.mark.parametrize("group", [None, 32, 16])
def test_gptq_codes_are_integers_at_round_to_nearests_scales(bits, group) -> None:
    w, _, gram = layer()
    q = gptq_quantize(w, gram.h, bits, group)
    rtn = quantize_weight(w, bits, group=group)
    qmax = 2 ** (bits - 1) - 1
    assert q.codes.dtype == np.int8 and np.abs(q.codes).max() <= qmax and q.bits == bits and q.group == group
    assert np.array_equal(q.scale, rtn.scale)
    full = q.full_scale()
    assert np.array_equal(q.dequantize(), (q.codes.astype(np.float32) * full).astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bits, group", [(8, None), (4, None), (4, 32), (4, 16), (3, 32), (2, 32)])
def test_gptq_lowers_the_layer_error_below_round_to_nearest(seed, bits, group) -> None:
    w, _, gram = layer(seed)
    gptq = output_error(w, gptq_quantize(w, gram.h, bits, group).dequantize(), gram.h)
    rtn = output_error(w, quantize_weight(w, bits, group=group).dequantize(), gram.h)
    assert gptq < rtn


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bits, group", [(4, 32), (2, 32)])
def test_activation_order_visits_the_largest_inputs_first_and_lowers_the_error(seed, bits, group) -> None:
    """The columns by decreasing H_jj (ties by index), the natural groups' scales kept: on
    layers whose inputs differ in scale its layer error is below the natural order's."""
    w, _, gram = layer(seed)
    ordered = gptq_quantize(w, gram.h, bits, group)
    natural = gptq_quantize(w, gram.h, bits, group, act_order=False)
    assert np.array_equal(ordered.scale, natural.scale) and not np.array_equal(ordered.codes, natural.codes)
    assert output_error(w, ordered.dequantize(), gram.h) < output_error(w, natural.dequantize(), gram.h)
    h = np.diag(np.diag(gram.h))  # no correlation: each column alone, whatever the order, is round to nearest
    assert np.array_equal(gptq_quantize(w, h, bits, group, damp=0.0).codes, quantize_weight(w, bits, group=group).codes)


def test_gptq_keeps_a_pruned_layers_zeros() -> None:
    w, _, gram = layer()
    keep = np.tile([True, False, True, False], (w.shape[0], w.shape[1] // 4))
    pruned = np.where(keep, w, np.float32(0))
    q = gptq_quantize(pruned, gram.h, 4, 32, keep)
    assert (q.codes[~keep] == 0).all() and (q.dequantize()[~keep] == 0).all()
    rtn = quantize_weight(pruned, 4, group=32)
    assert output_error(pruned, q.dequantize(), gram.h) < output_error(pruned, rtn.dequantize(), gram.h)


def test_gptq_dead_inputs_and_a_bad_hessian() -> None:
    w, x, _ = layer()
    x[:, 5] = 0  # a feature never seen: its column is zero
    gram = Gram(x.shape[1])
    gram.update(x)
    q = gptq_quantize(w, gram.h, 4, 32)
    assert (q.codes[:, 5] == 0).all()
    with pytest.raises(Exception, match="not positive definite"):
        gptq_quantize(w, -np.eye(w.shape[1]), 4)


def test_grouped_codes_round_trip_through_the_state_and_damage_is_named() -> None:
    w, _, gram = layer(cols=70)
    q = gptq_quantize(w, np.eye(70), 4, 32)
    state = pack_state({"fc.weight": w, "fc.bias": np.zeros(48, np.float32)}, {"fc": q})
    assert state["fc.weight.group"].dtype == np.int32 and state["fc.weight.scale"].shape == (48, 3)
    out, quants = unpack_state(state)
    assert np.array_equal(out["fc.weight"], q.dequantize()) and quants["fc"].group == 32
    assert np.array_equal(quants["fc"].codes, q.codes) and np.array_equal(quants["fc"].scale, q.scale)
    bad = {**state, "fc.weight.scale": state["fc.weight.scale"][:, :2].copy()}
    with pytest.raises(UsageError, match=r"'fc.weight.scale' is float32 of shape \[48, 2\]; a float32 scale of shape \(48, 3\)"):
        check_state(bad)
    bad = {**state, "fc.weight.scale": state["fc.weight.scale"].copy()}
    bad["fc.weight.scale"][3, 1] = np.nan
    with pytest.raises(UsageError, match=r"holds nan \(group 10 of 144\)"):
        check_state(bad)
    with pytest.raises(UsageError, match="'fc.weight.group' is 0"):
        check_state({**state, "fc.weight.group": np.asarray(0, np.int32)})
    plain = pack_state({"fc.weight": w}, {"fc": quantize_weight(w, 4)})
    with pytest.raises(UsageError, match="belongs to no quantized layer"):
        check_state({"fc.weight": w, "fc.weight.group": np.asarray(32, np.int32)})
    with pytest.raises(UsageError, match=r"a float32 scale of shape \(48, 3\)"):
        check_state({**plain, "fc.weight.group": np.asarray(32, np.int32)})


def test_weight_quant_without_group_is_unchanged() -> None:
    q = quantize_weight(np.array([[1.0, -2.0]], np.float32), 8)
    assert q.group is None and q.full_scale().shape == (1, 1)
    assert "fc.weight.group" not in pack_state({}, {"fc": q}) and WeightQuant(q.codes, q.scale, 8, 0).group is None
