"""``lwdsl.run`` with a user's own model and data objects, on each backend."""

from __future__ import annotations

import numpy as np
import pytest

import lwdsl

RECIPE = "prune global l1 0.6 | finetune epochs=5 lr=0.05"


def _arrays(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    y = (x.reshape(n, -1)[:, :32].sum(1) > 0).astype(np.int64)
    return x, y


def _torch_objects():
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))
    loaders = [DataLoader(TensorDataset(*map(torch.from_numpy, _arrays(n, s))), batch_size=32) for n, s in ((512, 0), (256, 1))]
    return model, loaders


def _keras_objects():
    from lwdsl.backends.tf_backend import _tf  # noqa: F401  (Keras 3 on TensorFlow, Triton before TensorFlow)
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)]
    )
    sets = []
    for n, s in ((512, 0), (256, 1)):
        x, y = _arrays(n, s)
        sets.append(tf.data.Dataset.from_tensor_slices((np.moveaxis(x, 1, -1), y)).batch(32))
    return model, sets


@pytest.mark.parametrize("name", [pytest.param("torch", marks=pytest.mark.torch), pytest.param("tensorflow", marks=pytest.mark.tensorflow)])
def test_run_takes_the_users_model_and_data(name, tmp_path):
    if name not in __import__("tests.conftest", fromlist=["x"]).selected_backends():
        pytest.skip(f"{name} not selected")
    pytest.importorskip("torch" if name == "torch" else "tensorflow")
    model, (train, test) = _torch_objects() if name == "torch" else _keras_objects()
    before = [w.copy() for w in _weights(name, model)]
    result = lwdsl.run(RECIPE, model, backend=name, train=train, test=test, quiet=True, latency=False, out=tmp_path / "run")
    steps = result.report["steps"]
    assert [s["op"] for s in steps] == ["baseline", "prune", "finetune"]
    # 60% of the 64*32 + 32*2 weights pruned together, and still zero after fine-tuning
    zeros = sum(round(layer["weights"] * layer["sparsity"]) for layer in steps[-1]["metrics"]["layers"])
    assert zeros == round(0.6 * (64 * 32 + 32 * 2))
    assert steps[-1]["metrics"]["accuracy"] > 0.6
    # the user's own model object is not modified
    assert all((a == b).all() for a, b in zip(before, _weights(name, model)))
    assert (tmp_path / "run" / "report.json").exists()


def _weights(name, model):
    if name == "torch":
        return [p.detach().numpy().copy() for p in model.parameters()]
    return [w.copy() for w in model.get_weights()]
