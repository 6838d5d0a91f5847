"""The model zoo on torch: the built-ins from the core's table (:mod:`lwdsl.backend.zoo`: NCHW
input of any (C, H, W), layers as direct attributes ``conv1``, ``fc1``, ..., every width a
keyword), any torchvision classifier (``torchvision:NAME``, ``?weights=W`` pretrained) and the
transformers built from a config (hf.py); docs/semantics.md "Models and names", the README's
"Pretrained weights"."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from lwdsl.errors import UsageError
from lwdsl.backend.model_refs import does_not_fit, not_among, unknown_model, weights_option, widths_of
from lwdsl.backend.zoo import BUILTIN_NAMES, layers_of

__all__ = ["BUILTINS", "build_model", "ZooNet", "LeNet300", "LeNet5", "SeedCNN", "SeedCNNStudent", "HintonMLP1200", "HintonMLP800", "ResNet8"]


class ZooNet(nn.Module):
    """A zoo model built from the core's table (:data:`lwdsl.backend.zoo.ZOO`, the layers both backends
    build): each conv / dense layer a direct attribute of its name (``conv1``, ``fc1``: the
    canonical tensor names), pooling, ReLU and flatten as functions, dropout as ``drop0``,
    ``drop1``, ... . Layers are created in table order from torch's global generator (PyTorch's
    default initialisation); a dense layer's input size is read from a zero input of
    ``input_shape`` (C, H, W). Widths are keywords by layer name (``fc1=30``)."""

    zoo: ClassVar[str]

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, **widths: int) -> None:
        super().__init__()
        widths_of(self.zoo, widths)
        self.plan = layers_of(self.zoo, widths)
        x, drops = torch.zeros(1, *input_shape), 0
        try:
            with torch.no_grad():
                for spec in self.plan:
                    if spec[0] == "conv":
                        setattr(self, spec[1], nn.Conv2d(int(x.shape[1]), spec[2], spec[3]))
                    elif spec[0] == "dense":
                        setattr(self, spec[1], nn.Linear(int(x.shape[1]), num_classes if spec[2] is None else spec[2]))
                    elif spec[0] == "dropout":  # not run here: it draws from the generator, shapes stay
                        setattr(self, f"drop{drops}", nn.Dropout(spec[1]))
                        drops += 1
                        continue
                    x = self._layer(spec, x, drops)
        except RuntimeError as exc:
            raise does_not_fit(self.zoo, input_shape, exc) from None

    def _layer(self, spec: tuple, x: torch.Tensor, drop: int) -> torch.Tensor:
        kind = spec[0]
        if kind in ("conv", "dense"):
            x = getattr(self, spec[1])(x)
            return F.relu(x) if kind == "dense" and spec[3] else x
        if kind == "pool":
            return F.max_pool2d(x, 2)
        if kind == "relu":
            return F.relu(x)
        if kind == "flatten":
            return torch.flatten(x, 1)
        return getattr(self, f"drop{drop}")(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        drops = 0
        for spec in self.plan:
            x = self._layer(spec, x, drops)
            drops += spec[0] == "dropout"
        return x


#: The table's chains as classes (``LeNet5((1, 28, 28), 10, conv1=4)``): a ZooNet each.
LeNet300, LeNet5, SeedCNN, SeedCNNStudent, HintonMLP1200, HintonMLP800 = (
    type(cls, (ZooNet,), {"zoo": zoo, "__module__": __name__})
    for cls, zoo in (("LeNet300", "lenet300"), ("LeNet5", "lenet5"), ("SeedCNN", "seedcnn"),
                     ("SeedCNNStudent", "seedcnn_student"), ("HintonMLP1200", "mlp1200"), ("HintonMLP800", "mlp800"))
)


class _BasicBlock(nn.Module):
    """conv1 3x3 (stride), bn1, ReLU, conv2 3x3, bn2, + shortcut (identity, or a 1x1 conv
    ``down`` with ``down_bn`` when the stride or width changes), ReLU. No conv biases."""

    def __init__(self, c_in: int, width: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, out, 3, 1, 1, bias=False)
        shortcut = stride != 1 or c_in != out
        if shortcut:  # registered in Keras's (graph depth) order, so both backends list the layers alike
            self.down = nn.Conv2d(c_in, out, 1, stride, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        if shortcut:
            self.down_bn = nn.BatchNorm2d(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = self.down_bn(self.down(x)) if hasattr(self, "down") else x
        return F.relu(y + shortcut)


class ResNet8(nn.Module):
    """A residual net for 28x28 data (He et al. 2016's CIFAR ResNet with one block a stage):
    conv1 3x3 16, bn1, ReLU; ``layer1`` (16), ``layer2`` (32, stride 2), ``layer3`` (64, stride
    2) basic blocks; global average pooling; ``fc``. 77,754 params on 1x28x28 with 10 classes.
    Widths are keywords by layer name (``**{"layer1.conv1": 8}``) for models whose filters were
    removed; the residual widths must agree (``conv1`` with ``layer1.conv2``, ...)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, **widths: int) -> None:
        super().__init__()
        w = widths_of("resnet8", widths)
        self.conv1 = nn.Conv2d(input_shape[0], w["conv1"], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w["conv1"])
        c = w["conv1"]
        for i, stride in ((1, 1), (2, 2), (3, 2)):
            out = w[f"layer{i}.conv2"]
            setattr(self, f"layer{i}", _BasicBlock(c, w[f"layer{i}.conv1"], out, stride))
            c = out
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


