"""Learning-rate schedules: the learning rate of every optimizer step, on every backend."""

from __future__ import annotations

import math

__all__ = ["lr_at"]


def lr_at(schedule: str, lr: float, t: int, total: int) -> float:
    """The learning rate at optimizer step ``t`` (0-based) of ``total``.

    ``constant``: ``lr``; ``cosine``: ``lr * (1 + cos(pi * t / total)) / 2``; ``step``: ``lr``
    divided by 10 at ``t >= total / 2`` and again at ``t >= 3 * total / 4``.

    >>> lr_at("cosine", 0.1, 0, 10), lr_at("step", 1.0, 8, 10)
    (0.1, 0.010000000000000002)
    """
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * t / total))
    if schedule == "step":
        return lr * 0.1 ** ((t >= total / 2) + (t >= total * 3 / 4))
    return lr
