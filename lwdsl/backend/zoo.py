"""The built-in models' layers, written once: both backends build their networks from this
table, so a zoo model has the same layers, names, widths and activation placement on PyTorch
and on TensorFlow (one canonical state loads into either and gives the same logits).

Each model is a tuple of layers, in order:

- ``("conv", name, width, kernel)``: a 2-d convolution, stride 1, no padding, with a bias;
- ``("dense", name, width, relu)``: a fully connected layer (ReLU after it when ``relu``); the
  last one has ``width`` None: the data's number of classes;
- ``("pool",)``: 2x2 max pooling; ``("relu",)``; ``("flatten",)``;
- ``("dropout", rate)``.

``resnet8`` (residual blocks) is a graph, not a chain: each backend builds it itself
(``models.py``), layer for layer the same. A model whose filters were physically removed is
built again at its smaller widths (:func:`layers_of` with ``widths``).
"""

from __future__ import annotations

from typing import Mapping, Optional

__all__ = ["ZOO", "GRAPH_MODELS", "BUILTIN_NAMES", "layers_of", "RESNET8_WIDTHS", "TRANSFORMERS"]

ZOO: dict[str, tuple[tuple, ...]] = {
    # LeNet-300-100: 266,610 params on 28x28
    "lenet300": (
        ("flatten",),
        ("dense", "fc1", 300, True),
        ("dense", "fc2", 100, True),
        ("dense", "fc3", None, False),
    ),
    # Caffe's LeNet-5 (lenet_train_test.prototxt): no activation after the convolutions; 431,080 params
    "lenet5": (
        ("conv", "conv1", 20, 5),
        ("pool",),
        ("conv", "conv2", 50, 5),
        ("pool",),
        ("flatten",),
        ("dense", "fc1", 500, True),
        ("dense", "fc2", None, False),
    ),
    # the survey's MNIST CNN: relu(max_pool(conv(x))); 21,840 params
    "seedcnn": (
        ("conv", "conv1", 10, 5),
        ("pool",),
        ("relu",),
        ("conv", "conv2", 20, 5),
        ("pool",),
        ("relu",),
        ("flatten",),
        ("dense", "fc1", 50, True),
        ("dense", "fc2", None, False),
    ),
    # Hinton et al. 2015's MNIST teacher (dropout 0.2 on the input, 0.5 on hidden layers) and student
    "mlp1200": (
        ("flatten",),
        ("dropout", 0.2),
        ("dense", "fc1", 1200, True),
        ("dropout", 0.5),
        ("dense", "fc2", 1200, True),
        ("dropout", 0.5),
        ("dense", "fc3", None, False),
    ),
    "mlp800": (
        ("flatten",),
        ("dense", "fc1", 800, True),
        ("dense", "fc2", 800, True),
        ("dense", "fc3", None, False),
    ),
}


def layers_of(name: str, widths: Optional[Mapping[str, int]] = None) -> tuple[tuple, ...]:
    """The layers of zoo model ``name`` with some output widths replaced (``{"fc1": 30}``).

    >>> [spec[2] for spec in layers_of("lenet5", {"conv1": 6}) if spec[0] == "conv"]
    [6, 50]
    """
    widths = dict(widths or {})
    return tuple((*spec[:2], widths.get(spec[1], spec[2]), *spec[3:]) if spec[0] in ("conv", "dense") else spec for spec in ZOO[name])


#: the survey's student at 6-10-25: its flatten is the 160 the article meant; 5,951 params
ZOO["seedcnn_student"] = layers_of("seedcnn", {"conv1": 6, "conv2": 10, "fc1": 25})

#: models each backend builds as a graph of its own (residual adds)
GRAPH_MODELS = ("resnet8",)

#: every built-in model name, in the order help texts list them
BUILTIN_NAMES = (*ZOO, *GRAPH_MODELS)

#: resnet8's convolution widths by layer name (residual widths must agree: ``conv1`` with
#: ``layer1.conv2``, ...), both backends' default
RESNET8_WIDTHS = {"conv1": 16, "layer1.conv1": 16, "layer1.conv2": 16, "layer2.conv1": 32, "layer2.conv2": 32,
                  "layer3.conv1": 64, "layer3.conv2": 64}


#: The transformers built from a config (no download), with their default sizes; ``NAME?key=value&...``
#: sets others. Each backend builds them (its ``hf.py``): torch through ``transformers``,
#: tensorflow as Keras 3 layers with the same names and weights.
TRANSFORMERS: dict[str, dict[str, int]] = {
    "tiny-llama": {"layers": 2, "hidden": 128, "heads": 4, "mlp": 512, "positions": 512},
    "tiny-bert": {"layers": 2, "hidden": 128, "heads": 4, "mlp": 512, "positions": 512, "vocab": 2048},
    "tiny-gpt2": {"layers": 2, "hidden": 128, "heads": 4, "mlp": 512, "positions": 512},
}

