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

__all__ = ["BUILTINS", "build_model", "LeNet300", "LeNet5", "SeedCNN"]


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


def _student(input_shape: tuple[int, ...], num_classes: int, conv1: int = 6, conv2: int = 10, fc1: int = 25) -> SeedCNN:
    return SeedCNN(input_shape, num_classes, conv1=conv1, conv2=conv2, fc1=fc1)


#: Built-in name -> builder(input_shape, num_classes, **widths). Explicit data.
BUILTINS: dict[str, Callable[..., nn.Module]] = {
    "lenet300": LeNet300,
    "lenet5": LeNet5,
    "seedcnn": SeedCNN,
    "seedcnn_student": _student,
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
