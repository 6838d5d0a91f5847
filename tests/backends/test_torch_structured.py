"""Physical filter removal: a smaller dense model computing what the masked model computes."""

from __future__ import annotations

import pytest

from torch_helpers import make_ctx, torch_backend  # first: skips unless torch is selected and installed

import copy
import fnmatch

import torch
from torch import nn

from lwdsl.semantics import masks as lm
from lwdsl.errors import LwdslError
from lwdsl.language.specs import PruneSpec
from lwdsl.backend.weights import save_weights
from lwdsl.backends.torch_backend.handle import TorchModel
from lwdsl.backends.torch_backend.models import LeNet5

pytestmark = pytest.mark.torch

REMOVE = dict(method="l2", amount=0.5, structured="filters", remove=True)


def zeroed_reference(handle: TorchModel, layers, norms_after: dict[str, str] | None = None) -> nn.Module:
    """The masked model: pruned filters' weights and biases zero, and the BatchNorm following
    each (``norms_after``) outputs zero on those channels (scale and shift zero)."""
    ref = copy.deepcopy(handle.module).eval()
    with torch.no_grad():
        for name in layers:
            layer = ref.get_submodule(name)
            keep = torch.from_numpy(lm.structured_keep(layer.weight.numpy(), 0.5, axis=0, method="l2", p=2.0))
            layer.weight[~keep] = 0.0
            if layer.bias is not None:
                layer.bias[~keep] = 0.0
            if norms_after and name in norms_after:
                bn = ref.get_submodule(norms_after[name])
                bn.weight[~keep] = 0.0
                bn.bias[~keep] = 0.0
    return ref


def remove(handle, layers, **extra):
    return torch_backend().apply(handle, PruneSpec(**{**REMOVE, **extra}), layers, make_ctx())