#: Built-in name -> builder(input_shape, num_classes, **widths). Explicit data.
BUILTINS: dict[str, Callable[..., nn.Module]] = {
    **{cls.zoo: cls for cls in (LeNet300, LeNet5, SeedCNN, SeedCNNStudent, HintonMLP1200, HintonMLP800)},
    "resnet8": ResNet8,
}
assert set(BUILTINS) == set(BUILTIN_NAMES), "every model of lwdsl.backend.zoo is built here"


def _pretrained(name: str, weights: str) -> nn.Module:
    """``torchvision:NAME?weights=W``: the model with torchvision's pretrained weights ``W``
    (``DEFAULT`` or an enum member such as ``IMAGENET1K_V1``), read from torch's hub cache or
    downloaded into it; offline without the file, a UsageError saying where to put it."""
    import torchvision

    table = torchvision.models.get_model_weights(name)
    if weights not in table.__members__:
        raise not_among(f"torchvision:{name} has no pretrained weights '{weights}' (it has: {', '.join(table.__members__)})",
                        weights, table.__members__)
    chosen = table[weights]
    try:
        return torchvision.models.get_model(name, weights=chosen)
    except OSError as exc:  # URLError and the like: no network, or the cache cannot be written
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(chosen.url).name
        raise UsageError(
            f"torchvision:{name}?weights={weights}: the weights could not be downloaded from {chosen.url} ({exc})",
            hint=f"put that file at {cache} (torch's hub cache, TORCH_HOME), or give the weights with --checkpoint",
        ) from None


def _new_head(module: nn.Module, num_classes: int) -> Optional[str]:
    """Replace the last ``nn.Linear`` (the classifier) by a fresh one with ``num_classes``
    outputs, as fine-tuning a pretrained model does; returns its name (None when it already fits)."""
    name, last = next(((n, m) for n, m in reversed(list(module.named_modules())) if isinstance(m, nn.Linear)), (None, None))
    if last is None or last.out_features == num_classes:
        return None
    parent = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
    setattr(parent, name.rpartition(".")[2], nn.Linear(last.in_features, num_classes, bias=last.bias is not None))
    return name


def _torchvision(name: str, num_classes: int) -> nn.Module:
    import torchvision

    name, weights = weights_option("torchvision", name, "DEFAULT")
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise not_among(f"unknown torchvision classification model '{name}'", name, known, "torchvision:",
                        "see torchvision.models.list_models(module=torchvision.models)")
    if weights is None:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    module = _pretrained(name, weights)
    _new_head(module, num_classes)
    return module


def build_model(ref: str, input_shape: tuple[int, ...], num_classes: int, **widths: int) -> nn.Module:
    """A freshly initialised model for a built-in name or ``torchvision:NAME``, drawn from
    torch's global generator (the runner seeds it first: ``Backend.set_seed``).

    Raises:
        LwdslError: an unknown name (with did-you-mean) or an input the model cannot take.

    >>> sum(p.numel() for p in build_model("lenet5", (1, 28, 28), 10).parameters())
    431080
    """
    if ref.startswith("torchvision:"):
        return _torchvision(ref.split(":", 1)[1], num_classes)
    from .hf import HF_NAMES, build_hf

    if ref.partition("?")[0] in HF_NAMES:
        return build_hf(ref, tuple(input_shape), num_classes)
    if ref in BUILTINS:
        return BUILTINS[ref](tuple(input_shape), num_classes, **widths)
    raise unknown_model(ref, "torch", "torchvision:NAME, or a Hugging Face model folder")
