"""Wanda, SparseGPT and the layer objective they minimise (lwdsl.semantics.hessian, .wanda,
.sparsegpt): the exact rules of docs/semantics.md, and the order of their errors on a layer."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.semantics.hessian import Gram, output_error
from lwdsl.semantics.masks import magnitude_keep_masks, nm_keep_mask
from lwdsl.semantics.sparsegpt import sparsegpt_prune
from lwdsl.semantics.wanda import wanda_keep


def layer(seed: int = 0, rows: int = 48, cols: int = 96, tokens: int = 800):
    """A weight and inputs whose features differ in scale and correlate (as a transformer's do)."""
    rng = np.random.default_rng(seed)
    mix = np.eye(cols) + 0.3 * rng.standard_normal((cols, cols))
    x = (rng.standard_normal((tokens, cols)) @ mix * np.exp(rng.standard_normal(cols))).astype(np.float32)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    gram = Gram(cols)
    for start in range(0, tokens, 100):
        gram.update(x[start : start + 100])
    return w, x, gram


def test_gram_is_x_transpose_x_in_float64() -> None:
    w, x, gram = layer()
    assert gram.h.dtype == np.float64 and gram.rows == len(x)
    np.testing.assert_allclose(gram.h, x.astype(np.float64).T @ x.astype(np.float64), rtol=1e-12)
    np.testing.assert_allclose(gram.column_norms(), np.linalg.norm(x.astype(np.float64), axis=0), rtol=1e-12)


def test_output_error_is_the_relative_error_on_the_inputs() -> None:
    w, x, gram = layer()
    new = w * (np.abs(w) > 0.5)
    x64 = x.astype(np.float64)
    direct = np.linalg.norm(x64 @ (w - new).T.astype(np.float64)) ** 2 / np.linalg.norm(x64 @ w.T.astype(np.float64)) ** 2
    assert output_error(w, new, gram.h) == pytest.approx(direct, rel=1e-10)


def test_wanda_prunes_amount_of_every_row_by_weight_times_input_norm() -> None:
    w, _, gram = layer()
    keep = wanda_keep(w, gram.column_norms(), 0.5)
    assert (keep.sum(axis=1) == w.shape[1] // 2).all()
    scores = np.abs(w.astype(np.float64)) * gram.column_norms()
    for row in range(w.shape[0]):  # every pruned score is at most every kept one of its row
        assert scores[row][~keep[row]].max() <= scores[row][keep[row]].min()


def test_wanda_ties_prune_the_lower_index_first() -> None:
    keep = wanda_keep(np.ones((2, 6), np.float32), np.ones(6), 0.5)
    assert keep.tolist() == [[False, False, False, True, True, True]] * 2
    assert wanda_keep(np.ones((1, 4), np.float32), np.ones(4), nm=(2, 4)).tolist() == [[False, False, True, True]]


def test_wanda_with_equal_input_norms_is_magnitude_per_row() -> None:
    w, _, _ = layer()
    assert np.array_equal(wanda_keep(w, np.ones(w.shape[1]), nm=(2, 4)), nm_keep_mask(w, 2, 4))


@pytest.mark.parametrize("nm", [None, (2, 4), (1, 4), (2, 8)])
def test_sparsegpt_mask_counts_and_zeros(nm) -> None:
    w, _, gram = layer()
    keep, new = sparsegpt_prune(w, gram.h, None if nm else 0.5, nm)
    assert new.dtype == np.float64 and new.shape == w.shape
    assert np.all(new[~keep] == 0) and not np.any(np.signbit(new[~keep]))
    if nm is None:
        assert keep.sum() == w.size // 2
    else:
        groups = keep.reshape(w.shape[0], -1, nm[1])
        assert (groups.sum(axis=-1) == nm[0]).all()


def test_sparsegpt_partial_nm_group_and_odd_block() -> None:
    w, _, gram = layer(cols=90)
    keep, _ = sparsegpt_prune(w, gram.h, nm=(2, 4), block=30)  # block rounded down to 28; 90 = 22 groups + 2
    assert (keep[:, :88].reshape(w.shape[0], -1, 4).sum(-1) == 2).all() and keep[:, 88:].all()


def _reference_sparsegpt(w: np.ndarray, h: np.ndarray, sparsity: float, block: int = 128, damp: float = 0.01):
    """The paper's reference code (SparseGPT's sparsegpt.py fasterprune, unstructured), in torch
    float64, with the one change that a block prunes exactly round(s * n) weights (the
    reference's ``<= thresh`` prunes one more)."""
    torch = pytest.importorskip("torch")
    W = torch.tensor(w, dtype=torch.float64)
    H = torch.tensor(h, dtype=torch.float64).clone()
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=torch.float64)
    H = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1 = W[:, i1:i2].clone()
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        Hinv1 = H[i1:i2, i1:i2]
        tmp = W1**2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
        k = int(round(sparsity * tmp.numel()))
        mask1 = torch.zeros(tmp.numel(), dtype=torch.bool)
        mask1[torch.from_numpy(np.argsort(tmp.flatten().numpy(), kind="stable")[:k])] = True
        mask1 = mask1.reshape(tmp.shape)
        for i in range(i2 - i1):
            col = W1[:, i]
            d = Hinv1[i, i]
            q = col.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (col - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(H[i1:i2, i2:])
    return W.numpy()


def test_sparsegpt_is_the_reference_algorithm() -> None:
    w, _, gram = layer(cols=200)
    keep, new = sparsegpt_prune(w, gram.h, 0.5, block=64)
    ref = _reference_sparsegpt(w, gram.h, 0.5, block=64)
    assert np.array_equal(ref == 0, ~keep)
    np.testing.assert_allclose(new, ref, rtol=1e-9, atol=1e-12)


def test_sparsegpt_dead_inputs_are_zeroed_and_pruned_first() -> None:
    w, x, _ = layer()
    x[:, :4] = 0
    gram = Gram(x.shape[1])
    gram.update(x)
    keep, new = sparsegpt_prune(w, gram.h, 0.5)
    assert not keep[:, :4].any() and np.all(new[:, :4] == 0)


def test_a_hessian_that_damping_cannot_save_is_a_run_error() -> None:
    from lwdsl.errors import RunError

    h = np.diag([1.0, -50.0, 1.0])
    with pytest.raises(RunError, match="not positive definite even with damp=0.01"):
        sparsegpt_prune(np.ones((2, 3), np.float32), h, 0.5, what="layer fc")


def test_deterministic_bit_for_bit() -> None:
    w, _, gram = layer(seed=3)
    a = sparsegpt_prune(w, gram.h, nm=(2, 4))
    b = sparsegpt_prune(w.copy(), gram.h.copy(), nm=(2, 4))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_layer_error_orders_sparsegpt_wanda_magnitude(seed: int, nm) -> None:
    """The objective the methods minimise, on inputs with unequal, correlated features: the
    second-order update beats the first-order score, which beats magnitude alone."""
    w, _, gram = layer(seed)
    magnitude = nm_keep_mask(w, *nm) if nm else magnitude_keep_masks([w], 0.5)[0]
    wanda = wanda_keep(w, gram.column_norms(), 0.5 if nm is None else None, nm)
    _, sparse = sparsegpt_prune(w, gram.h, 0.5 if nm is None else None, nm)
    errors = [output_error(w, sparse, gram.h), output_error(w, w * wanda, gram.h), output_error(w, w * magnitude, gram.h)]
    assert errors[0] <= errors[1] <= errors[2], errors
