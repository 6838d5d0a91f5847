"""The model zoo: the built-in networks and any torchvision classifier, by name.

Built-ins take NCHW input of any (C, H, W) and compute their flatten size from it (the seed
tutorials hard-code 16*5*5 or 160 and break on 28x28 images). Their layers are direct
attributes named ``conv1``, ``conv2``, ``fc1``, ``fc2``, ``fc3`` (no ``nn.Sequential``), so the
canonical tensor names are ``conv1.weight``, ``fc1.bias`` ... on every backend. Every builder
takes its hidden widths as keywords, so a model whose filters were physically removed can be
built again at its smaller widths.

``torchvision:NAME`` builds ``torchvision.models.get_model(NAME, weights=None,
num_classes=K)``. The input channels are not adapted: torchvision classifiers expect 3-channel
images, so use them with 3-channel data (``synthetic:3,64,64:10``).
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lwdsl.errors import LwdslError, UsageError, did_you_mean

__all__ = ["BUILTINS", "build_model", "LeNet300", "LeNet5", "SeedCNN", "HintonMLP", "ResNet8"]


def _flat_size(features: Callable[[torch.Tensor], torch.Tensor], input_shape: tuple[int, ...], name: str) -> int:
    """Elements per sample after ``features`` on an input of ``input_shape`` (C, H, W)."""
    try:
        with torch.no_grad():
            return int(features(torch.zeros(1, *input_shape)).numel())
    except RuntimeError as exc:
        raise LwdslError(
            f"model {name} does not fit inputs of shape {tuple(input_shape)}: {exc}",
            hint=f"{name} needs images of at least its receptive field (28x28 MNIST works)",
        ) from None


class LeNet300(nn.Module):
    """LeNet-300-100: flatten, fc1 300, ReLU, fc2 100, ReLU, fc3 (266,610 params on 28x28)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, fc1: int = 300, fc2: int = 100) -> None:
        super().__init__()
        n_in = 1
        for d in input_shape:
            n_in *= int(d)
        self.fc1 = nn.Linear(n_in, fc1)
        self.fc2 = nn.Linear(fc1, fc2)
        self.fc3 = nn.Linear(fc2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class _TwoConvNet(nn.Module):
    """conv1 5x5, max-pool 2, conv2 5x5, max-pool 2, flatten, fc1, ReLU, fc2; subclasses say
    whether a ReLU follows each pooling."""

    zoo_name: ClassVar[str]
    relu_after_pool: ClassVar[bool]

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, conv1: int, conv2: int, fc1: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], conv1, 5)
        self.conv2 = nn.Conv2d(conv1, conv2, 5)
        self.fc1 = nn.Linear(_flat_size(self.features, input_shape, self.zoo_name), fc1)
        self.fc2 = nn.Linear(fc1, num_classes)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(x, 2)
        return F.relu(x) if self.relu_after_pool else x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(self.conv2(self._pool(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return self.fc2(F.relu(self.fc1(x)))


class LeNet5(_TwoConvNet):
    """Caffe LeNet-5: conv1 20@5x5, maxpool 2, conv2 50@5x5, maxpool 2, fc1 500, ReLU, fc2.

    No activation after the convolutions, as in Caffe's ``lenet_train_test.prototxt``;
    431,080 params on 28x28.
    """

    zoo_name, relu_after_pool = "lenet5", False

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, conv1: int = 20, conv2: int = 50, fc1: int = 500
    ) -> None:
        super().__init__(input_shape, num_classes, conv1, conv2, fc1)


class SeedCNN(_TwoConvNet):
    """The survey's MNIST CNN: conv1 5x5, maxpool 2, ReLU, conv2 5x5, maxpool 2, ReLU, fc1,
    ReLU, fc2. Default widths 10-20-50 (21,840 params on 28x28); the student is 6-10-25
    (5,951 params), whose flatten is the 160 the survey's student meant to have."""

    zoo_name, relu_after_pool = "seedcnn", True

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, conv1: int = 10, conv2: int = 20, fc1: int = 50
    ) -> None:
        super().__init__(input_shape, num_classes, conv1, conv2, fc1)


class HintonMLP(nn.Module):
    """The MLPs of Hinton et al. 2015's MNIST experiment: flatten, [dropout], fc1, ReLU,
    [dropout], fc2, ReLU, [dropout], fc3. ``mlp1200`` is the teacher (1200-1200, dropout 0.2 on
    the input and 0.5 on the hidden layers; 2,395,210 params on 28x28), ``mlp800`` the student
    (800-800, no dropout; 1,276,810 params)."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, fc1: int, fc2: int, p_in: float = 0.0, p_hidden: float = 0.0
    ) -> None:
        super().__init__()
        n_in = 1
        for d in input_shape:
            n_in *= int(d)
        self.drop0, self.drop1, self.drop2 = nn.Dropout(p_in), nn.Dropout(p_hidden), nn.Dropout(p_hidden)
        self.fc1 = nn.Linear(n_in, fc1)
        self.fc2 = nn.Linear(fc1, fc2)
        self.fc3 = nn.Linear(fc2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop0(torch.flatten(x, 1))
        x = self.drop1(F.relu(self.fc1(x)))
        x = self.drop2(F.relu(self.fc2(x)))
        return self.fc3(x)


def _mlp1200(input_shape: tuple[int, ...], num_classes: int, fc1: int = 1200, fc2: int = 1200) -> HintonMLP:
    return HintonMLP(input_shape, num_classes, fc1, fc2, p_in=0.2, p_hidden=0.5)


def _mlp800(input_shape: tuple[int, ...], num_classes: int, fc1: int = 800, fc2: int = 800) -> HintonMLP:
    return HintonMLP(input_shape, num_classes, fc1, fc2)


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
        w = {"conv1": 16, "layer1.conv1": 16, "layer1.conv2": 16, "layer2.conv1": 32, "layer2.conv2": 32,
             "layer3.conv1": 64, "layer3.conv2": 64}  # fmt: skip
        unknown = set(widths) - set(w)
        if unknown:
            raise UsageError(f"resnet8 has no layer '{sorted(unknown)[0]}' with a width", hint=f"widths: {', '.join(w)}")
        w.update(widths)
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


def _student(input_shape: tuple[int, ...], num_classes: int, conv1: int = 6, conv2: int = 10, fc1: int = 25) -> SeedCNN:
    return SeedCNN(input_shape, num_classes, conv1=conv1, conv2=conv2, fc1=fc1)


#: Built-in name -> builder(input_shape, num_classes, **widths). Explicit data.
BUILTINS: dict[str, Callable[..., nn.Module]] = {
    "lenet300": LeNet300,
    "lenet5": LeNet5,
    "seedcnn": SeedCNN,
    "seedcnn_student": _student,
    "resnet8": ResNet8,
    "mlp1200": _mlp1200,
    "mlp800": _mlp800,
}


def _torchvision(name: str, num_classes: int) -> nn.Module:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        near = did_you_mean(name, known)
        raise UsageError(
            f"unknown torchvision classification model '{name}'",
            hint=(f"did you mean 'torchvision:{near}'? " if near else "")
            + "see torchvision.models.list_models(module=torchvision.models)",
        )
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


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
    if ref in BUILTINS:
        return BUILTINS[ref](tuple(input_shape), num_classes, **widths)
    near = did_you_mean(ref, list(BUILTINS))
    raise UsageError(
        f"unknown model '{ref}' on the torch backend (built-ins: {', '.join(BUILTINS)}; or torchvision:NAME)",
        hint=f"did you mean '{near}'?" if near else None,
    )
