"""Data given as PyTorch objects (Python API): DataLoaders or datasets of (image, label)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lwdsl.data.dataset import Dataset, adopted, stack_examples
from lwdsl.errors import LwdslError

__all__ = ["adopt_data"]


def _numpy(source: Any, which: str) -> tuple[np.ndarray, np.ndarray]:
    """(images NCHW float32, labels int64) from an iterable of (image, label) pairs or batches."""
    xs, ys = [], []
    try:
        for item in source:
            x, y = item[0], item[1]
            xs.append(torch.as_tensor(x, dtype=torch.float32).numpy())
            ys.append(torch.as_tensor(y, dtype=torch.int64).numpy())
    except (TypeError, IndexError, ValueError) as exc:
        raise LwdslError(
            f"{which}= must yield (image, label) pairs or batches, e.g. a DataLoader ({type(source).__name__}: {exc})"
        ) from None
    return stack_examples(xs, ys, which)


def adopt_data(train: Any, test: Any, name: str = "user") -> Dataset:
    """A :class:`~lwdsl.backend.Dataset` from two DataLoaders or datasets (transforms applied
    as they yield; the classes are ``max(label) + 1``)."""
    return adopted(name, _numpy(train, "train"), _numpy(test, "test"))
