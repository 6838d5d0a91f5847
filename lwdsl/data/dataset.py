"""The framework-free data a run trains, calibrates and measures on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from .stream import ImageArray

__all__ = ["Dataset", "Images"]

#: Images as a backend reads them: float32 N x C x H x W, in memory or decoded as indexed.
Images = Union[np.ndarray, ImageArray]


@dataclass
class Dataset:
    """Float32 NCHW images (normalised) and int64 labels, as numpy.

    Built by :func:`lwdsl.data.builtin.load_data` from a name or a path, or by a backend's
    ``adopt_data`` from the framework's own data objects (DataLoaders, ``tf.data``). The images
    of a data set read from files are an :class:`~lwdsl.data.stream.ImageArray` (decoded as
    batches are indexed); everything that reads them goes batch by batch
    (:func:`~lwdsl.data.stream.prefetched`, :func:`~lwdsl.data.stream.chunks`).

    ``classes`` are the class names (index ``i`` is class ``i``), ``info`` what the report
    says of the source (format, layout, split, preprocessing).

    ``task`` is ``classify`` (one label per example) or ``lm`` (language modelling:
    ``train_x`` int64 token ids ``[N, L]``, ``train_y`` the next token at each position
    ``[N, L]``, ``num_classes`` the vocabulary; :mod:`lwdsl.data.text`).
    """

    name: str
    train_x: Images
    train_y: np.ndarray
    test_x: Images
    test_y: np.ndarray
    num_classes: int
    sha256: str = ""
    classes: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    task: str = "classify"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image, or (L,) of one token sequence."""
        return tuple(self.train_x.shape[1:])

    def describe(self) -> dict[str, Any]:
        """What the report says of the data: its source, classes and sizes."""
        out: dict[str, Any] = {"name": self.name, **self.info}
        if self.task == "lm":
            out["vocabulary"] = self.num_classes
            out["train_sequences"], out["test_sequences"] = int(len(self.train_x)), int(len(self.test_x))
            out["test_tokens"] = int(np.size(self.test_y))
            return out
        out["classes"] = list(self.classes) if self.classes else [str(i) for i in range(self.num_classes)]
        if len(self.input_shape) == 1:  # labelled token sequences (lwdsl.data.pycode)
            out["train_sequences"], out["test_sequences"] = int(len(self.train_x)), int(len(self.test_x))
            out["sequence_length"] = int(self.input_shape[0])
            return out
        out["train_images"], out["test_images"] = int(len(self.train_x)), int(len(self.test_x))
        out["image_shape"] = list(self.input_shape)
        return out


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


def adopted(name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> "Dataset":
    """A :class:`Dataset` of a user's two sets, each (images NCHW, labels) from
    :func:`stack_examples` (the backends' ``adopt_data``); the classes are ``max(label) + 1``.

    Raises:
        LwdslError: the two sets' images differ in shape.
    """
    from ..errors import LwdslError

    (tx, ty), (vx, vy) = train, test
    if tx.shape[1:] != vx.shape[1:]:
        raise LwdslError(f"train images are {tx.shape[1:]} but test images are {vx.shape[1:]}")
    return Dataset(name, tx, ty, vx, vy, int(max(ty.max(), vy.max())) + 1)
