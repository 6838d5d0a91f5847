"""``quantize`` on the tensorflow backend: codes from lwdsl.semantics.quant on Keras kernels, TFLite in
LiteRT. What every backend does is in tests/contract/test_quantize.py."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow
pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow
import keras  # noqa: E402

from lwdsl.backend import Dataset, StepContext, get_backend  # noqa: E402
from lwdsl.data.builtin import load_data  # noqa: E402
from lwdsl.errors import LwdslError  # noqa: E402
from lwdsl.runner.progress import NullBar  # noqa: E402
from lwdsl.semantics.quant import codes_with_scale, fake_quantize, quantize_weight  # noqa: E402
from lwdsl.language.specs import ExportSpec, FinetuneSpec, QuantizeSpec, TrainingOptions  # noqa: E402

SHAPE = (1, 28, 28)
LAYERS = ["conv1", "conv2", "fc1", "fc2"]
DATA = load_data("synthetic:1,28,28:10")


def _ctx(data=DATA, **kw):
    warnings: list[str] = []
    ctx = StepContext(data, seed=0, index=2, progress=lambda total, what: NullBar(), warn=warnings.append, **kw)
    ctx.extra["warnings"] = warnings
    return ctx


@pytest.fixture
def be():
    return get_backend("tensorflow")


def _weights(state, name):
    return state[f"{name}.weight"]


def test_evaluation_fake_quantizes_each_static_layer_input_as_the_core():
    """The Keras forward of a static int8 model (quantized_forward) fake-quantizes each layer's
    input with the core's fake_quantize (the ranges themselves: tests/contract/test_quantize.py)."""
    be = get_backend("tensorflow")
    h = be.load_model("lenet5", SHAPE, 10)
    ctx = _ctx()
    h = be.apply(h, QuantizeSpec(dtype="int8", mode="static", calibrate=200), LAYERS, ctx)
    m = h.model
    # evaluation fake-quantizes each quantized layer's input exactly as the core does
    from lwdsl.backends.tf_backend.quantize import quantized_forward

    fwd = quantized_forward(h)
    xt = np.moveaxis(DATA.test_x[:64], 1, -1)
    for n in ("conv2", "fc1"):
        wrapped = fwd.get_layer(f"{n}_fq")
        seen, out = keras.Model(fwd.inputs, [wrapped.input, wrapped.output]).predict(xt, batch_size=64, verbose=0)
        assert np.array_equal(wrapped.fake(seen).numpy(), fake_quantize(seen, h.act[n]))
        assert np.allclose(out, m.get_layer(n)(fake_quantize(seen, h.act[n])).numpy(), rtol=1e-5, atol=1e-5)
    assert be.evaluate(h, ctx) != be.evaluate(type(h)(h.model), ctx)


def test_group_codes_are_the_cores_and_their_scales_stay_fixed_while_fine_tuning(be):
    """``quantize int4 group=32 | finetune`` on lenet300: a Dense kernel is ``[in, out]``, the core
    quantizes its canonical ``[out, in]`` rows in groups of 32 inputs (fc1's 784 inputs end in a
    partial group); training snaps every weight to its group's fixed scale, and the state
    (codes, scales, group) loads back."""
    from lwdsl.semantics.codes import group_count

    data = Dataset("s", DATA.train_x[:256], DATA.train_y[:256], DATA.test_x[:64], DATA.test_y[:64], 10)
    ctx = _ctx(data)
    h = be.load_model("lenet300", SHAPE, 10)
    linear = [i.name for i in be.layers(h) if i.kind == "linear"]
    before = be.state(h)
    h = be.apply(h, QuantizeSpec(dtype="int4", group=32), linear, ctx)
    codes0 = {}
    for n in linear:
        w = _weights(before, n)
        want, q = quantize_weight(w, 4, group=32), h.quant[n]
        assert q.group == 32 and q.scale.shape == (w.shape[0], group_count(w.shape[1], 32))
        assert np.array_equal(q.codes, want.codes) and np.array_equal(q.scale.view(np.uint32), want.scale.view(np.uint32))
        assert ctx.notes["quantized"][n]["group"] == 32
        codes0[n] = q.codes.copy()
    scales = {n: h.quant[n].scale.copy() for n in linear}
    h = be.apply(h, FinetuneSpec(epochs=1, lr=0.05, batch=32), linear, ctx)
    st, plain = be.state(h), be.state(type(h)(h.model))
    moved = 0
    for n in linear:
        q, w = h.quant[n], plain[f"{n}.weight"]
        assert np.array_equal(q.scale, scales[n]) and np.array_equal(st[f"{n}.weight.scale"], scales[n])  # fixed
        assert np.array_equal(w, q.dequantize())  # on the grid of each group's scale
        assert np.array_equal(q.codes, codes_with_scale(w, q.full_scale(), 4))
        moved += int(np.count_nonzero(q.codes != codes0[n]))
    assert moved > 0  # the master copies moved some codes
    fresh = be.load_model("lenet300", SHAPE, 10)
    be.load_state(fresh, st)
    assert fresh.quant["fc1"].group == 32 and np.array_equal(be.state(type(fresh)(fresh.model))["fc1.weight"], plain["fc1.weight"])