def check_same_outputs(handle, reference, batch=8):
    x = torch.randn(batch, *handle.input_shape, generator=torch.Generator().manual_seed(0))
    handle.module.eval()
    with torch.no_grad():
        torch.testing.assert_close(handle.module(x), reference(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "ref, layers, params",
    [
        ("lenet5", ["conv1", "conv2"], 212_045),
        ("seedcnn", ["conv1", "conv2", "fc1"], (5 * 25 + 5) + (10 * 5 * 25 + 10) + (25 * 160 + 25) + (10 * 25 + 10)),
        ("lenet300", ["fc1", "fc2"], 150 * 784 + 150 + 50 * 150 + 50 + 10 * 50 + 10),
    ],
)
def test_removal_equals_the_masked_model_and_shrinks(ref, layers, params):
    backend = torch_backend()
    handle = backend.load_model(ref, (1, 28, 28), 10)
    reference = zeroed_reference(handle, layers)
    before = backend.stats(handle).params
    remove(handle, layers)
    assert backend.stats(handle).params == params < before
    check_same_outputs(handle, reference)
    assert [layer.name for layer in backend.layers(handle)] == [layer.name for layer in backend.layers(backend.load_model(ref, (1, 28, 28), 10))]


def test_lenet5_after_removal_is_lenet5_at_half_widths():
    handle = torch_backend().load_model("lenet5", (1, 28, 28), 10)
    remove(handle, ["conv1", "conv2"])
    shapes = {k: v.shape for k, v in handle.module.state_dict().items()}
    assert shapes == {k: v.shape for k, v in LeNet5((1, 28, 28), 10, conv1=10, conv2=25).state_dict().items()}


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(6, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc1(torch.flatten(self.pool(x), 1))


def test_batchnorm_on_the_way_shrinks_with_the_filters():
    torch.manual_seed(0)
    net = BNNet()
    with torch.no_grad():
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    handle = torch_backend().load_model(net, (3, 10, 10), 4)
    reference = zeroed_reference(handle, ["conv1", "conv2"], {"conv1": "bn1", "conv2": "bn2"})
    remove(handle, ["conv1", "conv2"])
    assert handle.module.bn1.running_mean.shape == (4,) and handle.module.bn2.num_features == 3
    assert handle.module.fc1.weight.shape == (4, 3)
    check_same_outputs(handle, reference)


def test_resnet18_first_convs_of_blocks():
    backend = torch_backend()
    handle = backend.load_model("torchvision:resnet18", (3, 32, 32), 10)
    layers = [l.name for l in backend.layers(handle) if fnmatch.fnmatchcase(l.name, "layer*.conv1")]
    assert len(layers) == 8
    norms = {name: name.replace("conv1", "bn1") for name in layers}
    with torch.no_grad():  # non-trivial BatchNorm statistics, so zeroed channels are not trivially zero
        for m in handle.module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.bias.uniform_(-0.1, 0.1)
    reference = zeroed_reference(handle, layers, norms)
    before = backend.stats(handle).params
    remove(handle, layers)
    assert backend.stats(handle).params < 0.6 * before
    check_same_outputs(handle, reference, batch=2)


def test_existing_masks_are_sliced_with_the_layers():
    backend = torch_backend()
    handle = backend.load_model("lenet5", (1, 28, 28), 10)
    backend.apply(handle, PruneSpec(method="l1", amount=0.6), ["conv2", "fc1"], make_ctx())
    before = {k: v.clone() for k, v in handle.masks.items()}
    keep = torch.from_numpy(lm.structured_keep(handle.module.conv2.weight.detach().numpy(), 0.5, axis=0, method="l2", p=2.0))
    remove(handle, ["conv2"])
    columns = keep.repeat_interleave(16)  # each conv2 channel is 4x4 flattened columns of fc1
    assert torch.equal(handle.masks["conv2"], before["conv2"][keep])
    assert torch.equal(handle.masks["fc1"], before["fc1"][:, columns])
    for name in ("conv2", "fc1"):
        assert (handle.module.get_submodule(name).weight[~handle.masks[name]] == 0).all()


@pytest.mark.parametrize(
    "ref, shape, layer, message",
    [
        ("lenet5", (1, 28, 28), "fc2", "model's output"),
        ("torchvision:resnet18", (3, 32, 32), "layer1.0.conv2", "residual"),
        ("torchvision:resnet18", (3, 32, 32), "conv1", "residual"),
    ],
)
def test_layers_that_cannot_shrink_alone_are_refused_before_anything_changes(ref, shape, layer, message):
    backend = torch_backend()
    handle = backend.load_model(ref, shape, 10)
    before = {k: v.clone() for k, v in handle.module.state_dict().items()}
    with pytest.raises(LwdslError, match=message) as err:
        remove(handle, ["layer1.0.conv1", layer] if ref.startswith("torchvision") else ["conv1", layer])
    assert layer in err.value.message and err.value.hint
    after = handle.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_removing_every_filter_is_refused():
    net = BNNet()
    handle = torch_backend().load_model(net, (3, 10, 10), 4)
    with pytest.raises(LwdslError, match="all 6"):
        remove(handle, ["conv2"], amount=0.95)


@pytest.mark.parametrize(
    "ref, shape, pattern", [("lenet5", (1, 28, 28), "conv*"), ("torchvision:resnet18", (3, 32, 32), "layer*.conv1")]
)
def test_removed_model_round_trips_through_lwz_and_pt(tmp_path, ref, shape, pattern):
    backend = torch_backend()
    handle = backend.load_model(ref, shape, 10)
    remove(handle, [l.name for l in backend.layers(handle) if fnmatch.fnmatchcase(l.name, pattern)])
    save_weights(tmp_path / "w.lwz", backend.state(handle))
    backend.save_native(handle, tmp_path / "w.pt")
    for file in ("w.lwz", "w.pt"):
        again = backend.load_model(ref, shape, 10, checkpoint=tmp_path / file)
        assert backend.stats(again).params == backend.stats(handle).params
        check_same_outputs(again, handle.module)


def test_gradual_with_removal_prunes_while_training_then_removes():
    backend = torch_backend()
    handle = backend.load_model("seedcnn", (1, 28, 28), 10)
    spec = PruneSpec(method="l1", amount=0.5, structured="filters", remove=True, schedule="gradual", epochs=1, frequency=1)
    backend.apply(handle, spec, ["conv1", "conv2"], make_ctx())
    assert handle.module.conv1.out_channels == 5 and handle.module.conv2.weight.shape == (10, 5, 5, 5)
    assert handle.module.fc1.in_features == 160
    with pytest.raises(LwdslError, match="model's output"):
        backend.apply(handle, spec, ["fc2"], make_ctx())
