"""Your own model: --model path/to/file.py:NAME and package.module:NAME (lwdsl/usermodel.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lwdsl
from lwdsl.errors import UsageError

RUN = dict(data="synthetic:1,8,8:3", quiet=True, latency=False, baseline_epochs=1)

TORCH_FILE = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        c, h, w = input_shape
        self.fc1 = nn.Linear(c * h * w, 16)
        self.fc2 = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))

def small():
    return Net((1, 8, 8), 3)

built = Net((1, 8, 8), 3)

def needs_width(width):
    return Net((1, 8, 8), width)

def broken():
    raise ValueError("no GPU here")

not_a_model = 42
'''


def _file(tmp_path: Path, text: str = TORCH_FILE, name: str = "mynet.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.torch
@pytest.mark.parametrize("name", ["Net", "small", "built"])
def test_a_class_a_factory_or_an_object_from_a_file_is_compressed(tmp_path, name):
    pytest.importorskip("torch")
    ref = f"{_file(tmp_path)}:{name}"
    result = lwdsl.run("prune l1 0.5", ref, backend="torch", out=tmp_path / "run", **RUN)
    assert result.report["model"] == ref
    assert [layer["name"] for layer in result.report["steps"][-1]["metrics"]["layers"]] == ["fc1", "fc2"]
    lock = json.loads((tmp_path / "run" / "lwdsl.lock.json").read_text())
    assert len(lock["model_sha256"]) == 64


@pytest.mark.torch
def test_a_module_path_is_imported(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    _file(pkg, name="models.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = lwdsl.run("prune l1 0.5", "userpkg.models:Net", backend="torch", **RUN)
    assert result.report["model"] == "userpkg.models:Net"


@pytest.mark.torch
@pytest.mark.parametrize(
    "name, says",
    [
        ("Nett", "has no 'Nett'"),  # did you mean 'Net'
        ("needs_width", "needs width"),
        ("broken", "raised ValueError: no GPU here"),
        ("not_a_model", "is a int, not a model"),
    ],
)
def test_each_mistake_is_a_usage_error_naming_the_file_and_the_name(tmp_path, name, says):
    pytest.importorskip("torch")
    ref = f"{_file(tmp_path)}:{name}"
    with pytest.raises(UsageError) as err:
        lwdsl.run("prune l1 0.5", ref, backend="torch", **RUN)
    assert says in err.value.message and ref in err.value.message
    if name == "Nett":
        assert "'Net'" in (err.value.hint or "")


def test_a_missing_file_and_a_file_that_does_not_import(tmp_path):
    with pytest.raises(UsageError, match="there is no file"):
        lwdsl.run("prune l1 0.5", f"{tmp_path}/nope.py:Net", backend="torch", **RUN)
    bad = _file(tmp_path, "import torch\n\ndef f(:\n    pass\n", name="bad.py")
    with pytest.raises(UsageError) as err:
        lwdsl.run("prune l1 0.5", f"{bad}:f", backend="torch", **RUN)
    assert f"{bad}:3" in err.value.message and "SyntaxError" in err.value.message


def test_a_recipe_target_naming_code_is_refused(tmp_path):
    _file(tmp_path)
    recipe = tmp_path / "r.lw"
    recipe.write_text(f'target "{tmp_path}/mynet.py:Net" on "synthetic:1,8,8:3"\nprune l1 0.5\n')
    with pytest.raises(UsageError, match="a recipe never runs code"):
        lwdsl.run(recipe, backend="torch", quiet=True, latency=False)


@pytest.mark.torch
def test_the_command_line_exits_2_without_a_traceback(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "r.lw").write_text("prune l1 0.5\n")
    done = subprocess.run([str(Path(sys.executable).with_name("lwdsl")), "run", "r.lw", "--model", "mynet.py:Nett",
                           "--data", "synthetic:1,8,8:3"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "there is no file mynet.py" in done.stderr
    _file(tmp_path)
    done = subprocess.run([str(Path(sys.executable).with_name("lwdsl")), "explain", "r.lw", "--model", "mynet.py:Net"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "fc1" in done.stdout, done.stderr


KERAS_FILE = '''
import keras

def build(input_shape, num_classes):
    c, h, w = input_shape
    inp = keras.Input((h, w, c))
    x = keras.layers.Flatten()(inp)
    x = keras.layers.Dense(16, activation="relu", name="fc1")(x)
    return keras.Model(inp, keras.layers.Dense(num_classes, name="fc2")(x))
'''


@pytest.mark.tensorflow
def test_a_keras_model_file_on_the_tensorflow_backend(tmp_path):
    pytest.importorskip("tensorflow")
    ref = f"{_file(tmp_path, KERAS_FILE, name='kmodel.py')}:build"
    result = lwdsl.run("prune l1 0.5", ref, backend="tensorflow", **RUN)
    assert result.report["model"] == ref
    assert {layer["name"] for layer in result.report["steps"][-1]["metrics"]["layers"]} == {"fc1", "fc2"}


KERAS_CNN_FILE = '''
import keras

def build(input_shape, num_classes):
    c, h, w = input_shape
    inp = keras.Input((h, w, c))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inp)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="fc1")(x)
    return keras.Model(inp, keras.layers.Dense(num_classes, name="fc2")(x))
'''

#: the steps of recipes/lenet5-mnist.lw (the main recipe) and recipes/headline.lw, shortened
MAIN = "prune l2 30% structured=filters remove=true on conv\nprune l1 92% on linear\nfinetune epochs=1 lr=0.01 schedule=cosine\nquantize int8 mode=static calibrate=64"
HEADLINE = "prune global l1 0.2\nquantize int8\ndistill T=2 alpha=0.5 epochs=1"


@pytest.mark.tensorflow
@pytest.mark.parametrize("recipe", [MAIN, HEADLINE], ids=["main", "headline"])
def test_keras3_model_file_and_keras3_file_run_the_main_and_headline_recipes(tmp_path, recipe):
    """A model built with `import keras`, from a .py file and as a Keras 3 .keras file it saved."""
    pytest.importorskip("tensorflow")
    import keras

    run = {**RUN, "data": "synthetic:1,12,12:3"}
    ref = f"{_file(tmp_path, KERAS_CNN_FILE, name='cnn.py')}:build"
    from_code = lwdsl.run(recipe, ref, backend="tensorflow", out=tmp_path / "code", **run)
    ns: dict = {}
    exec(KERAS_CNN_FILE, ns)
    saved = tmp_path / "cnn.keras"
    ns["build"]((1, 12, 12), 3).save(saved)
    assert isinstance(keras.models.load_model(saved), keras.Model)
    from_file = lwdsl.run(recipe, str(saved), backend="tensorflow", out=tmp_path / "file", **run)
    for result in (from_code, from_file):
        last = result.report["steps"][-1]["metrics"]
        assert {layer["name"] for layer in last["layers"]} == {"conv1", "conv2", "fc1", "fc2"}
        assert (tmp_path / ("code" if result is from_code else "file") / "model.keras").is_file()
    if recipe is MAIN:  # filters were cut out: conv1 keeps 70% of its 8
        widths = [layer["weights"] for layer in from_code.report["steps"][1]["metrics"]["layers"] if layer["name"] == "conv1"]
        assert widths == [6 * 9]


KERAS2_FILE = '''
import tf_keras

net = tf_keras.Sequential([tf_keras.Input((8, 8, 1)), tf_keras.layers.Flatten(), tf_keras.layers.Dense(3, name="fc")])
'''


@pytest.mark.tensorflow
def test_a_keras2_model_file_is_refused_with_how_to_move_it(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf_keras")
    ref = f"{_file(tmp_path, KERAS2_FILE, name='k2.py')}:net"
    with pytest.raises(UsageError, match="Keras 2") as err:  # exit 2 on the command line
        lwdsl.run("prune l1 0.5", ref, backend="tensorflow", **RUN)
    assert "import keras" in err.value.hint and "model.h5" in err.value.hint
