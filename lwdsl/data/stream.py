"""Images decoded as batches need them: a lazy array the core indexes like a numpy array.

A data set read from files (:mod:`lwdsl.data.sources`) holds its images as an
:class:`ImageArray`: ``len``, ``shape`` (N, C, H, W), ``dtype`` float32, and indexing by an
int, a slice or an array of indices, which decodes exactly those images (a small thread pool
for files) and returns float32 NCHW numpy. Nothing keeps the decoded images: memory holds the
batches in flight, whatever the size of the data set.

The core gives the index of every example of every batch (:mod:`lwdsl.semantics.order`), so a
backend's batches are the same from a folder as from MNIST. :func:`prefetched` walks a list of
batches with the next one decoded in the background while the current one trains;
:func:`chunks` walks a split in order (evaluation, logits). Plain numpy arrays go through both
unchanged (no thread, no copy of a slice): the in-memory path is today's.

The lifecycle of an :class:`ImageArray`: built once by a source with a ``fetch`` function
(indices -> float32 images); indexed any number of times from any thread; its decode pool is
made on first use and its threads end with the process.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

__all__ = ["ImageArray", "prefetched", "chunks", "eval_batch", "eval_batch_tokens", "decode_pool", "is_streamed"]

#: Bytes of float32 images one evaluation or inference batch may hold (at most 1,000 images):
#: 1,000 MNIST images (3.1 MB) as before, 222 of 3x224x224 (134 MB) instead of 1,000 (602 MB).
EVAL_BATCH_BYTES = 1 << 27

#: Threads that decode image files (at most; fewer on a machine with fewer CPUs).
DECODE_THREADS = 4

_POOL: list[ThreadPoolExecutor] = []


def decode_pool() -> ThreadPoolExecutor:
    """The process's pool of image-decoding threads (made on first use)."""
    if not _POOL:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cpus = os.cpu_count() or 1
        _POOL.append(ThreadPoolExecutor(max_workers=max(1, min(DECODE_THREADS, cpus)), thread_name_prefix="lwdsl-decode"))
    return _POOL[0]


Key = Union[int, slice, np.ndarray, Sequence[int]]


