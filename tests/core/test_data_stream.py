"""Streamed images (lwdsl.data.stream): the lazy array's indexing, the prefetching walk, the
evaluation batch size, and the core's training loop reading a streamed set batch by batch in
the core's order, never all of it."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lwdsl.backend.context import StepContext
from lwdsl.backend.fit import Trainer, fit
from lwdsl.data.dataset import Dataset
from lwdsl.data.stream import ImageArray, chunks, eval_batch, prefetched
from lwdsl.errors import UsageError
from lwdsl.language.specs import TrainingOptions
from lwdsl.runner.progress import NullBar
from lwdsl.semantics.order import batches


def _counting(n: int = 10, shape=(1, 2, 2)):
    calls: list[np.ndarray] = []

    def fetch(idx):
        calls.append(np.array(idx))
        return np.broadcast_to(idx.astype(np.float32)[:, None, None, None], (len(idx), *shape)).copy()

    return ImageArray(n, shape, fetch, "test images"), calls


def test_indexing_like_a_numpy_array():
    x, calls = _counting()
    ref = np.broadcast_to(np.arange(10, dtype=np.float32)[:, None, None, None], (10, 1, 2, 2))
    assert x.shape == (10, 1, 2, 2) and len(x) == 10 and x.dtype == np.float32 and x.nbytes == 160
    for key in (3, -1, slice(2, 9, 3), slice(None), np.array([7, 0, 7]), [1, 2], np.arange(10) % 2 == 0, np.array([], int)):
        np.testing.assert_array_equal(x[key], ref[key])
    np.testing.assert_array_equal(x[np.array([4, 1]), 0], ref[[4, 1], 0])
    np.testing.assert_array_equal(np.asarray(x), ref)
    for bad in (10, -11, np.array([3, 10]), np.array([0.5])):
        with pytest.raises(IndexError):
            x[bad]
    sub = x.subset(np.array([9, 3, 5]))
    np.testing.assert_array_equal(sub[1:], ref[[3, 5]])


def test_prefetched_keeps_the_order_reads_one_batch_ahead_and_raises_where_a_batch_fails():
    x, calls = _counting(100)
    keys = [np.arange(i, i + 10) for i in range(0, 100, 10)]
    seen = [(k, b) for k, b in prefetched(x, keys)]
    assert [k.tolist() for k, _ in seen] == [k.tolist() for k in keys]
    assert all(np.array_equal(b[:, 0, 0, 0], k) for k, b in seen)
    assert len(calls) == 10 and max(len(c) for c in calls) == 10

    def failing(idx):
        if idx[0] >= 30:
            raise UsageError("image photos/cat/7.jpg cannot be decoded")
        return np.zeros((len(idx), 1, 2, 2), np.float32)

    got = []
    with pytest.raises(UsageError, match="7.jpg"):
        for k, _ in prefetched(ImageArray(100, (1, 2, 2), failing), keys):
            got.append(k[0])
    assert got == [0, 10, 20]
    plain = np.arange(40, dtype=np.float32).reshape(10, 1, 2, 2)
    assert [s for s, _ in chunks(plain, 4)] == [0, 4, 8] and all(b.base is not None for _, b in chunks(plain, 4))  # views


def test_prefetch_decodes_in_another_thread_only_for_streamed_images():
    threads = set()

    def fetch(idx):
        threads.add(threading.current_thread().name)
        return np.zeros((len(idx), 1, 1, 1), np.float32)

    list(prefetched(ImageArray(8, (1, 1, 1), fetch), [np.arange(4), np.arange(4, 8)]))
    assert threads and all(t.startswith("lwdsl-prefetch") for t in threads)


def test_eval_batch_holds_at_most_128_mib_of_images():
    assert eval_batch((1, 28, 28)) == 1000 and eval_batch((3, 224, 224)) == 222 and eval_batch((3, 4096, 4096)) == 1
    assert eval_batch((1, 28, 28), 256) == 256


class _Recorder(Trainer):
    def __init__(self, seen):
        self.seen = seen

    def step(self, images, labels, idx, lr):
        self.seen.append((idx.copy(), images.copy()))
        return 1.0, 1.0, True

    def snapshot(self):
        return None

    def restore(self, snapshot):
        pass


def test_the_training_loop_reads_a_streamed_set_one_batch_at_a_time_in_the_cores_order():
    x, calls = _counting(50)
    y = np.arange(50) % 3
    data = Dataset("streamed", x, y, x, y, 3)
    seen: list = []
    ctx = StepContext(data=data, seed=4, index=0, progress=lambda total, desc: NullBar())
    handle = type("H", (), {})()
    fit(lambda *a, **k: _Recorder(seen), handle, TrainingOptions(epochs=2, batch=8), ctx, label="finetune")
    want = [b for e in range(2) for b in batches(50, 8, 4, e)]
    assert [i.tolist() for i, _ in seen] == [b.tolist() for b in want]
    assert all(np.array_equal(img[:, 0, 0, 0], i) for i, img in seen)
    assert max(len(c) for c in calls) == 8 and sum(len(c) for c in calls) == 100  # each image once per epoch, never all
