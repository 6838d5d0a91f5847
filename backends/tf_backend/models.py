"""The model zoo as Keras functional models (NHWC input), from the core's table
(:mod:`lwdsl.backend.zoo`: the torch backend's layer names, widths, activations and 'valid'
padding, so one canonical state gives the same logits on both), and every other way to get a
model: ``keras:NAME`` (``?weights=imagenet``: a pretrained feature extractor and a new head),
a ``.keras``/``.h5`` file (safe mode; an ``.h5`` Lambda refused), a user's Keras 3 model
(cloned; Keras 2 and subclassed models refused, :data:`KERAS2_HINT`), a KerasHub Llama or GPT-2
(``keras_hub:llama?SIZES``, ``keras_hub:FOLDER``, an object: :mod:`.kerashub`). docs/semantics.md
"Models" (TensorFlow backend)."""

from __future__ import annotations

import os

from pathlib import Path
from typing import Any, Optional


from lwdsl.errors import LwdslError, UsageError
from lwdsl.backend.model_refs import does_not_fit, not_among, unknown_model, weights_option, widths_of
from lwdsl.backend.zoo import ZOO, layers_of

from ._tf import keras

__all__ = ["ZOO", "GRAPHS", "build_model", "build_zoo", "build_resnet8", "adopt_model", "load_file", "is_keras2", "KERAS2_HINT"]

#: The run's seed (``KerasBackend.set_seed``): the zoo's initial weights follow it, as torch's
#: follow ``torch.manual_seed``.
RUN_SEED = [0]


def _torch_like_init(fan_in: int, index: int) -> dict[str, Any]:
    """PyTorch's default initialisation of Conv/Linear, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
    weight and bias, seeded by the layer's index and the run's seed: the same model and seed
    always start from the same weights (seed 0: the seeds ``2 * index``, ``2 * index + 1``)."""
    bound, base = 1.0 / fan_in**0.5, (RUN_SEED[0] * 1_000_003) % 2**30
    return {
        "kernel_initializer": keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform", seed=base + 2 * index),
        "bias_initializer": keras.initializers.RandomUniform(-bound, bound, seed=base + 2 * index + 1),
    }


def build_zoo(
    name: str, input_shape: tuple[int, ...], num_classes: int, widths: Optional[dict[str, int]] = None
) -> Any:
    """A zoo model as a functional Keras model taking NHWC input.

    Args:
        name: a key of :data:`lwdsl.backend.zoo.ZOO` (the layers both backends build).
        input_shape: (C, H, W) of one image.
        num_classes: units of the last layer.
        widths: output widths replacing the defaults (after a structural removal).

    >>> build_zoo("lenet5", (1, 28, 28), 10).count_params()
    431080
    """
    c, h, w = input_shape
    inp = keras.Input((h, w, c), name="input")
    x = inp
    counts = {"pool": 0, "relu": 0, "dropout": 0}
    try:
        for i, spec in enumerate(layers_of(name, widths_of(name, widths))):
            kind = spec[0]
            if kind == "conv":
                _, lname, width, k = spec
                init = _torch_like_init(int(x.shape[-1]) * k * k, i)
                x = keras.layers.Conv2D(width, k, padding="valid", name=lname, **init)(x)
            elif kind == "dense":
                _, lname, width, relu = spec
                units = num_classes if width is None else width
                init = _torch_like_init(int(x.shape[-1]), i)
                x = keras.layers.Dense(units, activation="relu" if relu else None, name=lname, **init)(x)
            elif kind == "flatten":
                x = keras.layers.Flatten(name="flatten")(x)
            elif kind == "dropout":
                x = keras.layers.Dropout(spec[1], name=f"dropout{counts[kind]}")(x)
                counts[kind] += 1
            else:
                counts[kind] += 1
                layer = keras.layers.MaxPool2D(2, name=f"pool{counts[kind]}") if kind == "pool" else keras.layers.ReLU(name=f"relu{counts[kind]}")
                x = layer(x)
    except ValueError as exc:
        raise does_not_fit(name, input_shape, exc) from None
    return keras.Model(inp, x, name=name)


