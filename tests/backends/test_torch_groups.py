"""Removal by dependency group on torch: torchvision models, torch.fx graphs (concatenations, grouped
convs, untraceable code), explain. resnet8 on every backend: tests/contract/test_groups.py."""

from __future__ import annotations

import pytest

from torch_helpers import make_ctx, torch_backend  # first: skips unless torch is selected and installed

import copy

import numpy as np
import torch
from torch import nn

from lwdsl.errors import LwdslError
from lwdsl.semantics.groups import group_keep
from lwdsl.language.specs import PruneSpec
from lwdsl.backend.weights import save_weights
from lwdsl.backends.torch_backend.graph import find_groups
from lwdsl.backends.torch_backend.prune import TorchPruneParts

plan_removal = TorchPruneParts().plan_removal

pytestmark = pytest.mark.torch

SPEC = PruneSpec(method="l2", amount=0.5, structured="filters", remove=True)


def randomize_norms(module: nn.Module) -> None:
    """Non-trivial BatchNorm parameters and statistics, so a zeroed channel is not trivially zero."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for t, lo, hi in ((m.weight, 0.5, 1.5), (m.bias, -0.2, 0.2), (m.running_mean, -0.2, 0.2), (m.running_var, 0.5, 2.0)):
                    t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)


def masked_reference(handle, layers):
    """The masked model: every pruned channel outputs zero (producers' weights and biases,
    BatchNorm scale and shift, depthwise kernels and biases zeroed), and the kept channels as
    the core chooses them, per group."""
    ref = copy.deepcopy(handle.module).eval()
    chosen = plan_removal(handle, layers)
    with torch.no_grad():
        for g in chosen:
            keep = group_keep(g, lambda n: ref.get_submodule(n).weight.detach().numpy(), 0.5, "l2", 2.0)
            for m in g.members:
                if m.role == "in":
                    continue
                gone = torch.from_numpy(m.positions(np.flatnonzero(~keep)))
                mod = ref.get_submodule(m.layer)
                mod.weight[gone] = 0.0
                if mod.bias is not None:
                    mod.bias[gone] = 0.0
    return ref, chosen


def check_same_outputs(handle, reference, batch=4):
    x = torch.randn(batch, *handle.input_shape, generator=torch.Generator().manual_seed(1))
    handle.module.eval()
    with torch.no_grad():
        torch.testing.assert_close(handle.module(x), reference(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "ref, shape, ratio",
    [("torchvision:resnet18", (3, 32, 32), 0.3), ("torchvision:mobilenet_v2", (3, 32, 32), 0.35)],
)
def test_every_conv_shrinks_and_the_model_computes_the_masked_model(ref, shape, ratio):
    backend = torch_backend()
    handle = backend.load_model(ref, shape, 10)
    randomize_norms(handle.module)
    convs = [l.name for l in backend.layers(handle) if l.kind == "conv"]
    widths = {n: handle.module.get_submodule(n).out_channels for n in convs}
    reference, chosen = masked_reference(handle, convs)
    before = backend.stats(handle).params
    ctx = make_ctx()
    backend.apply(handle, SPEC, convs, ctx)
    assert backend.stats(handle).params < ratio * before
    for name in convs:  # 50% of every group: every conv loses half its filters, rounded half to even
        assert handle.module.get_submodule(name).out_channels == widths[name] - round(0.5 * widths[name])
    check_same_outputs(handle, reference)
    assert len(ctx.notes["groups"]) == len(chosen)


def test_resnet8_residual_groups():
    backend = torch_backend()
    handle = backend.load_model("resnet8", (1, 28, 28), 10)
    groups = {g.name: g for g in find_groups(handle)}
    assert groups["conv1"].producers == ["conv1", "layer1.conv2"]
    assert groups["layer2.conv2"].producers == ["layer2.conv2", "layer2.down"]
    assert "model's output" in groups["fc"].reason and "model's input" in groups["inputs of conv1"].reason
    assert {m.layer for m in groups["layer3.conv2"].members if m.role == "in"} == {"fc"}


@pytest.mark.parametrize("ref, shape", [("torchvision:mobilenet_v2", (3, 32, 32))])
def test_removed_model_round_trips_through_lwz(tmp_path, ref, shape):
    """A state with removed channels (depthwise convolutions included) loads into the full model."""
    backend = torch_backend()
    handle = backend.load_model(ref, shape, 10)
    backend.apply(handle, SPEC, [l.name for l in backend.layers(handle) if l.kind == "conv"], make_ctx())
    save_weights(tmp_path / "w.lwz", backend.state(handle))
    again = backend.load_model(ref, shape, 10, checkpoint=tmp_path / "w.lwz")
    assert backend.stats(again).params == backend.stats(handle).params
    check_same_outputs(again, handle.module)


class CatNet(nn.Module):
    """Two branches concatenated, a 1x1 conv, a residual addition, flatten into a linear layer."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(10)
        self.mix = nn.Conv2d(10, 5, 1)
        self.skip = nn.Conv2d(3, 5, 1)
        self.fc = nn.Linear(5 * 4 * 4, 7)

    def forward(self, x):
        y = torch.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))
        y = torch.relu(self.mix(y) + self.skip(x))
        return self.fc(torch.flatten(nn.functional.max_pool2d(y, 2), 1))


