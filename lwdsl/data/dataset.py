"""The framework-free data a run trains, calibrates and measures on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Dataset"]


@dataclass
class Dataset:
    """Float32 NCHW images (normalised) and int64 labels, as numpy.

    Built by :func:`lwdsl.data.builtin.load_data` from a name, or by a backend's ``adopt_data`` from
    the framework's own data objects (DataLoaders, ``tf.data``).
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    sha256: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image."""
        return tuple(self.train_x.shape[1:])


def stack_examples(xs: list, ys: list, which: str, layout: str = "NCHW") -> tuple[np.ndarray, np.ndarray]:
    """(images float32 NCHW, labels int64) from per-item or per-batch numpy arrays, as the
    backends' ``adopt_data`` collect them from the framework's own data objects; ``layout`` is
    how the images come (``NHWC`` from ``tf.data``: moved to NCHW here).

    Raises:
        LwdslError: no example, or images that are not one image per label in ``layout``.
    """
    from ..errors import LwdslError

    if not xs:
        raise LwdslError(f"the {which} data set is empty")
    batched = np.ndim(xs[0]) == 4
    x = np.concatenate(xs) if batched else np.stack(xs)
    y = np.concatenate([np.reshape(v, -1) for v in ys]).astype(np.int64)
    if x.ndim != 4 or len(x) != len(y):
        raise LwdslError(f"{which} images must be {layout} (4 axes with the batch), got {x.shape} for {len(y)} labels")
    if layout == "NHWC":
        x = np.moveaxis(x, -1, 1)
    return np.ascontiguousarray(x, dtype=np.float32), y
