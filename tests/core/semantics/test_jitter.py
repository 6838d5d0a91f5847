"""Input jitter (lwdsl.semantics.jitter): the shifts each image gets, the translation, the limits,
and the specs that take ``jitter=``."""

from __future__ import annotations

import numpy as np
import pytest

import lwdsl
from lwdsl.errors import RecipeError
from lwdsl.semantics import distill as D
from lwdsl.semantics.jitter import check_jitter, jitter_shifts, shift_images


def test_shifts_are_uniform_integers_in_range_fixed_by_seed_and_epoch():
    s = jitter_shifts(20_000, 2, seed=0, epoch=0)
    assert s.shape == (20_000, 2) and s.dtype == np.int64
    values, counts = np.unique(s, return_counts=True)
    assert values.tolist() == [-2, -1, 0, 1, 2]
    assert counts.min() > 0.18 * s.size and counts.max() < 0.22 * s.size  # uniform over 5 values
    assert np.array_equal(s, jitter_shifts(20_000, 2, seed=0, epoch=0))
    assert not np.array_equal(s, jitter_shifts(20_000, 2, seed=0, epoch=1))
    assert not np.array_equal(s, jitter_shifts(20_000, 2, seed=1, epoch=0))
    # the documented stream: default_rng([seed, 2, epoch]).integers(-N, N + 1, (n, 2))
    ref = np.random.default_rng([3, 2, 5]).integers(-2, 3, size=(100, 2))
    assert np.array_equal(jitter_shifts(100, 2, seed=3, epoch=5), ref)
    assert not jitter_shifts(50, 0, seed=0, epoch=0).any()


def test_a_shift_moves_the_content_and_repeats_the_border():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 8, 9)).astype(np.float32)
    out = shift_images(x, np.array([[2, -1], [0, 0], [-3, 3]]))
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out[0, :, 2:, :-1], x[0, :, :-2, 1:])  # down 2, left 1
    np.testing.assert_array_equal(out[0, :, :2, :-1], np.repeat(x[0, :, :1, 1:], 2, axis=1))  # top row repeated
    np.testing.assert_array_equal(out[0, :, 2:, -1], x[0, :, :-2, -1])  # right column repeated
    np.testing.assert_array_equal(out[1], x[1])
    np.testing.assert_array_equal(out[2, :, :-3, 3:], x[2, :, 3:, :-3])
    assert set(np.unique(out)) <= set(np.unique(x))  # values copied, never interpolated


def test_nchw_and_nhwc_batches_move_alike():
    x = np.random.default_rng(1).standard_normal((64, 3, 10, 12)).astype(np.float32)
    s = jitter_shifts(64, 2, seed=4, epoch=0)
    nchw = shift_images(x, s)
    nhwc = shift_images(np.ascontiguousarray(np.moveaxis(x, 1, -1)), s, axes=(1, 2))
    np.testing.assert_array_equal(nchw, np.moveaxis(nhwc, -1, 1))


def test_jitter_that_cannot_apply_is_explained():
    assert check_jitter(0, (784,)) is None and check_jitter(2, (1, 28, 28)) is None
    assert "not (C,H,W)" in check_jitter(2, (784,))
    assert "too far for 4x5 images (at most 1)" in check_jitter(2, (1, 4, 5))
    with pytest.raises(ValueError, match=">= 0"):
        jitter_shifts(3, -1, 0, 0)


def test_finetune_and_distill_take_jitter_and_the_cache_turns_off():
    assert lwdsl.parse("finetune epochs=2 jitter=2").steps[0].jitter == 2
    step = lwdsl.parse("distill student=mlp800 T=20 alpha=0.9 jitter=1 schedule=cosine").steps[0]
    assert (step.jitter, step.schedule) == (1, "cosine")
    assert lwdsl.parse("distill T=2").steps[0].jitter == 0
    for bad in ("finetune jitter=-1", "distill jitter=17", "distill schedule=linear"):
        with pytest.raises(RecipeError):
            lwdsl.parse(bad)
    assert D.cache_teacher_logits(0) and not D.cache_teacher_logits(2)


def test_the_docstring_examples_run():
    import doctest

    from lwdsl.semantics import jitter

    result = doctest.testmod(jitter)
    assert result.attempted >= 2 and not result.failed


def test_a_cache_over_the_limit_is_not_held():
    """A language model's teacher logits (one distribution over the vocabulary per position)
    would take 905 MiB on --data pydoc: above the limit they are computed per batch."""
    from lwdsl.semantics import distill as D

    assert D.cache_teacher_logits(0, D.CACHE_LIMIT_BYTES) and not D.cache_teacher_logits(0, D.CACHE_LIMIT_BYTES + 1)
    assert 4 * 905 * 128 * 2048 > D.CACHE_LIMIT_BYTES
