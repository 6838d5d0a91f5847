"""lwdsl.semantics.masks, the one definition of which weights a prune step removes (framework-free)."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.semantics import masks as M
from lwdsl.errors import RunError


def _reference(weights, amount):
    """Brute force: stable argsort of all magnitudes in flat order, lowest k pruned."""
    flat = np.concatenate([np.abs(w).ravel() for w in weights])
    keep = np.ones(flat.size, bool)
    keep[np.argsort(flat, kind="stable")[: M.count_to_prune(amount, flat.size)]] = False
    return keep


@pytest.mark.parametrize("amount,count,k", [(0.1, 5, 0), (0.3, 5, 2), (0.5, 5, 2), (0.7, 5, 4), (0.9, 5, 4), (0.2, 431080, 86216)])
def test_count_rounds_half_to_even(amount, count, k):
    assert M.count_to_prune(amount, count) == k


@pytest.mark.parametrize("amount", [0.0, 0.2, 0.5, 0.55555, 0.9, 1.0])
def test_global_cut_equals_brute_force_with_planted_ties(amount):
    rng = np.random.default_rng(1)
    ws = [rng.standard_normal(s).astype(np.float32) for s in ((40, 30), (7, 3, 5, 5), (100,))]
    for w in ws:  # a fifth of each at one shared magnitude, both signs; some exact zeros
        flat = w.reshape(-1)
        tie = rng.random(flat.size) < 0.2
        flat[tie] = np.where(rng.random(tie.sum()) < 0.5, -0.25, 0.25)
        flat[:3] = 0.0
    got = np.concatenate([m.ravel() for m in M.magnitude_keep_masks(ws, amount)])
    assert (got == _reference(ws, amount)).all()


def test_prune_inplace_matches_keep_mask_and_writes_positive_zero():
    rng = np.random.default_rng(2)
    ws = [rng.standard_normal((64, 64)).astype(np.float32) for _ in range(3)]
    ws[1][:8] = -0.5
    cut = M.magnitude_cut(ws, M.count_to_prune(0.4, 3 * 64 * 64))
    for i, w in enumerate(ws):
        keep = cut.keep_mask(i, w)
        cut.prune_inplace(i, w)
        assert ((w != 0) | ~keep).all() and (w[~keep] == 0).all()
        assert not np.signbit(w[~keep]).any()


def test_nan_weights_are_an_error():
    w = np.ones(10, np.float32)
    w[3] = np.nan
    with pytest.raises(RunError, match="NaN or infinite"):
        M.magnitude_cut([w], 2)


def test_threshold_is_strict_and_exact():
    w = np.array([0.1, -0.1, 0.0999999, 0.2], np.float32)
    assert M.threshold_keep_mask(w, float(np.float32(0.1))).tolist() == [True, True, False, True]


def test_random_per_layer_is_exact_seeded_and_differs_between_same_shaped_layers():
    ws = [np.zeros((20, 20), np.float32), np.zeros((20, 20), np.float32)]
    a = M.random_keep_masks(ws, 0.3, seed=7, per_layer=True)
    assert [int((~m).sum()) for m in a] == [120, 120]
    assert not (a[0] == a[1]).all()
    assert all((x == y).all() for x, y in zip(a, M.random_keep_masks(ws, 0.3, seed=7, per_layer=True)))
    g = M.random_keep_masks(ws, 0.3, seed=7)
    assert int(sum((~m).sum() for m in g)) == 240


def test_nm_keeps_n_of_every_m_and_handles_a_partial_group():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 10)).astype(np.float32)
    keep = M.nm_keep_mask(w, 2, 4)
    assert (keep[:, :8].reshape(4, 2, 4).sum(-1) == 2).all()
    assert (keep[:, 8:].sum(-1) == 2).all()  # 2 left over: min(2, N) kept
    kept = np.abs(w[:, :4])[keep[:, :4].astype(bool)].reshape(4, 2).min(1)
    dropped = np.abs(w[:, :4])[~keep[:, :4]].reshape(4, 2).max(1)
    assert (kept >= dropped).all()


def test_structured_prunes_lowest_norm_slices_ties_lower_index_first():
    w = np.ones((4, 3, 2, 2), np.float32)
    w[2] *= 3
    assert M.structured_keep(w, 0.5, axis=0, method="l1").tolist() == [False, False, True, True]
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    assert M.structured_keep(w, 0.34, axis=1, method="l2", p=2.0).tolist() == [False, True, True]


def test_gradual_schedule_is_cubic_from_start_to_final():
    s = [M.gradual_sparsity(e, 0.8, 1, 5) for e in (0, 1, 3, 5, 6)]
    assert s[0] == s[1] == 0.0 and s[3] == s[4] == 0.8
    assert s[2] == pytest.approx(0.8 * (1 - 0.5**3))


# --- issue 27: a threshold that would zero the whole selection is refused -------------------------


def test_a_threshold_above_every_weight_is_refused_before_any_mask() -> None:
    from lwdsl.errors import RecipeError
    from lwdsl.semantics.pruning import MaskRule, keep_masks

    weights = [np.array([[0.5, -2.0], [0.1, 0.0]]), np.array([1.5, -0.2])]
    kept = [int(m.sum()) for m in keep_masks(MaskRule("threshold", 1.0), weights)]
    assert kept == [1, 1]
    with pytest.raises(RecipeError, match=r"would zero every weight of the 2 selected layers: the largest \|w\| among them is 2"):
        keep_masks(MaskRule("threshold", 1e30), weights)
    assert [int(m.sum()) for m in keep_masks(MaskRule("threshold", 1.0), [np.zeros(3)])] == [0]  # already all zero
