"""``prune`` on every backend: the masks are lwdsl.semantics.masks' on the canonical layout, a
second prune never revives, structured masks zero whole slices, gradual ramps by the core's clock,
and masks stay fixed through fine-tuning (merged from test_torch_prune.py, test_tf_prune.py and
test_torch_train.py; hand-built tiny models and ties stay in test_torch_prune.py)."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.language.specs import FinetuneSpec, NMRatio, PruneSpec
from lwdsl.semantics import masks as M
from lwdsl.semantics.order import steps_per_epoch

from .helpers import make_ctx, make_data

SHAPE, LAYERS = (1, 28, 28), ["conv1", "conv2", "fc1", "fc2"]


def _lenet5(be):
    return be.load_model("lenet5", SHAPE, 10)


def _ctx(data=None, **kw):
    return make_ctx(data or make_data(n_train=64, n_test=32), index=2, **kw)


def _zeros(w) -> int:
    return int(np.count_nonzero(np.asarray(w) == 0))


@pytest.mark.parametrize(
    "spec,expect",
    [
        ({"method": "l1", "amount": 0.37}, lambda ws, seed: [M.magnitude_keep_masks([w], 0.37)[0] for w in ws]),
        ({"method": "l2", "amount": 0.37}, lambda ws, seed: [M.magnitude_keep_masks([w], 0.37)[0] for w in ws]),
        ({"method": "ln", "n": 3.0, "amount": 0.37}, lambda ws, seed: [M.magnitude_keep_masks([w], 0.37)[0] for w in ws]),
        ({"scope": "global", "method": "l1", "amount": 0.2}, lambda ws, seed: M.magnitude_keep_masks(ws, 0.2)),
        ({"scope": "global", "amount": 0.6}, lambda ws, seed: M.magnitude_keep_masks(ws, 0.6)),
        ({"method": "random", "amount": 0.3}, lambda ws, seed: M.random_keep_masks(ws, 0.3, seed, per_layer=True)),
        ({"scope": "global", "method": "random", "amount": 0.3}, lambda ws, seed: M.random_keep_masks(ws, 0.3, seed)),
        ({"method": "threshold", "amount": 0.02}, lambda ws, seed: [M.threshold_keep_mask(w, 0.02) for w in ws]),
        ({"nm": NMRatio(n=2, m=4)}, lambda ws, seed: [M.nm_keep_mask(w, 2, 4) for w in ws]),
    ],
    ids=["l1", "l2", "ln", "global-l1-0.2", "global-0.6", "random", "global-random", "threshold", "nm"],
)
def test_masks_are_lwdsl_masks_on_the_canonical_layout(backend, kit, spec, expect):
    be = backend
    h = _lenet5(be)
    before = kit.weights(h, LAYERS)
    biases = {n: be.state(h)[f"{n}.bias"] for n in LAYERS}
    ctx = _ctx(seed=5)
    h = be.apply(h, PruneSpec(**spec), LAYERS, ctx)
    want = expect([before[n] for n in LAYERS], ctx.step_seed())
    state = be.state(h)
    for n, keep in zip(LAYERS, want):
        assert np.array_equal(kit.mask(h, n), keep), n
        w = kit.weight(h, n)
        assert np.array_equal(w, np.where(keep, before[n], 0)) and not np.signbit(w[~keep]).any()  # +0.0
        assert np.array_equal(state[f"{n}.bias"], biases[n])  # biases are never pruned
    if spec.get("scope") != "global" and spec.get("method") in ("l1", "l2", "ln"):
        assert all(_zeros(kit.weight(h, n)) == M.count_to_prune(0.37, before[n].size) for n in LAYERS)
    if spec == {"scope": "global", "method": "l1", "amount": 0.2}:
        assert sum(_zeros(kit.weight(h, n)) for n in LAYERS) == M.count_to_prune(0.2, 430_500) == 86_100
    if spec.get("method") == "random":  # seeded: another seed, other masks
        other = be.apply(_lenet5(be), PruneSpec(**spec), LAYERS, _ctx(seed=6))
        assert not np.array_equal(kit.mask(other, "fc1"), kit.mask(h, "fc1"))


@pytest.mark.parametrize("structured, axis", [("filters", 0), ("channels", 1)])
@pytest.mark.parametrize("method, extra, p", [("l1", {}, 1.0), ("l2", {}, 2.0), ("ln", {"n": 3.0}, 3.0)])
def test_structured_zeroes_whole_slices_of_lowest_norm(backend, kit, structured, axis, method, extra, p):
    be, names = backend, ["conv2", "fc1"]
    h = _lenet5(be)
    before, state0 = kit.weights(h, names), be.state(h)
    h = be.apply(h, PruneSpec(method=method, amount=0.5, structured=structured, **extra), names, _ctx())
    state = be.state(h)
    for name, w in before.items():
        keep = M.structured_keep(w, 0.5, axis=axis, method=method, p=p)
        assert int((~keep).sum()) == M.count_to_prune(0.5, w.shape[axis])
        now = np.moveaxis(kit.weight(h, name), axis, 0)
        assert (now[~keep] == 0).all() and np.array_equal(now[keep], np.moveaxis(w, axis, 0)[keep])
        mask = np.moveaxis(kit.mask(h, name), axis, 0).reshape(w.shape[axis], -1)
        assert np.array_equal(mask.any(axis=1), keep) and np.array_equal(mask.all(axis=1), keep)
        norms = np.sum(np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).astype(np.float64)) ** p, axis=1)
        assert norms[~keep].max() <= norms[keep].min()
        assert np.array_equal(state[f"{name}.bias"], state0[f"{name}.bias"])  # biases are never pruned


def test_a_second_prune_ands_masks_and_counts_zeros_as_candidates(backend, kit):
    be = backend
    h = be.apply(_lenet5(be), PruneSpec(method="l1", amount=0.3), ["fc1"], _ctx())
    first = kit.mask(h, "fc1")
    h = be.apply(h, PruneSpec(method="l1", amount=0.5), ["fc1"], _ctx())
    assert _zeros(kit.weight(h, "fc1")) == 200_000  # 50% of all, the first 30% included
    assert not (kit.mask(h, "fc1") & ~first).any()
    h = be.apply(h, PruneSpec(method="random", amount=0.5), ["fc1"], _ctx())
    second = kit.mask(h, "fc1")
    assert int((~second).sum()) > 200_000 and not (second & ~first).any()  # never revives
    assert (kit.weight(h, "fc1")[~second] == 0).all()


@pytest.mark.parametrize("scope, start", [("layer", 0), ("global", 0), ("layer", 1)])
def test_gradual_ramps_cubically_by_the_cores_clock_and_ends_exactly_at_amount(backend, kit, scope, start, monkeypatch):
    """After step t (from 1): a ramp update when t/spe >= start and t % frequency == 0, the
    first update at t/spe >= final reaches AMOUNT, and the masks are fixed afterwards."""
    from lwdsl.semantics.pruning import GradualClock

    be, names = backend, ["fc1", "fc2", "fc3"]
    due, real = [], GradualClock.due

    def recording_due(self, t):
        out = real(self, t)
        if out is not None:
            due.append(out)
        return out

    monkeypatch.setattr(GradualClock, "due", recording_due)
    h = be.load_model("lenet300", SHAPE, 10)
    total = sum(kit.weight(h, n).size for n in names)
    ctx = _ctx(make_data(n_train=256, n_test=32), seed=1)  # batch 64: 4 steps an epoch
    seen: list[float] = []

    class Bar:  # the model's sparsity after every optimizer step
        def update(self, n=1):
            seen.append(sum(_zeros(kit.weight(h, x)) for x in names) / total)

        def close(self):
            pass

    ctx.progress = lambda t, d: Bar()
    spec = PruneSpec(scope=scope, method="l1", amount=0.8, schedule="gradual", epochs=3, start=start, final=2,
                     frequency=2)
    h = be.apply(h, spec, names, ctx)
    spe = steps_per_epoch(256, 64)
    assert seen == sorted(seen) and len(seen) == 3 * spe == len(h.losses)
    assert seen[0] == 0.0  # step 1: no update (frequency 2)
    want2 = M.gradual_sparsity(2 / 4, 0.8, 0, 2) if start == 0 else 0.0  # step 2: the schedule's value, or
    assert abs(seen[1] - want2) < 1e-3 and want2 > 0 or start > 0  # nothing before epoch START
    assert seen[7] == seen[-1]  # epoch 2 reached AMOUNT; masks fixed afterwards
    want = [M.gradual_sparsity(t / spe, 0.8, start, 2) for t in range(1, 2 * spe + 1)
            if t / spe >= start and (t % 2 == 0 or t == 2 * spe)]
    assert due == want and want[-1] == 0.8, due
    ws = [kit.weight(h, n) for n in names]
    if scope == "layer":
        assert [_zeros(w) for w in ws] == [M.count_to_prune(0.8, w.size) for w in ws]
        assert [round(s.sparsity, 6) for s in be.stats(h).layers[:3]] == [0.8, 0.8, 0.8]
    else:
        assert sum(_zeros(w) for w in ws) == M.count_to_prune(0.8, sum(w.size for w in ws))


@pytest.mark.parametrize(
    "options",
    [
        dict(optimizer="sgd", momentum=0.9, weight_decay=0.01, lr=0.05),
        dict(optimizer="adam", weight_decay=0.01, lr=0.01),
        dict(optimizer="sgd", momentum=0.9, schedule="cosine", epochs=2),
    ],
)
def test_pruned_weights_stay_exactly_zero_through_finetuning_and_finalize_drops_the_masks(backend, kit, options):
    be, data = backend, make_data(n_train=128, n_test=32)
    h = be.apply(_lenet5(be), PruneSpec(scope="global", method="l1", amount=0.6), LAYERS, _ctx(data))
    keep, before = kit.masks(h), kit.weights(h, LAYERS)
    h = be.apply(h, FinetuneSpec(**options), [], _ctx(data))
    for n in LAYERS:
        w = kit.weight(h, n)
        assert (w[~keep[n]] == 0).all() and not np.signbit(w[~keep[n]]).any()  # +0.0
        assert not np.array_equal(w[keep[n]], before[n][keep[n]])  # the kept ones did train
        assert np.array_equal(kit.mask(h, n), keep[n])
    after = be.state(be.finalize(h))
    assert all(np.array_equal(after[f"{n}.weight"] == 0, ~keep[n]) for n in LAYERS)
    assert h.masks == {}
