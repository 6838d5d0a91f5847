"""Checkpoints: safe loading, clear mismatch errors, untouched inputs, canonical state, finalize."""

from __future__ import annotations

import pytest

from torch_helpers import make_ctx, torch_backend  # first: skips unless torch is selected and installed

import hashlib
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from lwdsl.errors import LwdslError
from lwdsl.language.specs import PruneSpec
from lwdsl.backend.weights import load_weights, save_weights

pytestmark = pytest.mark.torch

SHAPE = (1, 28, 28)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lenet5(**kwargs):
    return torch_backend().load_model("lenet5", SHAPE, 10, **kwargs)


def test_a_pickled_module_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(lenet5().module, path)
    before = digest(path)
    with pytest.raises(LwdslError, match="refusing to load") as err:
        lenet5(checkpoint=path)
    assert "weights_only=True" in err.value.message and "LeNet5" in err.value.message
    assert "state_dict()" in err.value.hint
    assert digest(path) == before


def test_a_file_that_is_not_a_checkpoint_is_an_error(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LwdslError, match="cannot read checkpoint"):
        lenet5(checkpoint=tmp_path / "junk.pt")
    with pytest.raises(LwdslError, match="not found"):
        lenet5(checkpoint=tmp_path / "missing.pt")
    torch.save({"epoch": torch.tensor(3), "note": "x"}, tmp_path / "odd.pt")
    with pytest.raises(LwdslError, match="not a state dict"):
        lenet5(checkpoint=tmp_path / "odd.pt")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("fc2.bias"), "tensor 'fc2.bias' is missing"),
        (lambda s: s.__setitem__("fc3.weight", torch.zeros(2, 2)), "unexpected tensor 'fc3.weight'"),
        (lambda s: s.__setitem__("conv2.weight", torch.zeros(50, 20, 3, 3)), r"'conv2.weight' has shape \[50, 20, 3, 3\] in the checkpoint but \[50, 20, 5, 5\]"),
        (lambda s: s.__setitem__("fc2.weight", torch.zeros(10, 600)), r"'fc2.weight' has shape \[10, 600\]"),
    ],
)
def test_a_state_that_does_not_fit_names_the_first_bad_tensor(tmp_path, edit, message):
    state = lenet5().module.state_dict()
    edit(state)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    before = digest(path)
    with pytest.raises(LwdslError, match=message):
        lenet5(checkpoint=path)
    assert digest(path) == before


def test_narrower_widths_that_do_not_fit_together_are_an_error(tmp_path):
    state = lenet5().module.state_dict()
    state["conv2.weight"] = state["conv2.weight"][:30]
    state["conv2.bias"] = state["conv2.bias"][:30]  # fc1 still expects 50 channels
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(LwdslError, match="widths do not fit together"):
        lenet5(checkpoint=tmp_path / "w.pt")


def test_lwz_and_pt_round_trips_keep_every_value(tmp_path):
    backend = torch_backend()
    handle = lenet5()
    backend.apply(handle, PruneSpec(scope="global", method="l1", amount=0.9), ["conv1", "conv2", "fc1", "fc2"], make_ctx())
    state = backend.state(handle)
    save_weights(tmp_path / "w.lwz", state)
    backend.save_native(handle, tmp_path / "w.pt")
    before = digest(tmp_path / "w.lwz")
    for name in ("w.lwz", "w.pt"):
        again = backend.state(lenet5(checkpoint=tmp_path / name))
        assert again.keys() == state.keys()
        assert all(np.array_equal(again[k], state[k]) for k in state)
    assert digest(tmp_path / "w.lwz") == before
    assert load_weights(tmp_path / "w.lwz")[0].keys() == state.keys()


def test_native_file_is_a_plain_state_dict(tmp_path):
    backend = torch_backend()
    handle = backend.load_model("torchvision:resnet18", (3, 32, 32), 10)
    backend.apply(handle, PruneSpec(method="l1", amount=0.5), ["conv1"], make_ctx())
    backend.save_native(handle, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=True)
    assert isinstance(loaded, (dict, OrderedDict)) and all(isinstance(v, torch.Tensor) for v in loaded.values())
    assert list(loaded) == list(handle.module.state_dict())
    assert "bn1.num_batches_tracked" in loaded and not any(k.endswith(("_orig", "_mask")) for k in loaded)


