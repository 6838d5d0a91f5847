"""Models on the torch backend: builder widths, torchvision, layer kinds, data loaders, errors. The
zoo's sizes, shapes, initialisation and name errors on every backend: tests/contract/test_models.py."""

from __future__ import annotations

import pytest

from torch_helpers import torch_backend  # first: skips unless torch is selected and installed

import numpy as np
import torch
from torch import nn

from lwdsl.errors import LwdslError
from lwdsl.backends.torch_backend.layers import layer_kind
from lwdsl.backends.torch_backend.models import LeNet5, build_model

pytestmark = pytest.mark.torch


def test_builders_take_widths():
    m = LeNet5((1, 28, 28), 10, conv1=4, conv2=6, fc1=30)
    expected = (4 * 25 + 4) + (6 * 4 * 25 + 6) + (6 * 16 * 30 + 30) + (30 * 10 + 10)
    assert sum(p.numel() for p in m.parameters()) == expected


def test_torchvision_models_by_name():
    backend = torch_backend()
    handle = backend.load_model("torchvision:resnet18", (3, 32, 32), 10)
    assert handle.module.fc.out_features == 10
    kinds = {layer.kind for layer in backend.layers(handle)}
    assert kinds == {"conv", "norm", "linear"}
    with pytest.raises(LwdslError, match="resnet81") as err:
        backend.load_model("torchvision:resnet81", (3, 32, 32), 10)
    assert "torchvision:resnet18" in err.value.hint


def test_a_pt_file_is_not_a_model():
    with pytest.raises(LwdslError, match="holds no architecture"):
        torch_backend().load_model("runs/model.pt", (1, 28, 28), 10)


def test_layer_kinds():
    assert layer_kind(nn.Conv1d(2, 2, 3)) == "conv"
    assert layer_kind(nn.Conv3d(2, 2, 3)) == "conv"
    assert layer_kind(nn.ConvTranspose2d(2, 2, 3)) == "other"
    assert layer_kind(nn.Linear(2, 2)) == "linear"
    assert layer_kind(nn.Embedding(5, 2)) == "embedding"
    for norm in (nn.BatchNorm2d(2), nn.LayerNorm(2), nn.GroupNorm(1, 2), nn.InstanceNorm2d(2, affine=True)):
        assert layer_kind(norm) == "norm"
    assert layer_kind(nn.PReLU()) == "other"


def test_backend_identity_and_versions():
    backend = torch_backend()
    assert (backend.name, backend.extra, backend.native_suffix) == ("torch", "torch", ".pt")
    versions = backend.versions()
    assert versions["torch"] == torch.__version__ and "torchvision" in versions


def test_data_from_dataloaders_and_datasets():
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.randn(20, 1, 6, 6)
    y = torch.arange(20) % 4
    train = DataLoader(TensorDataset(x, y), batch_size=8)
    data = torch_backend().adopt_data(train, TensorDataset(x[:5], y[:5]))
    assert data.train_x.shape == (20, 1, 6, 6) and data.test_x.shape == (5, 1, 6, 6)
    assert data.num_classes == 4 and data.train_y.dtype == np.int64
    assert np.array_equal(data.train_x, x.numpy())
    with pytest.raises(LwdslError, match="empty"):
        torch_backend().adopt_data([], train)


def test_unsupported_ops_say_why_before_anything_loads():
    from lwdsl.language.specs import DistillSpec, ExportSpec, FinetuneSpec, PruneSpec, QuantizeSpec, RegularizeSpec

    backend = torch_backend()
    for spec in (PruneSpec(amount=0.2), FinetuneSpec(), RegularizeSpec(l1=1e-4)):
        assert backend.unsupported(spec) is None
    assert backend.unsupported(QuantizeSpec(dtype="auto", budget=4)) is None
    assert backend.unsupported(DistillSpec()) is None
    assert backend.unsupported(ExportSpec(format="tflite")) == "the torch backend cannot export tflite"
    with pytest.raises(LwdslError, match="the torch backend cannot export keras"):
        backend.apply(None, ExportSpec(format="keras"), [], None)


def test_pretrained_torchvision_weights_offline_say_where_to_put_the_file(tmp_path, monkeypatch):
    import torchvision.models._api as tv_api

    from lwdsl.errors import UsageError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    with pytest.raises(UsageError) as err:
        build_model("torchvision:resnet18?weights=DEFAULT", (3, 32, 32), 10)
    assert "resnet18-f37072fd.pth" in err.value.message and str(tmp_path) in (err.value.hint or "")
    with pytest.raises(UsageError, match="no pretrained weights 'IMAGENET1K_V9'"):
        build_model("torchvision:resnet18?weights=IMAGENET1K_V9", (3, 32, 32), 10)
    with pytest.raises(UsageError, match=r"\?weights=NAME"):
        build_model("torchvision:resnet18?pretrained=1", (3, 32, 32), 10)


def test_pretrained_weights_load_and_the_classifier_gets_the_datas_classes(monkeypatch):
    import torchvision
    import torchvision.models._api as tv_api

    reference = torchvision.models.resnet18(weights=None)  # stands for the downloaded file
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", lambda *a, **k: reference.state_dict())
    model = build_model("torchvision:resnet18?weights=DEFAULT", (3, 32, 32), 10)
    assert torch.equal(model.conv1.weight, reference.conv1.weight)  # the pretrained weights
    assert model.fc.out_features == 10 and model.fc.in_features == 512  # a new head for 10 classes