class ImageArray:
    """float32 N x C x H x W images decoded on demand.

    Args:
        n: how many images.
        shape: (C, H, W) of one image.
        fetch: sorted or unsorted int64 indices -> float32 (len, C, H, W), in that order; may
            raise :class:`~lwdsl.errors.UsageError` naming a file it cannot read.
        what: what the images are, for errors (``"folder photos/ (train)"``).

    >>> a = ImageArray(5, (1, 2, 2), lambda idx: np.ones((len(idx), 1, 2, 2), np.float32) * idx[:, None, None, None])
    >>> a.shape, a[3].shape, a[1:3][:, 0, 0, 0].tolist(), a[np.array([4, 0])][:, 0, 0, 0].tolist()
    ((5, 1, 2, 2), (1, 2, 2), [1.0, 2.0], [4.0, 0.0])
    """

    dtype = np.dtype(np.float32)
    ndim = 4

    def __init__(self, n: int, shape: tuple[int, int, int], fetch: Callable[[np.ndarray], np.ndarray], what: str = "images") -> None:
        self._n = int(n)
        self._shape = tuple(int(s) for s in shape)
        self._fetch = fetch
        self.what = what

    def __len__(self) -> int:
        return self._n

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._n, *self._shape)

    @property
    def nbytes(self) -> int:
        """Bytes the images would take as float32 (none of them are held)."""
        return 4 * self._n * int(np.prod(self._shape))

    def __repr__(self) -> str:
        return f"ImageArray({self.what}, shape={self.shape}, decoded as indexed)"

    def indices(self, key: Key) -> np.ndarray:
        """The int64 indices ``key`` selects (an IndexError when one is out of range)."""
        if isinstance(key, slice):
            return np.arange(*key.indices(self._n), dtype=np.int64)
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (self._n,):
                raise IndexError(f"a boolean index of shape {idx.shape} for {self._n} images")
            return np.flatnonzero(idx).astype(np.int64)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise IndexError(f"images are indexed by an int, a slice or a 1-d array of ints, not {idx.dtype} of shape {idx.shape}")
        idx = idx.astype(np.int64)
        idx = np.where(idx < 0, idx + self._n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= self._n):
            raise IndexError(f"index out of range for {self._n} images")
        return idx

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self._n if int(key) < 0 else 0)
            if not 0 <= i < self._n:
                raise IndexError(f"image {int(key)} out of range for {self._n} images")
            out = self._get(np.array([i], dtype=np.int64))[0]
        else:
            out = self._get(self.indices(key))
            rest = (slice(None), *rest) if rest else ()
        return out[rest] if rest else out

    def _get(self, idx: np.ndarray) -> np.ndarray:
        if not idx.size:
            return np.zeros((0, *self._shape), dtype=np.float32)
        out = self._fetch(idx)
        if out.shape != (len(idx), *self._shape) or out.dtype != np.float32:  # a source's bug, never the user's data
            raise AssertionError(f"{self.what}: fetched {out.dtype} {out.shape}, expected float32 {(len(idx), *self._shape)}")
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every image decoded into one array (what streaming avoids: for tests and small sets)."""
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def subset(self, idx: np.ndarray, what: Optional[str] = None) -> "ImageArray":
        """The images at ``idx`` as another lazy array (nothing decoded)."""
        idx = self.indices(idx)
        return ImageArray(len(idx), self._shape, lambda j: self._get(idx[j]), what or self.what)


def is_streamed(x: Any) -> bool:
    """Whether ``x`` decodes as it is indexed (an :class:`ImageArray`)."""
    return isinstance(x, ImageArray)


def prefetched(x: Any, keys: Iterable[Any], take: Optional[Callable[[Any], np.ndarray]] = None) -> Iterator[tuple[Any, np.ndarray]]:
    """``(key, take(key))`` for each key in order (``take`` defaults to ``x[key]``); when ``x``
    is an :class:`ImageArray` the next batch is taken in a background thread while the caller
    uses the current one (at most two batches in memory). An error taking a batch is raised
    where that batch is yielded. A numpy ``x`` is taken in the caller's thread, as before."""
    take = take or x.__getitem__
    if not isinstance(x, ImageArray):
        for key in keys:
            yield key, take(key)
        return
    it = iter(keys)
    ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lwdsl-prefetch")
    try:
        key = next(it, _END)
        future = ahead.submit(take, key) if key is not _END else None
        while future is not None:
            batch = future.result()
            nxt = next(it, _END)
            future = ahead.submit(take, nxt) if nxt is not _END else None
            yield key, batch
            key = nxt
    finally:
        ahead.shutdown(wait=True, cancel_futures=True)


_END = object()


def chunks(x: Any, batch: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, x[start : start + batch])`` over all of ``x`` in order (prefetched when streamed)."""
    n = len(x)
    for key, xb in prefetched(x, (slice(s, min(s + batch, n)) for s in range(0, n, batch))):
        yield key.start, xb


def eval_batch(shape: Sequence[int], limit: int = 1000) -> int:
    """Images per evaluation batch for images of ``shape`` (C, H, W): ``limit``, or fewer so
    that a batch holds at most :data:`EVAL_BATCH_BYTES` of float32.

    >>> eval_batch((1, 28, 28)), eval_batch((3, 224, 224))
    (1000, 222)
    """
    per = 4 * int(np.prod(tuple(shape)))
    return max(1, min(int(limit), EVAL_BATCH_BYTES // max(per, 1)))


def eval_batch_tokens(shape: Sequence[int], vocab: int, limit: int = 1000) -> int:
    """Sequences per evaluation batch for token sequences of ``shape`` (L,) scored over
    ``vocab`` tokens: ``limit``, or fewer so that a batch's float32 logits ``[B, L, vocab]``
    take at most :data:`EVAL_BATCH_BYTES`.

    >>> eval_batch_tokens((128,), 2048)
    128
    """
    per = 4 * int(np.prod(tuple(shape))) * max(int(vocab), 1)
    return max(1, min(int(limit), EVAL_BATCH_BYTES // max(per, 1)))
