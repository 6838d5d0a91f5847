"""Input jitter: random translations of training images by up to ``N`` pixels (numpy only).

``finetune jitter=N`` and ``distill jitter=N`` train on translated images, as Hinton et al. 2015
trained their MNIST teacher ("the input images were jittered by up to two pixels in any
direction"). Both backends call these two functions on the same numpy batch, so they train on
identical images:

- **Shifts** (:func:`jitter_shifts`): in epoch ``e`` of a step with run seed ``s``, training image
  ``i`` moves by ``(dy, dx) = shifts[i]``, two independent integers drawn uniformly from
  ``[-N, N]`` by ``numpy.random.default_rng([s, 2, e]).integers(-N, N + 1, size=(n, 2))`` (a
  stream neither the data order, ``default_rng(s + e)``, nor the calibration samples,
  ``default_rng([s, 1])``, use). ``dy > 0`` moves the content down, ``dx > 0`` right. A batch
  takes the rows of its images' indices, so the shifts do not depend on the batch size.
- **Translation** (:func:`shift_images`): ``out[..., y, x] = in[..., clip(y - dy), clip(x - dx)]``
  with the coordinates clipped into the image: the pixels that enter at a border repeat that
  border's row or column ("edge" padding; a normalised background is not 0, so a zero fill
  would draw a frame). The values are copied, never interpolated: a shifted image holds exactly
  the input's floats.

A model's evaluation, the teachers' logits cache (off while the images move) and every other
measurement use the images as they are.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["MAX_JITTER", "jitter_shifts", "shift_images", "check_jitter"]

#: the largest ``jitter=`` a spec accepts (pixels); the data must also be larger than 2N+1
MAX_JITTER = 16


def jitter_shifts(n: int, max_px: int, seed: int, epoch: int) -> np.ndarray:
    """The ``(dy, dx)`` of each of ``n`` training images in ``epoch`` (0-based), int64 ``[n, 2]``.

    >>> s = jitter_shifts(1000, 2, 0, 0)
    >>> s.shape, int(s.min()), int(s.max()), bool((s == jitter_shifts(1000, 2, 0, 0)).all())
    ((1000, 2), -2, 2, True)
    """
    if max_px < 0:
        raise ValueError(f"jitter must be >= 0 pixels, got {max_px}")
    if max_px == 0:
        return np.zeros((int(n), 2), dtype=np.int64)
    rng = np.random.default_rng([int(seed), 2, int(epoch)])
    return rng.integers(-int(max_px), int(max_px) + 1, size=(int(n), 2), dtype=np.int64)


def shift_images(x: np.ndarray, shifts: np.ndarray, axes: Sequence[int] = (2, 3)) -> np.ndarray:
    """Each image of the batch ``x`` translated by its ``(dy, dx)``, edge pixels repeated.

    Args:
        x: a batch, images first; ``axes`` are its height and width axes (``(2, 3)`` for the
            canonical NCHW, ``(1, 2)`` for NHWC).
        shifts: int ``[len(x), 2]``, rows of :func:`jitter_shifts`.

    Returns:
        A new array of ``x``'s shape and dtype.

    >>> img = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    >>> shift_images(img, np.array([[1, 0]]))[0, 0].tolist()
    [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    x = np.asarray(x)
    shifts = np.asarray(shifts, dtype=np.int64).reshape(len(x), 2)
    ah, aw = (a % x.ndim for a in axes)
    h, w = x.shape[ah], x.shape[aw]
    out = np.empty_like(x)
    for dy, dx in {(int(a), int(b)) for a, b in shifts}:
        sel = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
        rows = np.clip(np.arange(h) - dy, 0, h - 1)
        cols = np.clip(np.arange(w) - dx, 0, w - 1)
        part = np.take(np.take(x[sel], rows, axis=ah), cols, axis=aw)
        out[sel] = part
    return out


def check_jitter(max_px: int, input_shape: Sequence[int]) -> str | None:
    """Why ``jitter=max_px`` cannot apply to images of ``input_shape`` (C,H,W), or None."""
    if max_px == 0:
        return None
    if len(input_shape) != 3:
        return f"jitter={max_px} translates images, but the data's inputs have shape {tuple(input_shape)}, not (C,H,W)"
    _, h, w = (int(d) for d in input_shape)
    if 2 * max_px + 1 > min(h, w):
        return f"jitter={max_px} moves images by up to {max_px} px, too far for {h}x{w} images (at most {(min(h, w) - 1) // 2})"
    return None
