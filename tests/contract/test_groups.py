"""Removal by dependency group (``prune ... structured=filters remove=true``) on every backend, on
the zoo's resnet8: every conv shrinks and the small model computes the masked one, refusals name
the reason, and the small model round-trips through .lwz (merged from test_torch_groups.py and
test_tf_groups.py; torch.fx graphs, torchvision and Keras applications stay there)."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.backend.weights import save_weights
from lwdsl.errors import LwdslError
from lwdsl.language.specs import PruneSpec
from lwdsl.semantics.groups import group_keep, select_groups

from .helpers import make_ctx, make_data

SHAPE = (1, 28, 28)
SPEC = PruneSpec(method="l2", amount=0.5, structured="filters", remove=True)


def _resnet8(be):
    """resnet8 with non-trivial BatchNorm parameters and statistics (set through the canonical
    state), so a zeroed channel is not trivially zero."""
    h = be.load_model("resnet8", SHAPE, 10)
    state, rng = be.state(h), np.random.default_rng(0)
    for key, (lo, hi) in {"weight": (0.5, 1.5), "bias": (-0.2, 0.2), "running_mean": (-0.2, 0.2), "running_var": (0.5, 2.0)}.items():
        for name in [k.removesuffix(".running_var") for k in state if k.endswith(".running_var")]:
            state[f"{name}.{key}"] = rng.uniform(lo, hi, state[f"{name}.{key}"].shape).astype(np.float32)
    be.load_state(h, state)
    return h


def _convs(be, h):
    return [i.name for i in be.layers(h) if i.kind == "conv"]


def _masked_reference(be, h, layers):
    """A copy whose pruned channels output zero (producers' weights and biases, norms' scale and
    shift zeroed on the canonical state), the kept channels as the core chooses them per group."""
    ref, state = be.copy_model(h), be.state(h)
    chosen = select_groups(be.groups(h), layers)
    for g in chosen:
        keep = group_keep(g, lambda n: state[f"{n}.weight"], 0.5, "l2", 2.0)
        for m in g.members:
            if m.role == "in":
                continue
            gone = m.positions(np.flatnonzero(~keep))
            for key in (f"{m.layer}.weight", f"{m.layer}.bias"):
                if key in state:
                    state[key] = state[key].copy()
                    state[key][gone] = 0.0
    be.load_state(ref, state)
    return ref, chosen


def test_every_conv_shrinks_and_the_model_computes_the_masked_model(backend, kit):
    be = backend
    h = _resnet8(be)
    convs = _convs(be, h)
    widths = {i.name: i.shape[0] for i in be.layers(h) if i.kind == "conv"}
    reference, chosen = _masked_reference(be, h, convs)
    before = be.stats(h).params
    ctx = make_ctx(make_data(n_train=32, n_test=8))
    small = be.apply(h, SPEC, convs, ctx)
    assert be.stats(small).params < 0.3 * before
    after = {i.name: i.shape[0] for i in be.layers(small) if i.kind == "conv"}
    for name, width in widths.items():  # 50% of every group: every conv loses half its filters, rounded half to even
        assert after[name] == width - round(0.5 * width), name
    assert len(ctx.notes["groups"]) == len(chosen) > 0
    x = np.random.default_rng(1).standard_normal((4, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(kit.logits(small, x), kit.logits(reference, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "layers, message",
    [(["fc"], "model's output"), (["layer1.conv2", "layer2.conv2", "layer3.conv2"], "'conv1' by a residual addition")],
    ids=["output", "partial-residual"],
)
def test_groups_that_cannot_shrink_are_refused_with_the_reason(backend, layers, message):
    be = backend
    h = be.load_model("resnet8", SHAPE, 10)
    before = be.state(h)
    with pytest.raises(LwdslError, match=message) as err:
        be.apply(h, SPEC, layers, make_ctx(make_data(n_train=32, n_test=8)))
    assert layers[0] in err.value.message and err.value.hint
    after = be.state(h)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_removed_model_round_trips_through_lwz(backend, kit, tmp_path):
    """A state with removed channels loads into the full model: the same size, the same outputs."""
    be = backend
    h = _resnet8(be)
    full = be.stats(h).params
    small = be.apply(h, SPEC, _convs(be, h), make_ctx(make_data(n_train=32, n_test=8)))
    save_weights(tmp_path / "w.lwz", be.state(small))
    again = be.load_model("resnet8", SHAPE, 10, checkpoint=tmp_path / "w.lwz")
    assert be.stats(again).params == be.stats(small).params < full
    x = np.random.default_rng(0).standard_normal((2, *SHAPE)).astype(np.float32)
    np.testing.assert_array_equal(kit.logits(again, x), kit.logits(small, x))
