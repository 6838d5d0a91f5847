"""The ranks of a run and the few collectives between them, as the core uses them.

The rule of who sees what is :mod:`lwdsl.semantics.shards`; the training loop that follows it
is :func:`lwdsl.backend.fit.fit`; the run that starts ranks and says who writes is
:mod:`lwdsl.runner.ranks`. A backend that runs on several processes gives a :class:`Ranks`
over its framework's collectives (torch: ``torch.distributed``, gloo on the CPU, NCCL on CUDA):
a MAX all-reduce of a small numpy vector, a SUM all-reduce of its own flat tensor in place, a
broadcast from rank 0 and a gather of small objects. Every collective is issued by every rank,
in the same order, whether or not the rank had examples in the step.

:class:`OneProcess` is the same interface in one process: ``OneProcess(1)`` is an ordinary run;
``OneProcess(N)`` computes all N shards of every global batch one after another and accumulates
their gradients in rank order, which is, bit for bit on the CPU, what N ranks compute (the
reference the distributed tests compare against, and a way to continue an N-rank run on one
process).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import RunError
from ..semantics.shards import agree_words, agreed, digest

__all__ = ["Ranks", "OneProcess", "check_agree"]


class Ranks(ABC):
    """The processes a run trains on, and the collectives between them.

    Lifecycle: built by the backend when the run starts (joining the process group), used by
    the core's loop and runner, :meth:`close`\\ d when the run ends (also after an error).

    Attributes:
        world: shards per global batch (the number of ranks).
        rank: this process's rank (0 writes the run folder).
        shards: the shards of every global batch this process computes, in order (its own rank
            on N processes; all of them when one process accumulates N shards).
        processes: how many processes take part in the collectives.
    """

    world: int = 1
    rank: int = 0
    shards: tuple[int, ...] = (0,)
    processes: int = 1

    @property
    def writes(self) -> bool:
        """Whether this process writes the run folder, report, lock file and cache (rank 0)."""
        return self.rank == 0

    @abstractmethod
    def all_max(self, values: np.ndarray) -> np.ndarray:
        """The element-wise maximum of ``values`` (a small int64 or float64 vector) over the
        processes, on every process."""

    @abstractmethod
    def all_sum(self, values: np.ndarray) -> np.ndarray:
        """The element-wise sum of ``values`` (a small float64 vector) over the processes, in
        rank order, on every process."""

    def all_sum_native(self, buffer: Any) -> None:
        """Sum the backend's own flat tensor over the processes, in place (gradients)."""

    def broadcast_native(self, tensors: Sequence[Any]) -> None:
        """Overwrite the backend's own tensors with rank 0's, in place (batch-norm buffers)."""

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (small, picklable), in rank order, on every process."""
        return [obj]

    def close(self) -> None:
        """Leave the process group (nothing in one process)."""


class OneProcess(Ranks):
    """One process computing all ``world`` shards of every global batch (``world`` 1: an
    ordinary run). The collectives are the identity."""

    def __init__(self, world: int = 1) -> None:
        self.world, self.rank, self.processes = int(world), 0, 1
        self.shards = tuple(range(self.world))

    def all_max(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values).copy()

    def all_sum(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values).copy()


def check_agree(ranks: Ranks, what: str, arrays: Callable[[], Mapping[str, np.ndarray]], hint: str = "") -> None:
    """Stop the run when the ranks hold different ``arrays()`` (weights, masks, codes): one
    MAX all-reduce of their digest (:func:`lwdsl.semantics.shards.digest`), issued on every
    rank; nothing (``arrays`` not even called) in one process.

    Raises:
        RunError: on every rank, when any rank's digest differs.
    """
    if ranks.processes <= 1:
        return
    if not agreed(ranks.all_max(agree_words(digest(arrays())))):
        raise RunError(
            f"{what}: the {ranks.world} workers hold different weights, masks or codes (their digests differ); "
            "the run is stopped rather than continued from models that disagree",
            hint=hint or "every rank must start from the same checkpoint and data; run again, and report it if it repeats",
        )