def build_resnet8(input_shape: tuple[int, ...], num_classes: int, widths: Optional[dict[str, int]] = None) -> Any:
    """The torch backend's ``ResNet8`` as a functional Keras model, layer for layer: conv1
    3x3, bn1, ReLU, three basic blocks ``layer1..3`` (conv1, bn1, conv2, bn2, a 1x1 ``down`` +
    ``down_bn`` shortcut when the shape changes, Add, ReLU), global average pooling, ``fc``.
    Stride-2 convolutions pad 1 on every side first (PyTorch's padding; Keras's 'same' pads
    only after), BatchNorm uses PyTorch's epsilon 1e-5 and momentum 0.1."""
    w = widths_of("resnet8", widths)
    layers = keras.layers
    index = iter(range(1000))

    def conv(x: Any, name: str, width: int, k: int, stride: int = 1) -> Any:
        init = _torch_like_init(int(x.shape[-1]) * k * k, next(index))
        init.pop("bias_initializer")
        if k == 3 and stride == 2:
            x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        pad = "same" if k == 3 and stride == 1 else "valid"
        return layers.Conv2D(width, k, stride, padding=pad, use_bias=False, name=name, **init)(x)

    def bn(x: Any, name: str) -> Any:
        return layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)(x)

    c, h, wd = input_shape
    inp = keras.Input((h, wd, c), name="input")
    x = layers.ReLU(name="relu")(bn(conv(inp, "conv1", w["conv1"], 3), "bn1"))
    for i, stride in ((1, 1), (2, 2), (3, 2)):
        p = f"layer{i}."
        y = layers.ReLU(name=p + "relu1")(bn(conv(x, p + "conv1", w[p + "conv1"], 3, stride), p + "bn1"))
        y = bn(conv(y, p + "conv2", w[p + "conv2"], 3), p + "bn2")
        if stride != 1 or int(x.shape[-1]) != w[p + "conv2"]:
            x = bn(conv(x, p + "down", w[p + "conv2"], 1, stride), p + "down_bn")
        x = layers.ReLU(name=p + "relu2")(layers.Add(name=p + "add")([y, x]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    init = _torch_like_init(int(x.shape[-1]), next(index))
    return keras.Model(inp, layers.Dense(num_classes, name="fc", **init)(x), name="resnet8")


#: zoo models that are graphs, not layer lists
GRAPHS = {"resnet8": build_resnet8}


def _applications(name: str, input_shape: tuple[int, ...], num_classes: int) -> Any:
    name, weights = weights_option("keras", name, "imagenet")
    apps = {n: getattr(keras.applications, n) for n in dir(keras.applications) if n[:1].isupper()}
    if name not in apps:
        raise not_among(f"unknown Keras application 'keras:{name}'", name, apps, "keras:",
                        "see keras.applications for the names (e.g. keras:MobileNetV2)")
    c, h, w = input_shape
    try:
        if weights is None:
            return apps[name](weights=None, classes=num_classes, input_shape=(h, w, c))
        return _pretrained_app(apps[name], name, weights, (h, w, c), num_classes)
    except ValueError as exc:
        raise LwdslError(f"keras:{name} cannot take inputs of shape {tuple(input_shape)} (C,H,W): {exc}") from None


def _pretrained_app(app: Any, name: str, weights: str, shape: tuple[int, int, int], num_classes: int) -> Any:
    """``keras:NAME?weights=imagenet``: the application's pretrained feature extractor (no top,
    global average pooling) and a new Dense head for the data's classes, as Keras's fine-tuning
    guide builds it. The weights come from Keras's cache (``KERAS_HOME``, ``~/.keras/models``) or
    are downloaded there; offline without them, a UsageError saying where to put the file."""
    try:
        base = app(weights=weights, include_top=False, input_shape=shape, pooling="avg")
    except ValueError:
        raise
    except Exception as exc:  # get_file's download failure (URL fetch failure, no network)
        home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
        raise UsageError(
            f"keras:{name}?weights={weights}: the pretrained weights could not be downloaded ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
            hint=f"put the file Keras asks for into {os.path.join(home, 'models')} (KERAS_HOME), or give the weights with --checkpoint",
        ) from None
    head = keras.layers.Dense(num_classes, name="predictions")
    return keras.Model(base.inputs, head(base.output), name=f"{base.name}_{num_classes}")


def is_keras2(obj: Any) -> bool:
    """True for an object of Keras 2 (``tf_keras``, what ``tf.keras`` is under ``TF_USE_LEGACY_KERAS=1``)."""
    module = type(obj).__module__
    return module == "tf_keras" or module.startswith("tf_keras.")


#: how to move a Keras 2 model to Keras 3 (said whenever one is refused)
KERAS2_HINT = (
    "lwdsl's tensorflow backend runs on Keras 3: build the model with `import keras` (the same Sequential and "
    "functional API), or save it from Keras 2 with model.save('model.h5') and pass that file (Keras 3 reads "
    "Keras 2 .h5 files)"
)


def adopt_model(model: Any) -> Any:
    """A clone (architecture and weights) of a user's Keras 3 model; the original is untouched.

    Raises:
        UsageError: (exit 2) a Keras 2 (``tf_keras``) model, or not a model.
        LwdslError: a subclassed model that cannot be cloned.
    """
    if is_keras2(model):
        raise UsageError(f"{type(model).__name__} is a Keras 2 model (tf_keras); the tensorflow backend runs on Keras 3", hint=KERAS2_HINT)
    if not isinstance(model, keras.Model):
        raise UsageError(f"the tensorflow backend cannot use a {type(model).__module__}.{type(model).__name__} as a model")
    if not model.built:
        raise LwdslError(f"model '{model.name}' is not built", hint="call it once on an input, or start it with keras.Input(shape)")
    subclassed = not (isinstance(model, keras.Sequential) or type(model).__name__ == "Functional" or _is_functional(model))
    try:
        if subclassed:
            raise ValueError("its layers are connected in Python code (call), not in a graph")
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
    except (ValueError, NotImplementedError, TypeError) as exc:
        raise LwdslError(
            f"cannot use subclassed model {type(model).__name__}: lwdsl needs to follow and rebuild the "
            f"model's graph ({str(exc).splitlines()[0]})",
            hint="write it as a Sequential or functional Keras model (keras.Model(inputs, outputs))",
        ) from None
    return clone


def _is_functional(model: Any) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def _h5_has_lambda(path: Path) -> bool:
    import h5py

    with h5py.File(path, "r") as f:
        config = f.attrs.get("model_config")
    if isinstance(config, bytes):
        config = config.decode()
    return bool(config) and '"class_name": "Lambda"' in config


def load_file(path: Path) -> Any:
    """A Keras 3 model from a ``.keras`` or ``.h5`` file, loaded safely (no code runs); an ``.h5``
    file may come from Keras 2.

    Raises:
        LwdslError: the file is not a Keras model file Keras 3 can read, or holds a Lambda layer
            (in an ``.h5`` file; a ``.keras`` file's Lambda is refused by safe mode).
    """
    path = Path(path)
    if path.suffix not in (".keras", ".h5"):
        raise LwdslError(
            f"cannot load a model from '{path}': the tensorflow backend reads .keras and .h5 files",
            hint="for weights of a built-in model use a .lwz file as the checkpoint",
        )
    if not path.is_file():
        raise LwdslError(f"model file {path} does not exist")
    if path.suffix == ".h5" and _h5_has_lambda(path):
        raise LwdslError(
            f"{path} holds a Lambda layer, whose code Keras 2 stores as bytecode; loading it would run that code",
            hint="replace the Lambda by a registered custom layer, or save as .keras",
        )
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        raise LwdslError(
            f"cannot load {path} with Keras 3 ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            hint="a .keras file written by Keras 2 (tf_keras) may not load in Keras 3: save the model from Keras 2 "
            "with model.save('model.h5') and pass that file",
        ) from None
    return model


def build_model(ref: Any, input_shape: tuple[int, ...], num_classes: int, widths: Optional[dict[str, int]] = None) -> Any:
    """A Keras 3 model for a zoo name, ``keras:NAME``, ``keras_hub:...``, a model file or a model
    object (a KerasHub Llama becomes lwdsl's tiny-llama: :mod:`.kerashub`)."""
    from .kerashub import PREFIX, build_keras_hub, from_keras_hub, is_keras_hub

    if not isinstance(ref, (str, Path)):
        return from_keras_hub(ref, tuple(input_shape), num_classes) if is_keras_hub(ref) else adopt_model(ref)
    text = str(ref)
    from .hf import HF_NAMES, build_hf

    if text.startswith(PREFIX):
        return build_keras_hub(text, tuple(input_shape), num_classes)

    if text.partition("?")[0] in HF_NAMES:
        return build_hf(text, tuple(input_shape), num_classes)
    if text in ZOO:
        return build_zoo(text, input_shape, num_classes, widths)
    if text in GRAPHS:
        return GRAPHS[text](input_shape, num_classes, widths)
    if text.startswith("keras:"):
        return _applications(text.split(":", 1)[1], input_shape, num_classes)
    if Path(text).suffix in (".keras", ".h5") or Path(text).exists():
        return load_file(Path(text))
    raise unknown_model(text, "tensorflow", "keras:NAME, keras_hub:llama?SIZES, a .keras/.h5 file", ["keras:MobileNetV2"])
