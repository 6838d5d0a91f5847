"""``quantize`` on every backend: low-bit codes, casts and int8 codes are the core's, the
packed .lwz round-trips, QAT and finetuning train on the grid at fixed scales (merged from
test_torch_quantize.py and test_tf_quantize.py)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from lwdsl.data.dataset import Dataset
from lwdsl.semantics.order import calibration_indices
from lwdsl.semantics.quant import (FORM_BITS, RangeObserver, act_qparams, cast_weight, codes_with_scale, half_bits,
                                   quantize_as, quantize_weight, snap, unpack_state)
from lwdsl.language.specs import FinetuneSpec, PruneSpec, QuantizeSpec
from lwdsl.backend.weights import load_weights, save_weights

from .helpers import make_ctx, make_data

SHAPE, LAYERS = (1, 28, 28), ["conv1", "conv2", "fc1", "fc2"]
LOW_BIT = ["int4", "int2", "ternary", "binary"]


def _lenet5(be):
    return be.load_model("lenet5", SHAPE, 10)


def _bytes_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert np.array_equal(np.atleast_1d(a[k]).view(np.uint8), np.atleast_1d(b[k]).view(np.uint8)), k


def test_int8_lwz_is_small_and_loads_back_to_the_same_codes(backend, kit, tmp_path):
    be = backend
    h = _lenet5(be)
    assert [i.name for i in be.layers(h)] == LAYERS
    size_float = save_weights(tmp_path / "float.lwz", be.state(h))
    h = be.apply(h, QuantizeSpec(dtype="int8", granularity="per_channel"), LAYERS, make_ctx(make_data(n_train=64, n_test=32)))
    packed = be.state(h)
    assert "conv1.weight" not in packed and packed["conv1.weight.codes"].dtype == np.int8
    size_q = save_weights(tmp_path / "q.lwz", packed)
    assert size_q < 0.3 * size_float
    assert (tmp_path / "q.lwz").stat().st_size < 0.3 * (tmp_path / "float.lwz").stat().st_size
    back = be.load_model("lenet5", SHAPE, 10, checkpoint=tmp_path / "q.lwz")
    _bytes_equal(be.state(back), packed)
    assert set(back.quant) == set(LAYERS)
    assert set(load_weights(tmp_path / "q.lwz")[0]) == set(packed)
    for n in LAYERS:
        assert np.array_equal(back.quant[n].codes, h.quant[n].codes)
        assert kit.weight(back, n).tobytes() == h.quant[n].dequantize().tobytes()


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("dtype", LOW_BIT)
def test_low_bit_codes_are_the_cores_and_pruned_zeros_stay_where_the_form_allows(backend, kit, dtype, granularity):
    be, data = backend, make_data(n_train=64, n_test=32)
    h = _lenet5(be)
    h = be.apply(h, PruneSpec(scope="global", method="l1", amount=0.5), LAYERS, make_ctx(data))
    before = kit.weights(h, LAYERS)
    ctx = make_ctx(data)
    h = be.apply(h, QuantizeSpec(dtype=dtype, granularity=granularity), LAYERS, ctx)
    _, quant = unpack_state(be.state(h))
    for n in LAYERS:
        want = quantize_as(before[n], dtype, granularity)
        for got in (h.quant[n], quant[n]):  # on the handle and in the saved state
            assert got.bits == FORM_BITS[dtype] and np.array_equal(got.codes, want.codes)
            assert got.scale.tobytes() == want.scale.tobytes()
        assert kit.weight(h, n).tobytes() == want.dequantize().tobytes()
        assert ctx.notes["quantized"][n] == {"bits": FORM_BITS[dtype], "form": dtype, "granularity": granularity, "mode": "weights_only"}
        assert h.qstate.mode[n] == "weights_only"
    warned = ctx.extra["warnings"]
    if dtype == "binary":  # no code 0: the masks go, and the user is told
        assert not h.masks and len(warned) == len(LAYERS) and all("mask is dropped" in w for w in warned)
    else:
        assert set(h.masks) == set(LAYERS) and not warned
        for n in LAYERS:
            assert (h.quant[n].codes[~kit.mask(h, n)] == 0).all()
            assert (h.quant[n].codes[before[n] == 0] == 0).all()
    assert h.act == {} and "int8_artifact" not in ctx.notes


@pytest.mark.parametrize("dtype", LOW_BIT)
def test_low_bit_lwz_is_packed_and_loads_back_to_the_same_codes(backend, kit, dtype, tmp_path):
    be, data = backend, make_data(n_train=64, n_test=32)
    h = _lenet5(be)
    int8 = be.apply(be.copy_model(h), QuantizeSpec(dtype="int8"), LAYERS, make_ctx(data))
    h = be.apply(h, QuantizeSpec(dtype=dtype), LAYERS, make_ctx(data))
    packed = be.state(h)
    assert all(packed[f"{n}.weight.codes"].dtype == np.uint8 and f"{n}.weight" not in packed for n in LAYERS)
    save_weights(tmp_path / "int8.lwz", be.state(int8))
    save_weights(tmp_path / "low.lwz", packed)
    back = be.load_model("lenet5", SHAPE, 10, checkpoint=tmp_path / "low.lwz")
    _bytes_equal(be.state(back), packed)
    for n in LAYERS:
        assert np.array_equal(back.quant[n].codes, h.quant[n].codes) and back.quant[n].bits == h.quant[n].bits
        assert kit.weight(back, n).tobytes() == h.quant[n].dequantize().tobytes()
    # gzip of the file against int8's: the codes shrink by 8 / bits; biases and scales do not
    size = {k: len(gzip.compress((tmp_path / f"{k}.lwz").read_bytes())) for k in ("int8", "low")}
    bits = h.quant["fc1"].bits
    assert size["low"] < size["int8"] * (bits / 8 + 0.1), size


@pytest.mark.parametrize("dtype", LOW_BIT)
def test_low_bit_qat_and_finetune_train_on_the_grid_at_fixed_scales(backend, kit, dtype):
    be, data = backend, make_data(n_train=256, n_test=32)
    ctx = make_ctx(data)
    h = _lenet5(be)
    h = be.apply(h, PruneSpec(method="l1", amount=0.5), LAYERS, ctx)
    keep = kit.masks(h)
    start = kit.weights(h, LAYERS)
    codes = {n: quantize_as(start[n], dtype).codes for n in LAYERS}  # what quantize alone gives
    h = be.apply(h, QuantizeSpec(dtype=dtype, mode="qat", epochs=1), LAYERS, ctx)
    assert len(h.losses) == 4 and h.act == {}
    scales = {n: h.quant[n].scale.copy() for n in LAYERS}
    assert all(scales[n].tobytes() == quantize_as(start[n], dtype).scale.tobytes() for n in LAYERS)
    h = be.apply(h, FinetuneSpec(epochs=3, lr=0.1), LAYERS, ctx)
    moved = 0
    for n in LAYERS:
        w, q = kit.weight(h, n), h.quant[n]
        assert q.scale.tobytes() == scales[n].tobytes()  # never recomputed while training
        assert w.tobytes() == snap(w, q.scale, q.bits).tobytes() == q.dequantize().tobytes()
        if dtype != "binary":
            assert (w[~keep[n]] == 0).all() and (q.codes[~keep[n]] == 0).all()
            assert (q.codes[start[n] == 0] == 0).all()
        moved += int((q.codes != codes[n]).sum())
    assert moved > 0  # it trained


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_cast_rounds_weights_by_the_core_halves_the_lwz_and_round_trips(backend, kit, dtype, tmp_path):
    be = backend
    data = make_data(n_train=64, n_test=32)
    ctx = make_ctx(data)
    h = _lenet5(be)
    before = kit.weights(h, LAYERS)
    float_state = be.state(h)
    save_weights(tmp_path / "float.lwz", float_state)
    h = be.apply(h, QuantizeSpec(dtype=dtype), LAYERS, ctx)
    state = be.state(h)
    for n in LAYERS:
        assert kit.weight(h, n).tobytes() == cast_weight(before[n], dtype).tobytes()
        assert state[f"{n}.weight.{dtype}"].dtype == np.uint16 and f"{n}.weight" not in state
        assert np.array_equal(state[f"{n}.weight.{dtype}"], half_bits(before[n], dtype))
        assert ctx.notes["quantized"][n] == {"bits": 16, "form": dtype}
    assert h.quant == {} and h.qstate.casts == {n: dtype for n in LAYERS}  # no codes: evaluation runs float32
    save_weights(tmp_path / "half.lwz", state)
    assert (tmp_path / "half.lwz").stat().st_size < 0.52 * (tmp_path / "float.lwz").stat().st_size
    # the file holds the 16 bits; unpacked by the core it is the cast model again
    plain = _lenet5(be)
    be.load_state(plain, unpack_state(load_weights(tmp_path / "half.lwz")[0])[0])
    assert all(kit.weight(plain, n).tobytes() == cast_weight(before[n], dtype).tobytes() for n in LAYERS)
    # loaded as a checkpoint the model remembers its cast layers: saved again, they stay 16-bit patterns
    back = be.load_model("lenet5", SHAPE, 10, checkpoint=tmp_path / "half.lwz")
    assert all(kit.weight(back, n).tobytes() == cast_weight(before[n], dtype).tobytes() for n in LAYERS)
    assert back.qstate.casts == {n: dtype for n in LAYERS}
    resaved = be.state(back)
    assert all(np.array_equal(resaved[f"{n}.weight.{dtype}"], state[f"{n}.weight.{dtype}"]) for n in LAYERS)
    be.load_state(back, float_state)  # a float state clears them
    assert back.qstate.casts == {}
    acc_half, _ = be.evaluate(h, ctx)
    assert 0 <= acc_half <= 1


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_quantize_int8_writes_the_file_whose_latency_it_reports_and_it_loads_back(backend, kit, mode, tmp_path):
    """The int8 file a quantize step writes is the one every latency of the model times, and a
    user loads it back with the runtime's own API: the same outputs, the note's accuracy."""
    be, data = backend, make_data(n_train=128, n_test=64)
    ctx = make_ctx(data, run_dir=tmp_path)
    h = be.apply(_lenet5(be), QuantizeSpec(dtype="int8", mode=mode, calibrate=64), LAYERS, ctx)
    art, engine = ctx.notes["int8_artifact"], kit.engine()
    path = tmp_path / art["file"]
    assert art["file"] == f"model-int8-step1.{engine.format}" and path.stat().st_size == art["size_bytes"]
    timed = engine.build(h).data  # the bytes be.latency_ms times (lwdsl.backend.engines.file_latency_ms)
    assert timed == path.read_bytes()
    got = kit.run_file(path, data.test_x)
    np.testing.assert_array_equal(got, engine.load(timed)(data.test_x)())
    assert float(np.mean(got.argmax(1) == data.test_y)) == art["accuracy"]
    assert art["codes_equal"] == art["codes_total"] > 0 and not ctx.extra["warnings"]
    alone = make_ctx(data)  # no run folder: nothing is written, and the note says so
    be.apply(_lenet5(be), QuantizeSpec(dtype="int8", mode=mode, calibrate=64), LAYERS, alone)
    assert alone.notes["int8_artifact"]["file"] is None


@pytest.mark.parametrize("dtype,engine", [("int4", False), ("cluster", False), ("int8", True)])
def test_latency_times_the_int8_file_only_for_int8_models(backend, dtype, engine, monkeypatch):
    """One rule on every backend (lwdsl.backend.engines.latency_ms): an int8 model is timed as
    its int8 file in its runtime; low-bit layers have no kernels of their own, so their model is
    timed as it runs, as fp32 is (a runtime's float timing beside a framework's would show a
    speed-up of runtimes)."""
    from lwdsl.backend import engines

    be = backend
    h = be.apply(_lenet5(be), QuantizeSpec(dtype=dtype), LAYERS, make_ctx(make_data(n_train=64, n_test=32)))
    called = []
    monkeypatch.setattr(engines, "file_latency_ms", lambda *a, **k: called.append(1) or 1.0)
    assert be.latency_ms(h, 1, SHAPE, 1) > 0 and bool(called) == engine


# ----------------------------------------------------------------------------- int8 (merged from
# test_torch_quantize.py and test_tf_quantize.py)


@pytest.mark.parametrize("model", ["lenet5", "lenet300"])
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_int8_codes_and_scales_are_the_cores_bit_for_bit_and_pruned_zeros_stay_code_0(backend, kit, granularity, model):
    be, data = backend, make_data(n_train=64, n_test=32)
    h = be.load_model(model, SHAPE, 10)
    names = [i.name for i in be.layers(h)]
    h = be.apply(h, PruneSpec(scope="global", method="l1", amount=0.5), names, make_ctx(data))
    before, float_state = kit.weights(h, names), be.state(h)
    ctx = make_ctx(data)
    h = be.apply(h, QuantizeSpec(dtype="int8", granularity=granularity, calibrate=64), names, ctx)
    after = be.state(h)
    floats, quant = unpack_state(after)
    assert set(h.quant) == set(names) and not ctx.extra["warnings"]
    for n in names:
        want = quantize_weight(before[n], 8, granularity)
        for got in (h.quant[n], quant[n]):  # on the handle and in the saved state
            assert got.codes.dtype == np.int8 and np.array_equal(got.codes, want.codes)
            assert got.scale.tobytes() == want.scale.tobytes()
        assert f"{n}.weight" not in after and np.array_equal(after[f"{n}.bias"], float_state[f"{n}.bias"])
        # the framework holds codes * scale exactly (the fixed point: re-quantizing finds the codes)
        w = kit.weight(h, n)
        assert w.tobytes() == want.dequantize().tobytes() == floats[f"{n}.weight"].tobytes()
        assert np.array_equal(quantize_weight(w, 8, granularity).codes, want.codes)
        assert (want.codes[before[n] == 0] == 0).all() and (want.codes[~kit.mask(h, n)] == 0).all()
        assert not np.signbit(w[before[n] == 0]).any()  # +0.0, never -0.0
    report = ctx.notes["int8_artifact"]
    assert report["codes_equal"] == report["codes_total"] == sum(before[n].size for n in names)


def _observed(kit, h, layers, x, observer):
    """Each layer's activation range on ``x`` as the core's observer sees it, in batches of 256
    (the model run on each batch as the step runs it: a conv's float32 sums may round otherwise
    on a batch of another size)."""
    obs = {n: RangeObserver(observer) for n in layers}
    for start in range(0, len(x), 256):
        seen = kit.layer_inputs(h, layers, x[start : start + 256])
        for n in layers:
            obs[n].update(seen[n])
    return {n: ob.range() for n, ob in obs.items()}


@pytest.mark.parametrize("observer", ["minmax", "percentile"])
def test_static_ranges_are_a_numpy_observer_on_the_calibration_images_and_too_many_warns(backend, kit, observer):
    be, data = backend, make_data(n_train=300, n_test=64)
    ctx = make_ctx(data, seed=3)
    h = be.apply(_lenet5(be), QuantizeSpec(dtype="int8", mode="static", calibrate=200, observer=observer), LAYERS, ctx)
    want = _observed(kit, h, LAYERS, data.train_x[calibration_indices(300, 200, 3)], observer)
    for n in LAYERS:
        lo, hi = want[n]
        assert ctx.notes["quantized"][n] == {"bits": 8, "form": "int8", "granularity": "per_channel", "mode": "static",
                                             "act_range": [lo, hi], "act_scale": h.act[n].scale,
                                             "act_zero_point": h.act[n].zero_point}
        assert h.act[n] == act_qparams(lo, hi)
    assert not ctx.extra["warnings"]
    # more calibration images than the training set: one warning, and all 300 are used
    many = make_ctx(data, seed=3)
    h = be.apply(_lenet5(be), QuantizeSpec(dtype="int8", mode="static", calibrate=1000, observer=observer), LAYERS, many)
    (said,) = many.extra["warnings"]
    assert "calibrate=1000" in said and "all 300" in said
    if observer == "minmax":  # order-free: the range over the whole training set
        want = _observed(kit, h, LAYERS, data.train_x, observer)
        assert all(many.notes["quantized"][n]["act_range"] == list(want[n]) for n in LAYERS)


@pytest.mark.parametrize("mode, finetune", [("qat", True), ("static", True), ("dynamic", True), ("qat", False)])
def test_int8_training_after_quantize_keeps_every_weight_on_the_grid_at_fixed_scales_and_the_masks(backend, kit, mode, finetune):
    be, data = backend, make_data(n_train=256, n_test=32)
    ctx = make_ctx(data)
    h = be.apply(_lenet5(be), PruneSpec(method="l1", amount=0.5), LAYERS, ctx)
    keep, start = kit.masks(h), kit.weights(h, LAYERS)
    codes0 = {n: quantize_weight(start[n]).codes for n in LAYERS}  # before training
    extra = {"epochs": 2} if mode == "qat" else {"calibrate": 64} if mode == "static" else {}
    h = be.apply(h, QuantizeSpec(dtype="int8", mode=mode, granularity="per_channel", **extra), LAYERS, ctx)
    scales = {n: h.quant[n].scale.copy() for n in LAYERS}
    assert all(scales[n].tobytes() == quantize_weight(start[n]).scale.tobytes() for n in LAYERS)
    if mode == "qat":
        assert len(h.losses) == 2 * 256 // 64  # batch 64
    if finetune:
        h = be.apply(h, FinetuneSpec(epochs=1, lr=0.05, batch=32), LAYERS, ctx)
        assert len(h.losses) == 256 // 32
    st = be.state(h)
    moved = 0
    for n in LAYERS:
        w, q = kit.weight(h, n), h.quant[n]
        assert q.scale.tobytes() == scales[n].tobytes() and st[f"{n}.weight.scale"].tobytes() == scales[n].tobytes()
        assert np.array_equal(q.codes, st[f"{n}.weight.codes"]) and np.array_equal(codes_with_scale(w, scales[n]), q.codes)
        assert w.tobytes() == snap(w, q.scale).tobytes() == q.dequantize().tobytes()
        assert (w[~keep[n]] == 0).all() and (q.codes[~keep[n]] == 0).all() and not np.signbit(w[~keep[n]]).any()
        assert (q.codes[start[n] == 0] == 0).all()
        moved += int((q.codes != codes0[n]).sum())
    assert moved > 0  # it trained


def test_a_layer_that_cannot_be_quantized_is_named(backend, kit):
    be, data = backend, make_data(shape=(1, 8, 8), n_train=64, n_test=32)
    h = kit.conv_norm_model(data.input_shape, data.num_classes)
    names = [i.name for i in be.layers(h)]
    assert names == ["conv", "norm", "fc"]
    ctx = make_ctx(data)
    h = be.apply(h, QuantizeSpec(dtype="int8", mode="dynamic"), names, ctx)
    assert set(h.quant) == {"conv", "fc"}
    (said,) = ctx.extra["warnings"]
    assert "norm (norm)" in said
    assert ctx.notes["float_layers"] == [{"layer": "norm", "kind": "norm", "why": "only conv and linear layers are quantized"}]


def test_auto_quantizes_each_layer_to_the_cores_choice_from_measured_sensitivity(backend, kit):
    from lwdsl.semantics.auto_bits import TRIAL_FORMS, choose_bits, kl_sensitivity, trial_weight

    be, data = backend, make_data(n_train=64, n_test=32)
    h = _lenet5(be)
    before = kit.weights(h, LAYERS)
    spec = QuantizeSpec(dtype="auto", budget=3, calibrate=48)
    # the sensitivity by hand: the model's logits on the calibration images, one layer quantized
    probe, twin, third = be.copy_model(h), be.copy_model(h), be.copy_model(h)
    x = data.train_x[calibration_indices(len(data.train_x), 48, 0)]
    reference = kit.logits(probe, x)
    sens = {}
    for n in LAYERS:
        sens[n] = {}
        for form in TRIAL_FORMS:
            kit.set_weight(probe, n, trial_weight(before[n], form))
            sens[n][form] = kl_sensitivity(reference, kit.logits(probe, x))
        kit.set_weight(probe, n, before[n])
    ctx = make_ctx(data)
    h = be.apply(h, spec, LAYERS, ctx)
    report = ctx.notes["auto_bits"]
    assert report["sensitivity"] == "kl" and report["calibration_images"] == 48
    got = {r["layer"]: {f: r["sensitivity"][f] for f in TRIAL_FORMS} for r in report["layers"]}
    assert got == sens
    want = {c.layer: c.form for c in choose_bits(before, 3, sensitivity=sens)}
    assert [r["form"] for r in report["layers"]] == [want[n] for n in LAYERS] and report["average_bits"] <= 3
    for n in LAYERS:
        if want[n] == "float":
            assert n not in h.quant and kit.weight(h, n).tobytes() == before[n].tobytes()
        else:
            assert np.array_equal(h.quant[n].codes, quantize_as(before[n], want[n]).codes)
            assert h.qstate.mode[n] == "weights_only"
    assert len(set(want.values())) > 1 and h.qstate.settings.mode == "weights_only"  # mixed precision at 3 bits
    assert any(b.description.startswith("auto: sensitivity on 48 images") for b in ctx.extra["bars"])
    again = make_ctx(data)  # same seed, same choice
    be.apply(twin, spec, LAYERS, again)
    assert again.notes["auto_bits"] == report
    # no training images: the weight-error fallback
    empty = Dataset("none", data.train_x[:0], data.train_y[:0], data.test_x, data.test_y, data.num_classes)
    alone = make_ctx(empty)
    be.apply(third, spec, LAYERS, alone)
    assert alone.notes["auto_bits"]["sensitivity"] == "weight_error"
    assert [r["form"] for r in alone.notes["auto_bits"]["layers"]] == [c.form for c in choose_bits(before, 3)]