def test_a_separable_conv_cannot_be_quantized_and_is_named(be):
    """Keras only: a SeparableConv2D holds two kernels in one layer (the norm case: tests/contract)."""
    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, name="c1")(inp)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)  # quantized like a conv (one scale per channel)
    x = keras.layers.SeparableConv2D(4, 3, name="sep")(x)  # two kernels in one layer: not quantized
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, name="d")(x)
    h = be.load_model(keras.Model(inp, out), SHAPE, 10)
    names = [i.name for i in be.layers(h) if i.kind in ("conv", "linear")]
    assert names == ["c1", "dw", "sep", "d"]
    before = be.state(h)
    ctx = _ctx()
    h = be.apply(h, QuantizeSpec(dtype="int8", mode="dynamic"), names, ctx)
    assert set(h.quant) == {"c1", "dw", "d"}
    assert [f["layer"] for f in ctx.notes["float_layers"]] == ["sep"]
    assert any("sep (conv)" in w and "float32" in w for w in ctx.extra["warnings"])
    assert np.array_equal(be.state(h)["sep.weight"], before["sep.weight"])


# -- TFLite in LiteRT, on real MNIST -----------------------------------------------------------


@pytest.fixture(scope="module")
def trained(mnist):
    """lenet5 trained briefly on 3000 MNIST images (test: 2000 images)."""
    be = get_backend("tensorflow")
    data = Dataset("mnist-3k", mnist.train_x[:3000], mnist.train_y[:3000], mnist.test_x[:2000], mnist.test_y[:2000], 10)
    h = be.load_model("lenet5", SHAPE, 10)
    be.train(h, TrainingOptions(epochs=1, lr=1e-3, optimizer="adam", batch=64), _ctx(data))
    return be, h, data


@pytest.mark.slow
def test_tflite_int8_runs_in_litert_close_to_keras_with_the_canonical_codes(trained, tmp_path):
    be, base, data = trained
    ctx = _ctx(data, run_dir=tmp_path)
    h = be.apply(be.copy_model(base), QuantizeSpec(dtype="int8", mode="static", calibrate=256), LAYERS, ctx)
    keras_acc = be.evaluate(h, ctx)[0]
    be.apply(h, ExportSpec(format="tflite"), [], ctx)
    rep = ctx.notes["tflite"]["model.tflite"]
    assert rep["tflite_mode"] == "int8" and rep["float_layers"] == []
    assert {o["layer"]: o["inputs"][:2] for o in rep["ops"]} == {n: ["int8", "int8"] for n in LAYERS}
    assert abs(rep["accuracy"] - keras_acc) <= 0.005, (rep["accuracy"], keras_acc)
    assert keras_acc > 0.85
    agree = rep["code_agreement"]
    assert agree["equal"] == agree["total"] == sum(int(np.prod(h.quant[n].codes.shape)) for n in LAYERS)
    assert rep["size_bytes"] == (tmp_path / "model.tflite").stat().st_size < 0.3 * 4 * 431080
    # the step's artifact entry (the report's "Artifacts" row): measured in LiteRT
    (art,) = ctx.notes["artifacts"]
    assert art["path"] == "model.tflite" and art["runtime"] == "litert" and art["size_bytes"] == rep["size_bytes"]
    assert art["int8_ops"] == 4 and art["float_ops"] == 0 and art["accuracy"] == rep["accuracy"]
    assert art["ops"]["CONV_2D (int8 x int8)"] == 2 and art["ops"]["FULLY_CONNECTED (int8 x int8)"] == 2
    assert art["latency_ms_b1"] > 0 and art["latency_ms_b32"] > art["latency_ms_b1"]
    # after quantize the backend times the .tflite artifact: the same file, unchanged model
    from lwdsl.backends.tf_backend import tflite_engine

    assert tflite_engine.artifact(h)[0] == (tmp_path / "model.tflite").read_bytes()
    assert be.latency_ms(h, 1, SHAPE, 1) > 0


@pytest.mark.slow
def test_tflite_int8_io_takes_and_gives_int8(trained, tmp_path):
    be, base, data = trained
    ctx = _ctx(data, run_dir=tmp_path)
    h = be.apply(be.copy_model(base), QuantizeSpec(dtype="int8", mode="static", calibrate=256), LAYERS, ctx)
    be.apply(h, ExportSpec(format="tflite", io="int8"), [], ctx)
    from lwdsl.backends.tf_backend import tflite_engine

    it = tflite_engine.interpreter((tmp_path / "model.tflite").read_bytes())
    assert it.get_input_details()[0]["dtype"] == np.int8 and it.get_output_details()[0]["dtype"] == np.int8
    rep = ctx.notes["tflite"]["model.tflite"]
    assert abs(rep["accuracy"] - be.evaluate(h, ctx)[0]) <= 0.005


