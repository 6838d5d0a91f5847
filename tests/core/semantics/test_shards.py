"""The rule of who sees what on several ranks (lwdsl.semantics.shards)."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.semantics.order import batches
from lwdsl.semantics.shards import (
    agree_words,
    agreed,
    digest,
    shard,
    shard_bounds,
    shard_seed,
    shard_weight,
    workers_problem,
)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 7, 64, 65, 127])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_shards_are_contiguous_cover_the_batch_in_rank_order(size: int, world: int) -> None:
    batch = np.random.default_rng(size * 10 + world).permutation(1000)[:size]
    parts = [shard(batch, world, r) for r in range(world)]
    assert np.array_equal(np.concatenate(parts), batch)  # the batch back, in order, nothing twice
    counts = [len(p) for p in parts]
    assert max(counts) - min(counts) <= 1 and counts == sorted(counts, reverse=True)  # the first size % world one longer
    bounds = [shard_bounds(size, world, r) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(bounds[r][1] == bounds[r + 1][0] for r in range(world - 1))


def test_batch_not_divisible_by_world() -> None:
    assert [shard_bounds(10, 3, r) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert [shard_bounds(64, 3, r) for r in range(3)] == [(0, 22), (22, 43), (43, 64)]


def test_short_final_batch_leaves_last_ranks_empty() -> None:
    # 130 examples in batches of 64 on 4 ranks: the last batch has 2 examples, ranks 2 and 3 none
    last = list(batches(130, 64, 0, 0))[-1]
    assert len(last) == 2
    parts = [shard(last, 4, r) for r in range(4)]
    assert [len(p) for p in parts] == [1, 1, 0, 0]
    assert shard_weight(0, 2) == 0.0
    assert shard_weight(0, 0) == 0.0


def test_weights_sum_to_one() -> None:
    for size, world in [(64, 2), (65, 2), (7, 3), (2, 4), (1, 8)]:
        total = sum(shard_weight(hi - lo, size) for lo, hi in (shard_bounds(size, world, r) for r in range(world)))
        assert total == pytest.approx(1.0, abs=1e-15)


def test_every_example_of_an_epoch_on_exactly_one_rank() -> None:
    n, b, world = 203, 16, 3
    seen = np.concatenate([shard(idx, world, r) for idx in batches(n, b, 5, 1) for r in range(world)])
    assert np.array_equal(np.sort(seen), np.arange(n))


def test_bad_shards_refused() -> None:
    for args in [(4, 0, 0), (4, 2, 2), (4, 2, -1), (-1, 2, 0)]:
        with pytest.raises(ValueError):
            shard_bounds(*args)


def test_shard_seed_depends_on_step_update_and_shard_only() -> None:
    assert shard_seed(3, 10, 1) == shard_seed(3, 10, 1)
    seeds = {shard_seed(3, t, r) for t in range(5) for r in range(4)}
    assert len(seeds) == 20
    assert 0 <= shard_seed(2**32 - 1, 10**9, 63) < 2**32


def test_workers_problem() -> None:
    assert workers_problem(2, 100) is None
    assert workers_problem(100, 100) is None
    assert "at least 1" in workers_problem(0, 100)
    assert "more than the 3 training example(s)" in workers_problem(4, 3)


def test_digest_and_agreement() -> None:
    a = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "m": np.ones(3, dtype=bool)}
    same = {"m": np.ones(3, dtype=bool), "w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    other = dict(a, w=a["w"].copy())
    other["w"][1, 2] = np.nextafter(np.float32(5), np.float32(6))  # one ulp on one entry
    assert np.array_equal(digest(a), digest(same))
    assert not np.array_equal(digest(a), digest(other))
    assert not np.array_equal(digest(a), digest({"w": a["w"].reshape(3, 2), "m": a["m"]}))  # shape counts
    # the MAX all-reduce of [w, -w] over ranks, done here by hand
    ranks = [agree_words(digest(a)), agree_words(digest(same))]
    assert agreed(np.max(ranks, axis=0))
    ranks.append(agree_words(digest(other)))
    assert not agreed(np.max(ranks, axis=0))
