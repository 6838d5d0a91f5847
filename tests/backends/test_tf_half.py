"""``quantize fp16|bf16`` on the tensorflow backend: a real float16 ``.tflite`` (its 16 bits the
core's, accuracy in LiteRT close to Keras, half the bytes), bf16 refused for TFLite."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow

from lwdsl.backend import Dataset, StepContext, get_backend  # noqa: E402
from lwdsl.errors import LwdslError  # noqa: E402
from lwdsl.runner.progress import NullBar  # noqa: E402
from lwdsl.language.specs import ExportSpec, QuantizeSpec, TrainingOptions  # noqa: E402

pytestmark = pytest.mark.tensorflow

SHAPE = (1, 28, 28)
LAYERS = ["conv1", "conv2", "fc1", "fc2"]


def _ctx(data, **kw):
    warnings: list[str] = []
    ctx = StepContext(data, seed=0, index=1, progress=lambda total, what: NullBar(), warn=warnings.append, **kw)
    ctx.extra["warnings"] = warnings
    return ctx


@pytest.fixture(scope="module")
def trained(mnist):
    """lenet5 trained briefly on 3000 MNIST images (test: 2000 images)."""
    be = get_backend("tensorflow")
    data = Dataset("mnist-3k", mnist.train_x[:3000], mnist.train_y[:3000], mnist.test_x[:2000], mnist.test_y[:2000], 10)
    h = be.load_model("lenet5", SHAPE, 10)
    be.train(h, TrainingOptions(epochs=1, lr=1e-3, optimizer="adam", batch=64), _ctx(data))
    return be, h, data


@pytest.mark.slow
def test_tflite_fp16_is_half_the_bytes_holds_the_cores_bits_and_runs_close_to_keras(trained, tmp_path):
    from lwdsl.backends.tf_backend import tflite_engine
    from lwdsl.semantics.quant import half_bits

    be, base, data = trained
    ctx = _ctx(data, run_dir=tmp_path)
    be.apply(be.copy_model(base), ExportSpec(format="tflite", path="fp32.tflite"), [], ctx)
    h = be.apply(be.copy_model(base), QuantizeSpec(dtype="fp16"), LAYERS, ctx)
    keras_acc = be.evaluate(h, ctx)[0]
    be.apply(h, ExportSpec(format="tflite"), [], ctx)
    rep = ctx.notes["tflite"]["model.tflite"]
    assert rep["tflite_mode"] == "fp16"
    fp32, fp16 = (tmp_path / "fp32.tflite").stat().st_size, (tmp_path / "model.tflite").stat().st_size
    assert 0.45 * fp32 < fp16 < 0.55 * fp32, (fp16, fp32)
    # the file's float16 weights are the core's 16 bits of the cast kernels, every one
    agree = rep["half_agreement"]
    assert agree["equal"] == agree["total"] == sum(be.state(h)[f"{n}.weight.fp16"].size for n in LAYERS)
    info = tflite_engine.inspect_model((tmp_path / "model.tflite").read_bytes(), h)
    for n in LAYERS:
        assert info.halves[n].dtype == np.uint16
        assert np.array_equal(info.halves[n], half_bits(h.view_map()[n].weight.canonical(), "fp16"))
    assert abs(rep["accuracy"] - keras_acc) <= 0.002, (rep["accuracy"], keras_acc)
    art = ctx.notes["artifacts"][-1]
    assert art["path"] == "model.tflite" and art["runtime"] == "litert" and art["weights_dtype"] == "float16"
    assert art["codes_equal"] == art["codes_total"] and art["latency_ms_b1"] > 0 and art["size_bytes"] == fp16


def test_bf16_and_fp16_mixed_with_int8_are_refused_for_tflite():
    import lwdsl
    from lwdsl.errors import RecipeError
    from lwdsl.language.validate import check_backend

    with pytest.raises(RecipeError, match="bf16") as err:
        lwdsl.parse("quantize bf16 | export tflite")
    assert "quantize fp16" in str(err.value) and "export keras" in str(err.value.hint)
    check_backend(lwdsl.parse("quantize fp16 | export tflite"), "tensorflow")  # allowed
    with pytest.raises(RecipeError, match="float16 or integer"):
        lwdsl.parse("quantize int8 on conv | quantize fp16 on linear | export tflite")


def test_a_direct_bf16_conversion_is_refused_with_what_to_do(tmp_path):
    from lwdsl.backends.tf_backend import tflite_engine
    from lwdsl.data.builtin import load_data

    be = get_backend("tensorflow")
    data = load_data("synthetic:1,28,28:10")
    h = be.apply(be.load_model("lenet5", SHAPE, 10), QuantizeSpec(dtype="bf16"), LAYERS, _ctx(data))
    with pytest.raises(LwdslError, match="bfloat16 weights have no TFLite form") as err:
        tflite_engine.convert(h)
    assert "export keras" in str(err.value.hint)