def test_concatenation_and_flatten():
    torch.manual_seed(0)
    backend = torch_backend()
    handle = backend.load_model(CatNet(), (3, 8, 8), 7)
    randomize_norms(handle.module)
    reference, chosen = masked_reference(handle, ["a", "b", "mix", "skip"])
    assert [g.name for g in chosen] == ["a", "b", "mix"]
    bn = next(g for g in chosen if g.name == "b")
    assert [(m.layer, m.role, m.offset) for m in bn.members] == [("b", "out", 0), ("bn", "norm", 4), ("mix", "in", 4)]
    backend.apply(handle, SPEC, ["a", "b", "mix", "skip"], make_ctx())
    m = handle.module
    assert (m.a.out_channels, m.b.out_channels, m.bn.num_features, m.mix.in_channels) == (2, 3, 5, 5)
    assert m.fc.in_features == 3 * 16
    check_same_outputs(handle, reference)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv(x)
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            x = -x
        return self.fc(x.mean((2, 3)))


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3, groups=2)
        self.conv3 = nn.Conv2d(4, 4, 1)
        self.norm = nn.LayerNorm([4, 4, 4])
        self.conv4 = nn.Conv2d(4, 2, 1)
        self.fc = nn.Linear(2 * 16, 2)

    def forward(self, x):
        x = self.conv3(self.conv2(self.conv1(x)))
        return self.fc(torch.flatten(self.conv4(self.norm(x)), 1))


@pytest.mark.parametrize(
    "net, layers, message",
    [
        (Untraceable, ["conv"], "torch.fx can trace"),
        (Grouped, ["conv1"], "its channels reach 'conv2' is a grouped"),
        (Grouped, ["conv2"], "'conv2' is a grouped convolution"),
        (Grouped, ["conv3"], "'norm' \\(LayerNorm\\)"),
        (Grouped, ["norm"], "only plain"),
    ],
)
def test_groups_that_cannot_shrink_are_refused_with_the_reason(net, layers, message):
    backend = torch_backend()
    handle = backend.load_model(net(), (1, 8, 8), 2)
    before = {k: v.clone() for k, v in handle.module.state_dict().items()}
    with pytest.raises(LwdslError, match=message) as err:
        backend.apply(handle, SPEC, layers, make_ctx())
    assert err.value.hint and (layers[0] in err.value.message or net.__name__ in err.value.message)
    assert all(torch.equal(before[k], v) for k, v in handle.module.state_dict().items())


def test_a_conv_before_flatten_into_the_classifier_shrinks():
    backend = torch_backend()
    handle = backend.load_model(Grouped(), (1, 8, 8), 2)
    backend.apply(handle, SPEC, ["conv4"], make_ctx())
    assert handle.module.conv4.out_channels == 1 and handle.module.fc.in_features == 16


@pytest.mark.parametrize(
    "selector, expect",
    [("on conv", "removes channels of 6 dependency groups"), ('on "layer*.conv2"', "refused: cannot remove filters of layer 'layer1.conv2'")],
)
def test_explain_lists_the_groups_a_removal_prunes(selector, expect):
    from lwdsl import parse
    from lwdsl.cli.explain import explain_recipe

    backend = torch_backend()
    handle = backend.load_model("resnet8", (1, 28, 28), 10)
    recipe = parse(f"prune l1 0.1 | prune l2 50% structured=filters remove=true {selector}")
    text = explain_recipe(recipe, backend.layers(handle), backend.groups(handle))
    assert expect in text and text.count("dependency group") <= 1
    if selector == "on conv":
        assert "conv1 (16 channels via a residual addition, prunable): out conv1," in text
