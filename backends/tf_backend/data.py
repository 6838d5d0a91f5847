"""The user's own ``tf.data`` data sets as a framework-free :class:`~lwdsl.data.dataset.Dataset`."""

from __future__ import annotations

from typing import Any

import numpy as np

from lwdsl.data.dataset import Dataset, adopted, stack_examples
from lwdsl.errors import LwdslError

from ._tf import tf

__all__ = ["adopt_data"]


def _numpy(ds: Any, which: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(ds, tf.data.Dataset):
        raise LwdslError(f"{which}= must be a tf.data.Dataset of (image, label) pairs, got {type(ds).__name__}")
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(np.asarray(x, dtype=np.float32))
        ys.append(np.asarray(y, dtype=np.int64))
    return stack_examples(xs, ys, which, layout="NHWC")


def adopt_data(train: Any, test: Any, name: str = "user") -> Dataset:
    """A Dataset from two ``tf.data.Dataset`` of (image NHWC, integer label) pairs, batched or
    not; images become NCHW float32 numpy."""
    return adopted(name, _numpy(train, "train"), _numpy(test, "test"))
