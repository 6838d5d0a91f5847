"""This backend's ranks: ``torch.distributed`` collectives (gloo on the CPU, NCCL on CUDA) for
the core's :class:`lwdsl.backend.ranks.Ranks`, and torch's elastic launcher for
``lwdsl run --workers N`` (the same agent ``torchrun`` runs).

Nothing here decides a number or a flow: which examples a rank takes, when a collective is
issued and what it sums are the core's (:mod:`lwdsl.semantics.shards`,
:func:`lwdsl.backend.fit.fit`, :mod:`lwdsl.runner.ranks`).
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import timedelta
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from lwdsl.backend.ranks import Ranks
from lwdsl.errors import UsageError

__all__ = ["TorchRanks", "launch"]


class TorchRanks(Ranks):
    """The default process group, joined from the launcher's environment (``env://``:
    ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``). A group the caller already
    joined (a script of the user's under torchrun) is used as it is and left open.

    Joining waits ``join_s`` seconds at most for all ``world`` ranks (the ``env://``
    rendezvous: rank 0's store waits for the others to connect, they retry until it is
    there), then raises UsageError; every collective afterwards waits ``timeout_s``."""

    def __init__(self, rank: int, world: int, device: str, timeout_s: float, join_s: Optional[float] = None) -> None:
        self.rank, self.world, self.processes, self.shards = int(rank), int(world), int(world), (int(rank),)
        self.device = torch.device(device)
        self.backend = "nccl" if self.device.type == "cuda" else "gloo"
        self.own = not dist.is_initialized()
        if self.own:
            join = float(timeout_s if join_s is None else join_s)
            try:
                store, _, _ = next(dist.rendezvous("env://", rank=self.rank, world_size=self.world, timeout=timedelta(seconds=join)))
                store.set_timeout(timedelta(seconds=timeout_s))
                # torch's elastic agent keeps its store across restarts of the group: the keys of each
                # attempt apart, or a restarted rank reads the address of a worker that is gone
                attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
                prefix = "default_pg" if attempt in ("", "0") else f"default_pg-attempt-{attempt}"  # torch's own on the first
                dist.init_process_group(self.backend, store=dist.PrefixStore(prefix, store), rank=self.rank,
                                        world_size=self.world, timeout=timedelta(seconds=timeout_s))
            except (RuntimeError, ValueError) as exc:  # a rendezvous that never completed, a bad address
                raise UsageError(f"rank {rank} of {world} could not join the others ({self.backend}) within {join:g} s: "
                                 f"{str(exc).splitlines()[0][:300]}",
                                 hint=f"check MASTER_ADDR/MASTER_PORT and that all {world} workers start; the wait is "
                                      f"{join:g} s (--rdzv-timeout or LWDSL_RDZV_TIMEOUT)") from None
        else:
            self.backend = dist.get_backend()
            if dist.get_rank() != self.rank or dist.get_world_size() != self.world:
                raise UsageError(f"the process group already joined is rank {dist.get_rank()} of {dist.get_world_size()}, "
                                 f"the environment says {self.rank} of {self.world}")

    def _reduce(self, values: np.ndarray, op: Any) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(values)).to(self.device)
        dist.all_reduce(t, op=op)
        return t.cpu().numpy()

    def all_max(self, values: np.ndarray) -> np.ndarray:
        return self._reduce(np.asarray(values), dist.ReduceOp.MAX)

    def all_sum(self, values: np.ndarray) -> np.ndarray:
        return self._reduce(np.asarray(values, dtype=np.float64), dist.ReduceOp.SUM)

    def all_sum_native(self, buffer: torch.Tensor) -> None:
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)

    def broadcast_native(self, tensors: Sequence[torch.Tensor]) -> None:
        for t in tensors:
            dist.broadcast(t, src=0)

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.own and dist.is_initialized():
            dist.destroy_process_group()


def launch(workers: int, entry: Callable[..., Any], args: tuple[Any, ...], timeout_s: float, max_restarts: int = 0,
           join_s: Optional[float] = None) -> dict[int, int]:
    """Run ``entry(*args)`` in ``workers`` processes on this machine through torch's elastic
    agent (``torch.distributed.launcher.api.elastic_launch``: a c10d rendezvous on localhost
    that waits ``join_s`` seconds at most, up to ``max_restarts`` restarts of the whole group
    when a worker fails (each restarted worker sees ``TORCHELASTIC_RESTART_COUNT``), spawned
    processes, their output not redirected, no log folder). Returns each failed local rank's
    exit code (empty when all succeeded); a signal that stopped the agent (Ctrl-C, SIGTERM) is
    rank 0's ``128 + signal``."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in list(logging.root.manager.loggerDict):  # the agent's own log lines (each module sets its level)
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=int(workers), run_id=f"lwdsl-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0",
        rdzv_configs={"timeout": int(timeout_s), "join_timeout": max(1, int(join_s if join_s is not None else timeout_s))},
        max_restarts=int(max_restarts), monitor_interval=0.1, start_method="spawn", logs_specs=DefaultLogsSpecs(log_dir=os.devnull),
    )
    try:
        elastic_launch(config, entry)(*args)
    except ChildFailedError as exc:
        return {int(f.local_rank): int(f.exitcode) for f in exc.failures.values()}
    except SignalException as exc:  # Ctrl-C or SIGTERM here: the agent has stopped the workers
        return {0: 128 + int(exc.sigval)}
    return {}
