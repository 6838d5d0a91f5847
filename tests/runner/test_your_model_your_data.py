"""Issue 21's "done when", end to end on the command line, with files generated here from real
MNIST (never in the repository): a user's torch model file and state dict on a PNG class folder,
and a user's Keras model file on a ``.npz``, each running ``prune l1 50% | finetune epochs=1 |
quantize int8``; both reports name the model, the data, its classes and the device."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lwdsl.cli.app import app
from tests.data_files import mnist_u8, write_images

pytestmark = pytest.mark.slow  # each trains on real digits, about 20 s

RECIPE = "prune l1 50% | finetune epochs=1 | quantize int8\n"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

TORCH_MODEL = '''
import torch
from torch import nn


class Digits(nn.Module):
    """A user's own small CNN for 1 x 28 x 28 digits."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.fc1 = nn.Linear(16 * 5 * 5, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))
'''

KERAS_MODEL = '''
import keras


def build(input_shape, num_classes):
    """A user's Keras model factory (NHWC inside, as Keras has it)."""
    c, h, w = input_shape
    inp = keras.Input((h, w, c))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inp)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu", name="fc1")(x)
    return keras.Model(inp, keras.layers.Dense(num_classes, name="fc2")(x))
'''


@pytest.fixture
def work(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "r.lw").write_text(RECIPE)
    return tmp_path


def _run(*args: str) -> dict:
    result = CliRunner().invoke(app, ["run", "r.lw", *args, "--out", "out", "-q"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return json.loads(Path("out/report.json").read_text())


def _names_model_data_classes_device(report: dict, model: str, data: str, classes: list[str]) -> None:
    assert report["model"] == model and report["data"] == data
    assert report["data_source"]["classes"] == classes
    assert report["device"]["device"] == "cpu" or report["device"]["device"].startswith("cuda")
    assert report["device"]["model"] and report["device"]["precision"] == "fp32"
    assert [s["op"] for s in report["steps"]] == ["baseline", "prune", "finetune", "quantize"]
    md = Path("out/report.md").read_text()
    assert f"model `{model}`, data `{data}`" in md and f"Classes ({len(classes)}): " in md
    assert f"Device `{report['device']['device']}` ({report['device']['model']})" in md
    for layer in report["steps"][-1]["metrics"]["layers"]:  # half of every layer pruned, and it stayed so
        assert layer["sparsity"] >= 0.5 - 1e-9, layer


@pytest.mark.torch
def test_a_torch_model_file_and_state_dict_on_a_png_folder(work):
    torch = pytest.importorskip("torch")
    xtr, ytr, xte, yte = mnist_u8(400, 100)
    write_images(work / "digits" / "train", xtr, ytr, names=NAMES)
    write_images(work / "digits" / "test", xte, yte, names=NAMES)
    (work / "mynet.py").write_text(textwrap.dedent(TORCH_MODEL))
    ns: dict = {}
    exec(TORCH_MODEL, ns)
    torch.manual_seed(0)
    net = ns["Digits"]()
    x = (torch.from_numpy(xtr).float()[:, None] / 255 - 0.5) / 0.5  # the folder reader's default normalisation
    y = torch.from_numpy(np.array([sorted(NAMES).index(NAMES[d]) for d in ytr]))  # labels: class folders by name
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(8):  # the user's own training: their trained weights as a state dict
        for i in range(0, len(x), 50):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[i : i + 50]), y[i : i + 50]).backward()
            opt.step()
    torch.save(net.state_dict(), work / "digits.pt")

    report = _run("--model", "mynet.py:Digits", "--checkpoint", "digits.pt", "--data", "digits", "--device", "cpu")
    _names_model_data_classes_device(report, "mynet.py:Digits", "digits", sorted(NAMES))
    src = report["data_source"]
    assert src["source"] == "folder" and (src["train_images"], src["test_images"]) == (400, 100) and src["streamed"]
    assert report["steps"][0]["metrics"]["accuracy"] > 0.6  # the user's weights were loaded, not a fresh model
    assert report["summary"]["accuracy_after"] > 0.5
    lock = json.loads(Path("out/lwdsl.lock.json").read_text())
    assert lock["checkpoint"] and len(lock["model_sha256"]) == 64


@pytest.mark.tensorflow
def test_a_keras_model_file_on_an_npz(work):
    pytest.importorskip("tensorflow")
    xtr, ytr, xte, yte = mnist_u8(400, 100)
    import keras

    np.savez(work / "digits.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, classes=np.array(NAMES))
    (work / "kmodel.py").write_text(textwrap.dedent(KERAS_MODEL))
    ns: dict = {}
    exec(KERAS_MODEL, ns)
    keras.utils.set_random_seed(0)
    net = ns["build"]((1, 28, 28), 10)  # the user's own training, saved as a .keras file
    net.compile(optimizer=keras.optimizers.Adam(3e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit((xtr[..., None] / 255 - 0.5) / 0.5, ytr, batch_size=50, epochs=8, verbose=0)
    net.save(work / "digits.keras")

    report = _run("--backend", "tensorflow", "--model", "kmodel.py:build", "--checkpoint", "digits.keras", "--data", "digits.npz")
    _names_model_data_classes_device(report, "kmodel.py:build", "digits.npz", NAMES)
    src = report["data_source"]
    assert src["source"] == "npz" and src["layout"] and (src["train_images"], src["test_images"]) == (400, 100)
    assert report["steps"][0]["metrics"]["accuracy"] > 0.6  # the user's weights were loaded
    assert report["summary"]["accuracy_after"] > 0.5
