"""KerasBackend's measurements, files, exports, data adoption and quiet import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow
pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow

from lwdsl.backend import StepContext, get_backend  # noqa: E402
from lwdsl.data.builtin import load_data  # noqa: E402
from lwdsl.runner.progress import NullBar  # noqa: E402
from lwdsl.language.specs import DistillSpec, ExportSpec, PruneSpec, QuantizeSpec  # noqa: E402

SHAPE = (1, 28, 28)
DATA = load_data("synthetic:1,28,28:10")


class _Bars:
    def __init__(self):
        self.opened, self.updates = [], 0

    def __call__(self, total, description):
        self.opened.append((total, description))
        bars = self

        class Bar(NullBar):
            def update(self, n=1):
                bars.updates += n

        return Bar()


@pytest.fixture(scope="module")
def be():
    return get_backend("tensorflow")


def test_identity(be):
    assert (be.name, be.extra, be.native_suffix) == ("tensorflow", "tensorflow", ".keras")
    assert {"tensorflow", "keras"} <= set(be.versions())


def test_evaluate_matches_numpy_and_reports_progress(be):
    h = be.load_model("seedcnn", SHAPE, 10)
    bars = _Bars()
    acc, loss = be.evaluate(h, StepContext(DATA, 0, 0, bars))
    logits = h.model.predict(DATA.test_x.transpose(0, 2, 3, 1), verbose=0).astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    assert acc == np.mean(logits.argmax(1) == DATA.test_y)
    assert loss == pytest.approx(-logp[np.arange(len(logp)), DATA.test_y].mean(), rel=1e-5)
    assert bars.opened == [(1, "evaluate")] and bars.updates == 1


def test_stats_count_parameters_and_zeros(be):
    h = be.load_model("lenet300", SHAPE, 10)
    h = be.apply(h, PruneSpec(method="l1", amount=0.25), ["fc2"], StepContext(DATA, 0, 0, _Bars()))
    stats = be.stats(h)
    assert stats.params == 266_610 and stats.nonzero_params == 266_610 - 7_500
    assert [(s.name, s.zeros) for s in stats.layers] == [("fc1", 0), ("fc2", 7_500), ("fc3", 0)]


def test_latency_here_and_in_a_worker(be):
    import os

    h = be.load_model("lenet5", SHAPE, 10)
    here = be.latency_ms(h, 1, SHAPE, os.cpu_count() or 1)  # the runtime's own thread count
    other = be.latency_ms(h, 4, SHAPE, 1 if (os.cpu_count() or 1) > 1 else 2)  # needs the worker
    assert 0 < here < 1000 and 0 < other < 1000


def test_unsupported_says_why(be):
    assert be.unsupported(QuantizeSpec(dtype="auto", budget=4)) is None
    assert be.unsupported(DistillSpec()) is None
    assert be.unsupported(ExportSpec(format="torch")) == "the tensorflow backend cannot export torch"
    assert be.unsupported(ExportSpec(format="tflite")) is None
    assert be.unsupported(PruneSpec(method="l1", amount=0.2)) is None


@pytest.mark.parametrize("fmt,name", [("keras", "m.keras"), ("tflite", "m.tflite"), ("saved_model", "m_saved")])
def test_export(be, tmp_path, fmt, name):
    h = be.load_model("seedcnn_student", SHAPE, 10)
    ctx = StepContext(DATA, 0, 0, _Bars(), run_dir=tmp_path)
    be.apply(h, ExportSpec(format=fmt, path=name), ["conv1"], ctx)
    assert (tmp_path / name).exists()
    if fmt == "tflite":
        assert (tmp_path / name).read_bytes()[4:8] == b"TFL3"


@pytest.mark.parametrize("fmt", ["keras", "saved_model"])
def test_float_only_exports_say_which_layers_keep_quantized_or_cast_values_in_float32(be, tmp_path, fmt):
    said: list[str] = []
    h = be.load_model("lenet5", SHAPE, 10)
    h = be.apply(h, QuantizeSpec(dtype="int4"), ["fc1"], StepContext(DATA, 0, 0, _Bars()))
    h = be.apply(h, QuantizeSpec(dtype="fp16"), ["fc2"], StepContext(DATA, 1, 0, _Bars()))
    ctx = StepContext(DATA, 2, 0, _Bars(), run_dir=tmp_path, warn=said.append)
    be.apply(h, ExportSpec(format=fmt, path="out"), ["conv1"], ctx)
    assert len(said) == 1 and f"export {fmt}:" in said[0]
    assert "quantized layer(s) (fc1)" in said[0] and "cast layer(s) (fc2: fp16)" in said[0] and "model.lwz" in said[0]
    plain: list[str] = []
    be.apply(be.load_model("lenet5", SHAPE, 10), ExportSpec(format=fmt, path="plain"), ["conv1"],
             StepContext(DATA, 0, 0, _Bars(), run_dir=tmp_path, warn=plain.append))
    assert plain == []


def test_adopt_tf_data(be):
    import tensorflow as tf

    x = np.random.default_rng(0).standard_normal((10, 28, 28, 1)).astype(np.float32)
    y = np.arange(10) % 3
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    data = be.adopt_data(ds.batch(4), ds)
    assert data.train_x.shape == (10, 1, 28, 28) and data.num_classes == 3
    np.testing.assert_array_equal(data.train_x[:, 0], x[..., 0])


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env={**os.environ, **env})


def test_import_is_quiet_and_uses_keras3():
    code = (
        "import os; from lwdsl.backend import get_backend; be = get_backend('tensorflow'); "
        "import keras; h = be.load_model('lenet5', (1, 28, 28), 10); "
        "print(keras.__version__.split('.')[0], keras.backend.backend(), isinstance(h.model, keras.Model), "
        "os.environ.get('TF_USE_LEGACY_KERAS'), 'matplotlib' in __import__('sys').modules); "
        "from keras.src.visualization import plot_image_gallery as g; print(callable(g.plt.figure))"
    )
    out = _python(code)
    # matplotlib (which Keras imports for keras.visualization) is deferred to its first use (_tf.py)
    assert out.returncode == 0 and out.stdout.split() == ["3", "tensorflow", "True", "None", "False", "True"], out.stderr
    assert out.stderr == ""


def test_legacy_keras_variable_does_not_change_the_backend():
    """TF_USE_LEGACY_KERAS=1 (a Keras 2 user's setting) changes tf.keras, not lwdsl's Keras 3."""
    code = (
        "from lwdsl.backend import get_backend; be = get_backend('tensorflow'); import keras; "
        "h = be.load_model('lenet5', (1, 28, 28), 10); print(type(h.model).__module__.split('.')[0])"
    )
    out = _python(code, TF_USE_LEGACY_KERAS="1")
    assert out.returncode == 0 and out.stdout.strip() == "keras", out.stderr


def test_keras_on_another_backend_is_refused():
    code = "from lwdsl.backend import get_backend; get_backend('tensorflow').load_model('lenet5', (1, 28, 28), 10)"
    out = _python(code, KERAS_BACKEND="torch")
    assert out.returncode != 0 and "Keras is configured for the 'torch' backend" in out.stderr


def test_tflite_and_saved_model_exports_print_nothing(be, tmp_path, capsys):
    """Keras 3's model.export (also inside the TFLite converter) prints its endpoints: not here."""
    from lwdsl.backends.tf_backend import tflite_engine

    h = be.load_model("lenet300", SHAPE, 10)
    capsys.readouterr()
    tflite_engine.convert(h)
    be.apply(h, ExportSpec(format="saved_model", path="sm"), [], StepContext(DATA, 0, 0, _Bars(), run_dir=tmp_path))
    assert capsys.readouterr().out == ""


def test_tflite_ops_map_to_their_layers_by_name():
    """Keras 3 traces the model again for the converter: scopes carry a _N suffix."""
    from lwdsl.backend.tflite_report import layer_of as _layer_of

    assert _layer_of("resnet8_1/layer2.down_1/convolution", ["layer2.conv1", "layer2.down"]) == "layer2.down"
    assert _layer_of("lenet5_1/fc1_1/MatMul;lenet5_1/fc1_1/Relu", ["fc1", "fc2"]) == "fc1"
    assert _layer_of("m_1/conv2d_1_1/convolution", ["conv2d", "conv2d_1"]) == "conv2d_1"
    assert _layer_of("m_1/conv2d_1/convolution", ["conv2d", "conv2d_1"]) is None  # ambiguous: model order decides


def test_a_narrower_state_rebuilds_the_model_and_a_wider_one_is_refused(be):
    """The core's one rule (lwdsl/backend/load.py ``narrowed``): a state whose filters were
    removed rebuilds the model at its widths, the resized layers' masks dropped; a wider one is
    refused by name, as on torch."""
    from lwdsl.errors import UsageError

    handle = be.load_model("lenet5", SHAPE, 10)
    state = be.state(handle)
    be.set_masks(handle, {k: np.ones(state[f"{k}.weight"].shape, bool) for k in ("conv2", "fc2")})
    narrow = dict(state, **{"conv1.weight": state["conv1.weight"][:4], "conv1.bias": state["conv1.bias"][:4],
                           "conv2.weight": state["conv2.weight"][:, :4]})
    be.load_state(handle, narrow)
    assert be.state(handle)["conv2.weight"].shape == (state["conv2.weight"].shape[0], 4, 5, 5)
    assert set(be.masks_of(handle)) == {"fc2"}  # conv2 was resized: its mask dropped
    wide = dict(state, **{"conv1.weight": np.zeros((32, 1, 5, 5), np.float32), "conv1.bias": np.zeros(32, np.float32)})
    with pytest.raises(UsageError, match=r"'conv1.weight' has shape \[32, 1, 5, 5\] in the checkpoint but \[20, 1, 5, 5\]"):
        be.load_state(be.load_model("lenet5", SHAPE, 10), wide)