def test_canonical_state_has_buffers_but_no_batch_counter():
    backend = torch_backend()
    handle = backend.load_model("torchvision:resnet18", (3, 32, 32), 10)
    state = backend.state(handle)
    assert "bn1.running_mean" in state and "bn1.running_var" in state and "conv1.weight" in state
    assert not any(k.endswith("num_batches_tracked") for k in state)
    assert all(isinstance(v, np.ndarray) for v in state.values())
    state["conv1.weight"][:] = 1.0  # a copy: the model is unaffected
    assert not torch.all(handle.module.conv1.weight == 1.0)


def test_load_state_is_the_inverse_of_state_and_reapplies_masks():
    backend = torch_backend()
    handle = lenet5()
    backend.apply(handle, PruneSpec(method="l1", amount=0.5), ["fc1"], make_ctx())
    state = backend.state(handle)
    other = lenet5()
    backend.load_state(other, state)
    assert all(np.array_equal(backend.state(other)[k], state[k]) for k in state)
    dense = backend.state(lenet5())
    backend.load_state(handle, dense)  # the handle's masks still hold
    pruned = ~handle.masks["fc1"]
    assert int(pruned.sum()) == 200_000 and (handle.module.fc1.weight[pruned] == 0).all()
    assert torch.equal(handle.module.fc1.weight[~pruned], torch.from_numpy(dense["fc1.weight"])[~pruned])


def test_checkpoint_wrappers_prefixes_and_torch_prune_leftovers(tmp_path):
    backend = torch_backend()
    model = lenet5().module
    torch_prune.l1_unstructured(model.fc1, "weight", amount=0.3)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pt")
    handle = lenet5(checkpoint=tmp_path / "ckpt.pt")
    assert torch.equal(handle.masks["fc1"], model.fc1.weight_mask.bool())
    assert torch.equal(handle.module.fc1.weight, model.fc1.weight)
    backend.finalize(handle)
    assert handle.masks == {}


def test_finalize_leaves_plain_weights_without_hooks_or_masks():
    backend = torch_backend()
    handle = lenet5()
    backend.apply(handle, PruneSpec(scope="global", method="l1", amount=0.5), ["conv1", "conv2", "fc1", "fc2"], make_ctx())
    zeros = int((handle.module.fc1.weight == 0).sum())
    out = backend.finalize(handle)
    assert out.masks == {} and int((out.module.fc1.weight == 0).sum()) == zeros
    fresh = lenet5().module
    assert [n for n, _ in out.module.named_parameters()] == [n for n, _ in fresh.named_parameters()]
    assert [n for n, _ in out.module.named_buffers()] == [n for n, _ in fresh.named_buffers()]
    assert all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks) for m in out.module.modules())


def test_a_users_module_is_copied_not_modified():
    user = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    before = user[1].weight.detach().clone()
    backend = torch_backend()
    handle = backend.load_model(user, SHAPE, 10)
    backend.apply(handle, PruneSpec(method="l1", amount=0.5), ["1"], make_ctx())
    assert torch.equal(user[1].weight, before)
    copy = backend.copy_model(handle)
    copy.masks["1"][:] = True
    assert not handle.masks["1"].all()


def test_a_module_whose_head_shares_the_embeddings_parameter_loads_untied():
    """An ``nn.Module`` given as an object is untied as a Hugging Face folder is (its deep copy:
    the caller's model keeps its shared Parameter), with the same warning; int4 on ``lm_head``
    then leaves the embeddings alone."""
    pytest.importorskip("transformers", reason="GPT-2 needs transformers (pip install 'lwdsl[llm]')")
    from transformers import GPT2Config, GPT2LMHeadModel

    from lwdsl.errors import LoadWarning
    from lwdsl.language.specs import QuantizeSpec

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=2,
                                       tie_word_embeddings=True, bos_token_id=None, eos_token_id=None)).eval()
    assert model.lm_head.weight is model.transformer.wte.weight
    wte = model.transformer.wte.weight.detach().numpy().copy()
    backend = torch_backend()
    with pytest.warns(LoadWarning, match="your GPT2LMHeadModel: its head lm_head.weight was tied to transformer.wte.weight"):
        handle = backend.load_model(model, (16,), 64)
    assert model.lm_head.weight is model.transformer.wte.weight  # the caller's model is untouched
    assert handle.module.lm_head.weight is not handle.module.transformer.wte.weight
    handle = backend.apply(handle, QuantizeSpec(dtype="int4"), ["lm_head"], make_ctx())
    state = backend.state(handle)
    assert np.array_equal(state["transformer.wte.weight"], wte)
    assert not np.array_equal(handle.quant["lm_head"].dequantize(), wte)
