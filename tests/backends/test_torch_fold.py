"""Batch-norm folding on torch: what cannot be folded is named, never skipped silently."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from lwdsl.backend import Dataset, StepContext, get_backend  # noqa: E402
from lwdsl.runner.progress import NullBar  # noqa: E402
from lwdsl.language.specs import QuantizeSpec  # noqa: E402


def _ctx(said: list) -> StepContext:
    x = np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32)
    data = Dataset("t", x, np.zeros(32, np.int64), x[:4], np.zeros(4, np.int64), 2)
    return StepContext(data=data, seed=0, index=0, progress=lambda total, what: NullBar(), warn=said.append)


class Branchy(nn.Module):
    """conv -> bn, but the conv's output also feeds the residual sum: not foldable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 1, 3, padding=1), nn.BatchNorm2d(1)
        self.fc = nn.Linear(64, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(torch.flatten(self.bn(y) + y, 1))


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 1, 3, padding=1), nn.BatchNorm2d(1)
        self.fc = nn.Linear(64, 2)

    def forward(self, x):
        y = self.bn(self.conv(x))
        if y.sum() > 0:
            y = y * 2
        return self.fc(torch.flatten(y, 1))


@pytest.mark.parametrize("model, said_part", [(Branchy, "'conv' output also feeds other ops"), (Untraceable, "could not be traced")])
def test_a_norm_that_cannot_be_folded_is_named(model, said_part):
    be = get_backend("torch")
    said: list = []
    handle = be.load_model(model().eval(), (1, 8, 8), 2)
    handle = be.apply(handle, QuantizeSpec(dtype="int8"), ["conv", "fc"], _ctx(said))
    assert any(said_part in w for w in said), said
    assert isinstance(handle.module.bn, nn.BatchNorm2d)  # left in place, float
    assert set(handle.quant) == {"conv", "fc"}


def test_folded_model_computes_what_the_norm_did():
    be = get_backend("torch")
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(108, 2)).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(-2, 2)
    x = torch.randn(4, 1, 8, 8)
    handle = be.load_model(net, (1, 8, 8), 2)
    with torch.no_grad():
        ref = handle.module(x)
    said: list = []
    handle = be.apply(handle, QuantizeSpec(dtype="int8", weights_only=True), ["0", "4"], _ctx(said))
    assert not said and isinstance(handle.module[1], nn.Identity)
    with torch.no_grad():
        out = handle.module(x)
    assert torch.allclose(out, ref, atol=0.05 * float(ref.abs().max()))
    assert isinstance(net[1], nn.BatchNorm2d)  # the caller's model is never modified
