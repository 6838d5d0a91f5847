"""Every way to get a model into the tensorflow backend. The zoo's sizes, shapes, initialisation and
name errors on every backend: tests/contract/test_models.py."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow
pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow
import keras  # noqa: E402

from lwdsl.backend import StepContext, get_backend  # noqa: E402
from lwdsl.data.builtin import load_data  # noqa: E402
from lwdsl.runner.progress import NullBar  # noqa: E402
from lwdsl.errors import LwdslError  # noqa: E402
from lwdsl.backend.weights import save_weights  # noqa: E402

SHAPE = (1, 28, 28)


CTX = StepContext(load_data("synthetic:1,28,28:10"), seed=0, index=0, progress=lambda total, what: NullBar())


@pytest.fixture(scope="module")
def be():
    return get_backend("tensorflow")


def test_keras_application_without_download(be):
    h = be.load_model("keras:MobileNetV2", (3, 32, 32), 7)
    assert h.model.output_shape == (None, 7)
    with pytest.raises(LwdslError, match="keras:MobileNetV9"):
        be.load_model("keras:MobileNetV9", (3, 32, 32), 7)


def test_user_model_is_cloned_not_modified(be):
    user = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, name="out")])
    before = [w.copy() for w in user.get_weights()]
    h = be.load_model(user, SHAPE, 10)
    from lwdsl.language.specs import PruneSpec

    h = be.apply(h, PruneSpec(method="l1", amount=0.5), ["out"], CTX)
    assert all(np.array_equal(a, b) for a, b in zip(before, user.get_weights()))
    assert be.stats(h).layers[0].sparsity == 0.5


def test_keras2_model_is_refused_with_how_to_move_it(be, tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    model = tf_keras.Sequential([tf_keras.Input((2, 2, 1)), tf_keras.layers.Flatten(), tf_keras.layers.Dense(2, name="fc")])
    assert be.is_model(model)
    with pytest.raises(LwdslError, match="Keras 2") as err:
        be.load_model(model, (1, 2, 2), 2)
    assert "import keras" in err.value.hint and "model.h5" in err.value.hint
    # the way out the hint gives: a Keras 2 .h5 file loads into Keras 3 with the same weights
    model.save(tmp_path / "k2.h5")
    h = be.load_model(str(tmp_path / "k2.h5"), (1, 2, 2), 2)
    assert isinstance(h.model, keras.Model)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), h.model.get_weights()))


def test_subclassed_model_is_refused(be):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(3)

        def call(self, x):
            return self.fc(keras.layers.Flatten()(x))

    net = Net()
    net(np.zeros((1, 2, 2, 1), np.float32))
    with pytest.raises(LwdslError, match="subclassed") as err:
        be.load_model(net, (1, 2, 2), 3)
    assert "functional" in err.value.hint


def test_keras_file_round_trip_and_lambda_h5_refused(be, tmp_path):
    h = be.load_model("seedcnn", SHAPE, 10)
    be.save_native(h, tmp_path / "m.keras")
    again = be.load_model(str(tmp_path / "m.keras"), SHAPE, 10)
    assert all(np.array_equal(a, b) for a, b in zip(h.model.get_weights(), again.model.get_weights()))
    inp = keras.Input((4,))
    lam = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2)(inp))
    lam.save(tmp_path / "lam.h5")
    with pytest.raises(LwdslError, match="Lambda"):
        be.load_model(str(tmp_path / "lam.h5"), (1, 2, 2), 4)
    lam.save(tmp_path / "lam.keras")  # Keras 3's own format: safe mode refuses the lambda's code
    with pytest.raises(LwdslError, match="lambda|Lambda"):
        be.load_model(str(tmp_path / "lam.keras"), (1, 2, 2), 4)


def test_checkpoints(be, tmp_path):
    h = be.load_model("lenet5", SHAPE, 10)
    save_weights(tmp_path / "w.lwz", be.state(h))
    loaded = be.load_model("lenet5", SHAPE, 10, tmp_path / "w.lwz")
    assert all(np.array_equal(a, b) for a, b in zip(h.model.get_weights(), loaded.model.get_weights()))
    (tmp_path / "w.pt").write_bytes(b"not really")
    with pytest.raises(LwdslError, match="cannot read checkpoint") as err:
        be.load_model("lenet5", SHAPE, 10, tmp_path / "w.pt")
    assert ".lwz" in err.value.hint
    wrong = be.state(be.load_model("seedcnn", SHAPE, 10))
    save_weights(tmp_path / "wrong.lwz", wrong)
    with pytest.raises(LwdslError, match="fc3.weight|fc1.weight|conv1.weight"):
        be.load_model("lenet300", SHAPE, 10, tmp_path / "wrong.lwz")


def test_narrower_state_rebuilds_the_model(be, tmp_path):
    from lwdsl.language.specs import PruneSpec

    h = be.load_model("lenet5", SHAPE, 10)
    h = be.apply(h, PruneSpec(method="l1", amount=0.5, structured="filters", remove=True), ["conv1", "fc1"], CTX)
    save_weights(tmp_path / "small.lwz", be.state(h))
    loaded = be.load_model("lenet5", SHAPE, 10, tmp_path / "small.lwz")
    assert [i.shape for i in be.layers(loaded)] == [(10, 1, 5, 5), (50, 10, 5, 5), (250, 800), (10, 250)]
    x = np.random.default_rng(0).standard_normal((2, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.model(x).numpy(), h.model(x).numpy(), atol=1e-6)


def test_dropout_follows_the_run_seed(be):
    def seeds(seed):
        be.set_seed(seed)
        h = be.load_model("mlp1200", SHAPE, 10)
        return [layer.seed_generator.state.numpy().tolist() for layer in h.model.layers if type(layer).__name__ == "Dropout"]

    first = seeds(3)
    assert len(first) == 3 and seeds(3) == first and seeds(4) != first


def test_pretrained_keras_application_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    from lwdsl.backends.tf_backend.models import build_model
    from lwdsl.errors import UsageError

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(file_utils, "get_file", lambda *a, **k: (_ for _ in ()).throw(Exception("URL fetch failure: no network")))
    with pytest.raises(UsageError, match=r"keras:MobileNetV2\?weights=imagenet: the pretrained weights could not be downloaded") as err:
        build_model("keras:MobileNetV2?weights=imagenet", (3, 32, 32), 10)
    assert str(tmp_path) in err.value.hint
    with pytest.raises(UsageError, match=r"\?weights=NAME"):
        build_model("keras:MobileNetV2?pretrained=1", (3, 32, 32), 10)


def test_pretrained_keras_application_weights_load_with_a_new_head_for_the_datas_classes(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    from lwdsl.backends.tf_backend._tf import keras
    from lwdsl.backends.tf_backend.models import build_model

    reference = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3), pooling="avg")
    path = tmp_path / "mobilenet_v2_no_top.weights.h5"  # stands for the downloaded file
    reference.save_weights(path)
    monkeypatch.setattr(file_utils, "get_file", lambda *a, **k: str(path))
    model = build_model("keras:MobileNetV2?weights=imagenet", (3, 32, 32), 10)
    first = next(layer for layer in model.layers if layer.weights)
    assert np.array_equal(first.weights[0].numpy(), reference.get_layer(first.name).weights[0].numpy())
    assert model.output_shape == (None, 10) and model.layers[-1].name == "predictions"
