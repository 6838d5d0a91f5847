"""The model zoo on every backend: sizes, canonical layer shapes, initialisation and the errors
of a wrong name or input (merged from test_torch_models.py and test_tf_models.py; torchvision,
Keras applications and user models stay there)."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.errors import LwdslError

SHAPE = (1, 28, 28)


@pytest.mark.parametrize(
    "ref, params, layers",
    [
        ("lenet300", 266_610, ["fc1", "fc2", "fc3"]),
        ("lenet5", 431_080, ["conv1", "conv2", "fc1", "fc2"]),
        ("seedcnn", 21_840, ["conv1", "conv2", "fc1", "fc2"]),
        ("seedcnn_student", 5_951, ["conv1", "conv2", "fc1", "fc2"]),
    ],
)
def test_zoo_param_counts_and_names(backend, kit, ref, params, layers):
    be = backend
    h = be.load_model(ref, SHAPE, 10)
    assert be.stats(h).params == params == sum(i.params for i in be.layers(h))
    assert sum(v.size for k, v in be.state(h).items() if "running_" not in k) == params
    assert [i.name for i in be.layers(h)] == layers
    assert kit.logits(h, np.zeros((3, *SHAPE), np.float32)).shape == (3, 10)


def test_layer_shapes_are_canonical_and_flatten_fits_the_input(backend, kit):
    be = backend
    info = {i.name: i for i in be.layers(be.load_model("lenet5", SHAPE, 10))}
    assert info["conv1"].shape == (20, 1, 5, 5) and info["conv1"].kind == "conv"
    assert info["fc1"].shape == (500, 800) and info["fc1"].kind == "linear"  # 50 * 4 * 4, not 16*5*5
    student = {i.name: i for i in be.layers(be.load_model("seedcnn_student", SHAPE, 10))}
    assert student["fc1"].shape == (25, 160)
    other = be.load_model("lenet5", (3, 32, 32), 7)
    assert kit.logits(other, np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 7)
    assert {i.name: i.shape for i in be.layers(other)}["fc1"] == (500, 50 * 5 * 5)


def test_zoo_init_repeats_for_a_seed_and_is_torch_scaled(backend):
    be = backend
    states = []
    for _ in range(2):
        be.set_seed(1)
        states.append(be.state(be.load_model("lenet5", SHAPE, 10)))
    assert all(np.array_equal(states[0][k], states[1][k]) for k in states[0])
    bound = 1 / np.sqrt(800)  # torch.nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    w = np.abs(states[0]["fc1.weight"])
    assert 0.9 * bound < w.max() <= bound


def test_zoo_init_follows_the_seed(backend):
    """The run's seed decides a built-in model's first weights on every backend: another seed,
    other weights; the same seed, the same weights."""
    be = backend
    states = []
    for seed in (1, 2, 1):
        be.set_seed(seed)
        states.append(be.state(be.load_model("seedcnn", SHAPE, 10)))
    assert not np.array_equal(states[0]["fc1.weight"], states[1]["fc1.weight"])
    assert all(np.array_equal(states[0][k], states[2][k]) for k in states[0])
    be.set_seed(0)


@pytest.mark.parametrize("name", ["lenet", "lenet6"])
def test_an_unknown_name_suggests_the_nearest(backend, backend_name, name):
    with pytest.raises(LwdslError, match=f"unknown model '{name}' on the {backend_name} backend") as err:
        backend.load_model(name, SHAPE, 10)
    assert "lenet5" in err.value.message and "did you mean 'lenet5'?" in (err.value.hint or "")


def test_an_input_smaller_than_the_model_is_an_error(backend):
    with pytest.raises(LwdslError, match=r"model 'lenet5' does not fit inputs of shape \(1, 8, 8\)") as err:
        backend.load_model("lenet5", (1, 8, 8), 10)
    assert "receptive field" in (err.value.hint or "")