def test_tflite_int8_io_refused_for_a_model_with_float_activations(trained, tmp_path):
    be, base, data = trained
    ctx = _ctx(data, run_dir=tmp_path)
    h = be.apply(be.copy_model(base), QuantizeSpec(dtype="int8", mode="dynamic"), LAYERS, ctx)
    with pytest.raises(LwdslError, match="io=int8 needs a fully integer model"):
        be.apply(h, ExportSpec(format="tflite", io="int8"), [], ctx)
    assert not (tmp_path / "model.tflite").exists()


@pytest.mark.slow
def test_tflite_dynamic_range_names_the_layers_left_float(trained, tmp_path):
    be, base, data = trained
    ctx = _ctx(data, run_dir=tmp_path)
    h = be.apply(be.copy_model(base), QuantizeSpec(dtype="int8", mode="dynamic"), LAYERS, ctx)
    be.apply(h, ExportSpec(format="tflite"), [], ctx)
    rep = ctx.notes["tflite"]["model.tflite"]
    assert rep["tflite_mode"] == "dynamic-range"
    assert rep["float_layers"] == ["conv1"]  # 500 weights: under the converter's 1024
    assert any("'conv1'" in w for w in ctx.extra["warnings"])
    assert rep["code_agreement"]["equal"] == rep["code_agreement"]["total"] == 430000
    assert abs(rep["accuracy"] - be.evaluate(h, ctx)[0]) <= 0.005


def test_tflite_after_int8_gptq_says_which_codes_the_converter_moved(be, tmp_path):
    """``quantize int8 method=gptq``: GPTQ's codes at round-to-nearest's scales need not reach
    +-127 in a row, so the converter's own max|w| / 127 moves them; the export counts them and
    says why (the .lwz keeps lwdsl's codes)."""
    data = Dataset("s", DATA.train_x[:256], DATA.train_y[:256], DATA.test_x[:64], DATA.test_y[:64], 10)
    ctx = _ctx(data, run_dir=tmp_path)
    h = be.apply(be.load_model("lenet300", SHAPE, 10), QuantizeSpec(dtype="int8", method="gptq", calibrate=64),
                 ["fc1", "fc2", "fc3"], ctx)
    assert ctx.notes["calibration"]["examples"] == 64 and set(ctx.notes["layer_output_error"]) == {"fc1", "fc2", "fc3"}
    be.apply(h, ExportSpec(format="tflite"), [], ctx)
    agree = ctx.notes["tflite"]["model.tflite"]["code_agreement"]
    assert 0 < agree["total"] - agree["equal"] < agree["total"] // 10
    assert any("method=gptq's codes" in w for w in ctx.extra["warnings"])


# ----------------------------------------------------------------------------- low-bit forms

LOW_BIT = ["int4", "int2", "ternary", "binary"]


@pytest.mark.parametrize("dtype", ["int4", "binary"])
def test_export_tflite_after_low_bit_is_refused_before_a_run(dtype):
    import lwdsl
    from lwdsl.errors import RecipeError
    from lwdsl.language.validate import check_backend

    with pytest.raises(RecipeError, match=f"cannot hold {dtype} weights") as err:
        check_backend(lwdsl.parse(f"quantize {dtype} | export tflite"), "tensorflow")
    assert "export keras" in str(err.value)
    check_backend(lwdsl.parse(f"quantize {dtype} mode=qat epochs=2 | export keras"), "tensorflow")


def test_fold_with_an_unnamed_input_keeps_every_weight_and_code(be):
    """Keras 3's clone names an unnamed input after its tensor (keras.applications models): the
    folded clone gets every weight from the original all the same, and the TFLite codes match."""
    from lwdsl.backends.tf_backend import tflite_engine

    inp = keras.Input((28, 28, 1))  # no name
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(keras.layers.Conv2D(4, 3, name="c2")(keras.layers.ReLU()(x)))
    out = keras.layers.Dense(10, name="d")(keras.layers.Flatten()(x))
    from lwdsl.backends.tf_backend.handle import KerasHandle

    h = KerasHandle(keras.Model(inp, out))  # as keras:NAME builds it (load_model would clone a user's model first)
    bias = h.model.get_layer("d").get_weights()[1]
    h = be.apply(h, QuantizeSpec(dtype="int8", mode="static", calibrate=16), ["c1", "c2", "d"], _ctx())
    assert h.folded == {"c1": "bn"}
    np.testing.assert_array_equal(h.model.get_layer("d").get_weights()[1], bias)  # copied over, not re-initialised
    data, _ = tflite_engine.convert(h)
    report = tflite_engine.inspect_model(data, h)
    assert set(report.codes) == {"c1", "c2", "d"}
    assert all(np.array_equal(report.codes[k], h.quant[k].codes) for k in report.codes)
