"""``prune auto``, ``amount=auto`` and per-layer sensitivity on every backend (tiny: lenet300 on
random learnable data, a few hundred images)."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.backend.sensitivity import measure_sensitivity
from lwdsl.language.specs import PruneSpec
from lwdsl.semantics.allocation import AUTO_GRID
from lwdsl.semantics.masks import count_to_prune

from .helpers import make_ctx, make_data

LAYERS = ["fc1", "fc2", "fc3"]


def _model(be):
    return be.load_model("lenet300", (1, 28, 28), 10)


def test_sensitivity_leaves_the_model_exactly_as_it_was(backend):
    h = _model(backend)
    before = backend.state(h)
    ctx = make_ctx(make_data(n_test=64))
    out = measure_sensitivity(backend, h, LAYERS, ctx, amounts=(0.5, 0.9), forms=("int4", "int2"), samples=50)
    after = backend.state(h)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert out["samples"] == 50 and [r["layer"] for r in out["layers"]] == LAYERS
    assert [p["amount"] for p in out["layers"][0]["prune"]] == [0.5, 0.9]
    assert [b["bits"] for b in out["layers"][2]["bits"]] == [4, 2]
    assert ctx.extra["bars"] and all(bar.closed for bar in ctx.extra["bars"])


def test_prune_auto_meets_the_count_with_magnitude_masks(backend):
    h = _model(backend)
    ctx = make_ctx(make_data(n_train=128, n_test=32))
    h = backend.apply(h, PruneSpec(method="auto", amount=0.7), LAYERS, ctx)
    state = backend.state(h)
    zeros = {n: int((state[f"{n}.weight"] == 0).sum()) for n in LAYERS}
    total = sum(state[f"{n}.weight"].size for n in LAYERS)
    notes = ctx.notes["auto_prune"]
    assert sum(zeros.values()) == count_to_prune(0.7, total) == notes["pruned"]
    assert [r["pruned"] for r in notes["layers"]] == [zeros[n] for n in LAYERS]
    assert notes["probe"]["split"] == "train" and notes["grid"] == list(AUTO_GRID)
    assert all(r["reason"] for r in notes["layers"])
    assert set(backend.masks_of(h)) == set(LAYERS)


def test_level_search_keeps_the_highest_level_within(backend):
    h = _model(backend)
    ctx = make_ctx(make_data(n_train=64, n_test=64))
    spec = PruneSpec(method="l1", amount="auto", drop=100.0, epochs=0)
    h = backend.apply(h, spec, LAYERS, ctx)
    notes = ctx.notes["level_search"]
    assert [t["level"] for t in notes["trajectory"]] == [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975]
    assert notes["chosen"] == 0.975 and notes["epochs"] == 0
    state = backend.state(h)
    for n in LAYERS:
        w = state[f"{n}.weight"]
        assert int((w == 0).sum()) == count_to_prune(0.975, w.size)


def test_level_search_fine_tunes_each_level_and_restores_between(backend):
    h = _model(backend)
    ctx = make_ctx(make_data(n_train=64, n_test=64))
    before = backend.state(h)
    spec = PruneSpec(method="l1", amount="auto", drop=0.01, epochs=1, batch=32)
    h = backend.apply(h, spec, LAYERS, ctx)
    notes = ctx.notes["level_search"]
    assert notes["epochs"] == len(notes["trajectory"]) and notes["epochs_per_level"] == 1
    within = [t for t in notes["trajectory"] if t["within"]]
    if notes["chosen"] is None:  # no level kept: the model is back as it was, and said so
        after = backend.state(h)
        assert all(np.array_equal(before[k], after[k]) for k in before)
        assert any("no level was within" in w for w in ctx.extra["warnings"])
    else:
        assert notes["chosen"] == max(t["level"] for t in within)
        w = backend.state(h)["fc1.weight"]
        assert int((w == 0).sum()) >= count_to_prune(notes["chosen"], w.size)
    finetunes = [b for b in ctx.extra["bars"] if "level" in b.description]
    assert len(finetunes) == len(notes["trajectory"])


@pytest.mark.parametrize("spec", [PruneSpec(method="auto", amount=0.5), PruneSpec(method="l1", amount="auto", drop=1.0, epochs=0)])
def test_auto_forms_are_in_the_support_table(backend, spec):
    assert backend.unsupported(spec) is None


@pytest.mark.parametrize("drop", [0.5, 0.01])
def test_every_level_starts_from_the_model_before_the_step(backend, drop):
    """Each level's accuracy equals a plain one-shot prune of a fresh model at that level: the
    weights and masks of the level before never leak into the next (levels go down, too)."""
    data = make_data(n_train=64, n_test=64)
    ctx = make_ctx(data)
    h = _model(backend)
    before = backend.state(h)
    backend.apply(h, PruneSpec(method="l1", amount="auto", drop=drop, epochs=0), LAYERS, ctx)
    trajectory = ctx.notes["level_search"]["trajectory"]
    for t in trajectory:
        fresh = _model(backend)
        backend.load_state(fresh, before)
        fresh = backend.apply(fresh, PruneSpec(method="l1", amount=t["level"]), LAYERS, make_ctx(data))
        acc, loss = backend.evaluate(fresh, make_ctx(data))
        assert acc == t["accuracy"] and loss == pytest.approx(t["loss"], rel=1e-6), t["level"]


@pytest.mark.parametrize("of", ["macs", "flops"])
def test_prune_auto_of_macs_keeps_the_share_and_removes_filters(backend, of):
    from lwdsl.runner.metrics import macs
    from lwdsl.semantics.mac_allocation import MacModel, eligible_groups

    h = backend.load_model("lenet5", (1, 28, 28), 10)
    ctx = make_ctx(make_data(n_train=128, n_test=32))
    positions = backend.positions(h, (1, 28, 28))
    before = macs(backend.stats(h), positions)
    layers = [i.name for i in backend.layers(h) if i.kind in ("conv", "linear")]
    groups, _ = eligible_groups(backend.groups(h), layers)
    mm = MacModel(groups, {k[:-7]: v.shape for k, v in backend.state(h).items() if k.endswith(".weight")}, positions)
    h = backend.apply(h, PruneSpec(method="auto", amount=0.75, of=of), layers, ctx)
    notes = ctx.notes["auto_channels"]
    after = macs(backend.stats(h), positions)  # the count a report gives, from the removed model
    scale = 2 if of == "flops" else 1
    assert notes["baseline"] == scale * before and notes["kept"] == scale * after
    assert after <= int(np.floor(0.25 * before))  # at most the share asked
    # less than one channel's MACs below it: no channel of a shortened group fits back under the target
    removed = {g["group"]: g["removed"] for g in notes["groups"]}
    counts = [removed[g.name] for g in groups]
    assert mm.total(counts) == after
    for gi, r in enumerate(counts):
        if r:
            assert mm.total([c - (i == gi) for i, c in enumerate(counts)]) > int(np.floor(0.25 * before))
    widths = {g["group"]: g["channels"] - g["removed"] for g in notes["groups"]}
    assert set(widths) == {"conv1", "conv2", "fc1"} and notes["left_whole"]  # fc2 gives the classes: whole
    shapes = {k: v.shape for k, v in backend.state(h).items() if k.endswith(".weight")}
    assert shapes["conv1.weight"][0] == widths["conv1"] and shapes["conv2.weight"][:2] == (widths["conv2"], widths["conv1"])
    assert shapes["fc1.weight"] == (widths["fc1"], 16 * widths["conv2"])
    assert notes["start"] in ("search", "uniform") and notes["chosen"].startswith(notes["start"]) and notes["steps"]


def test_prune_auto_of_macs_refuses_an_unreachable_share(backend):
    from lwdsl.errors import LwdslError

    h = backend.load_model("lenet5", (1, 28, 28), 10)
    ctx = make_ctx(make_data(n_train=64, n_test=32))
    with pytest.raises(LwdslError, match="cannot lose that much"):
        backend.apply(h, PruneSpec(method="auto", amount=0.9999, of="macs"), ["conv1", "conv2", "fc1", "fc2"], ctx)
