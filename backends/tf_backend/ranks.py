"""This backend's ranks: TensorFlow's collective ops between the workers ``TF_CONFIG`` names,
for the core's :class:`lwdsl.backend.ranks.Ranks`.

The cluster is brought up by ``tf.distribute.MultiWorkerMirroredStrategy`` (its gRPC server,
TensorFlow's coordination service and its heartbeats, the collective executor), with
``CommunicationImplementation.RING`` and the collectives' timeout set. The model is **not**
built under the strategy's scope: every worker keeps its own ordinary Keras variables (there is
no ``MirroredVariable``, so nothing is ever averaged across replicas: a binary mask stays a
``tf.bool`` variable on each worker), and the core's loop issues the few collectives itself, as
on torch: a SUM of the flat gradient buffer, SUM/MAX of small vectors, a broadcast from rank 0
and a gather of small objects (``CollectiveReduceV2``, ``CollectiveBcastSendV2``/``RecvV2``,
``CollectiveGatherV2``, on the CPU; one group, an instance key counted identically on every
worker, since every worker issues the same collectives in the same order).

Joining is bounded: TensorFlow itself waits without end for a worker that never starts (its
wait holds Python's lock, so no thread of ours can stop it). So, before TensorFlow's cluster
starts, each worker listens on its own ``TF_CONFIG`` port and waits (pure Python) until it can
reach every other worker's port, for at most the timeout (``LWDSL_DIST_TIMEOUT``, default 1800
s): past it, a ``UsageError`` (exit 2) names the workers that never came. A small watchdog
process then guards the strategy's start and the first collective, for the same time: past it
the worker is told why on stderr and killed (a worker dying between the two waits).

Nothing here decides a number or a flow: which examples a rank takes, when a collective is
issued and what it sums are the core's (:mod:`lwdsl.semantics.shards`,
:func:`lwdsl.backend.fit.fit`, :mod:`lwdsl.runner.ranks`).
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from lwdsl.backend.ranks import Ranks
from lwdsl.errors import RunError, UsageError
from lwdsl.backend.tfconfig import TFWorld, launch_local, world_from_tf_config

from ._tf import tf

__all__ = ["TFRanks", "launch", "COLLECTIVES"]

#: What the lock file says of the collectives.
COLLECTIVES = "tensorflow collective ops (MultiWorkerMirroredStrategy cluster, ring, CPU)"

#: The collective group every lwdsl collective uses (the strategy's own start at 1).
GROUP_KEY = 0x1D51

_WATCHDOG = r"""
import os, signal, sys, time
pid, wait, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
end = time.monotonic() + wait
while time.monotonic() < end:
    time.sleep(min(0.5, max(0.0, end - time.monotonic())))
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(0)
sys.stderr.write(message + "\n")
sys.stderr.flush()
try:
    os.kill(pid, signal.SIGKILL)
except OSError:
    pass
"""


def _reach(address: str, timeout: float) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_peers(world: TFWorld, timeout_s: float) -> None:
    """Listen on this worker's port and wait until every other worker's port answers.

    Raises:
        UsageError: this worker's port is taken, or a worker did not answer within ``timeout_s``.
    """
    mine = world.addresses[world.rank]
    port = int(mine.rpartition(":")[2])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            listener.bind(("", port))
        except OSError as exc:
            raise UsageError(f"worker {world.rank} of {world.world}: its port {port} ({mine} in TF_CONFIG) is taken ({exc.strerror})",
                             hint="give this worker a free port in TF_CONFIG (the same cluster list on every worker)") from None
        listener.listen(64)
        waiting = [a for r, a in enumerate(world.addresses) if r != world.rank]
        end = time.monotonic() + timeout_s
        while waiting:
            waiting = [a for a in waiting if not _reach(a, 1.0)]
            if waiting and time.monotonic() > end:
                raise UsageError(
                    f"worker {world.rank} of {world.world}: {len(waiting)} worker(s) never joined within {timeout_s:g} s "
                    f"(nothing answers at {', '.join(waiting[:4])}{' ...' if len(waiting) > 4 else ''})",
                    hint="start every worker TF_CONFIG lists, each with its own task index; the wait is "
                         "LWDSL_DIST_TIMEOUT seconds")
            if waiting:
                time.sleep(0.2)
    finally:
        listener.close()


class TFRanks(Ranks):
    """The workers of ``TF_CONFIG``, joined through ``MultiWorkerMirroredStrategy``'s cluster.
    One join per process: TensorFlow configures its collectives once, before it first runs."""

    def __init__(self, rank: int, world: int, device: str, timeout_s: float) -> None:
        tfw = world_from_tf_config(os.environ)
        if tfw is None:
            raise UsageError(f"rank {rank} of {world}: the tensorflow backend joins the other workers through TF_CONFIG, "
                             "which is not set", hint="start the workers with lwdsl run --backend tensorflow --workers N, "
                             "or set TF_CONFIG on each worker (docs/scaling.md)")
        if (tfw.rank, tfw.world) != (int(rank), int(world)):
            raise UsageError(f"TF_CONFIG makes this worker rank {tfw.rank} of {tfw.world}, the environment says {rank} of {world}",
                             hint="unset RANK and WORLD_SIZE: TF_CONFIG alone says who is who on tensorflow")
        self.rank, self.world, self.processes, self.shards = int(rank), int(world), int(world), (int(rank),)
        self.device, self.timeout = device, float(timeout_s)
        self.backend = COLLECTIVES
        self.addresses = tfw.addresses
        self._instance = 0
        if tf.executing_eagerly() and _context_started():
            raise UsageError("TensorFlow has already started in this process: a worker joins the others before it first runs",
                             hint="run each worker as its own process (lwdsl run --workers N, or one command per TF_CONFIG)")
        wait_for_peers(tfw, self.timeout)
        watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.timeout),
             f"error: worker {self.rank} of {self.world}: TensorFlow's cluster ({', '.join(self.addresses[:4])}) did not start "
             f"within {self.timeout:g} s; this worker is stopped\n  hint: a worker stopped while joining; start them all again "
             "(the wait is LWDSL_DIST_TIMEOUT seconds)"],
            stdin=subprocess.DEVNULL)
        try:
            options = tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.RING, timeout_seconds=self.timeout)
            self.strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
            self.all_max(np.zeros(1, np.int64))  # every worker is in: the first collective returned
        finally:
            watchdog.kill()
            watchdog.wait()

    def _key(self) -> int:
        self._instance += 1
        return self._instance

    def _collective(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            with tf.device("/CPU:0"):
                return call()
        except tf.errors.OpError as exc:  # a worker gone, or the timeout
            first = (exc.message or str(exc)).strip().splitlines()[0][:300]
            raise RunError(f"worker {self.rank} of {self.world}: a {what} with the other workers failed: {first}",
                           hint="another worker stopped (its own error says why) or was slower than LWDSL_DIST_TIMEOUT "
                                f"({self.timeout:g} s)") from None

    def _reduce(self, t: Any, op: str) -> Any:
        return self._collective("sum" if op == "Add" else "max", lambda: tf.raw_ops.CollectiveReduceV2(
            input=t, group_size=self.world, group_key=GROUP_KEY, instance_key=self._key(), ordering_token=[],
            merge_op=op, final_op="Id", communication_hint="ring", timeout_seconds=self.timeout))

    def all_max(self, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values)
        return self._reduce(tf.constant(v), "Max").numpy().astype(v.dtype, copy=False)

    def all_sum(self, values: np.ndarray) -> np.ndarray:
        return self._reduce(tf.constant(np.asarray(values, dtype=np.float64)), "Add").numpy()

    def all_sum_native(self, buffer: Any) -> None:
        """``buffer`` (a ``tf.Variable``) becomes its sum over the workers."""
        buffer.assign(self._reduce(buffer.read_value(), "Add"))

    def broadcast_native(self, tensors: Sequence[Any]) -> None:
        """Each ``tf.Variable`` of ``tensors`` (floating point) becomes rank 0's."""
        for v in tensors:
            if not v.dtype.is_floating:
                continue
            key = self._key()
            if self.rank == 0:
                self._collective("broadcast", lambda: tf.raw_ops.CollectiveBcastSendV2(
                    input=v.read_value(), group_size=self.world, group_key=GROUP_KEY, instance_key=key,
                    communication_hint="ring", timeout_seconds=self.timeout))
            else:
                v.assign(self._collective("broadcast", lambda: tf.raw_ops.CollectiveBcastRecvV2(
                    group_size=self.world, group_key=GROUP_KEY, instance_key=key, shape=v.shape, T=v.dtype,
                    communication_hint="ring", timeout_seconds=self.timeout)))

    def gather(self, obj: Any) -> list[Any]:
        raw = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        longest = int(self.all_max(np.array([len(raw)], np.int64))[0])
        row = np.zeros(longest + 1, np.int32)
        row[0], row[1 : len(raw) + 1] = len(raw), raw
        rows = self._collective("gather", lambda: tf.raw_ops.CollectiveGatherV2(
            input=tf.constant(row[None]), group_size=self.world, group_key=GROUP_KEY, instance_key=self._key(),
            ordering_token=[], communication_hint="ring", timeout_seconds=self.timeout)).numpy()
        return [pickle.loads(r[1 : 1 + r[0]].astype(np.uint8).tobytes()) for r in rows]

    def close(self) -> None:
        """Nothing: TensorFlow leaves its cluster when the process ends (one join per process)."""


def _context_started() -> bool:
    from tensorflow.python.eager import context

    return context.context()._context_handle is not None  # noqa: SLF001 - no public "already initialised?"


def launch(workers: int, entry: Callable[..., Any], args: tuple[Any, ...], timeout_s: float, max_restarts: int = 0) -> dict[int, int]:
    """``workers`` processes on localhost, each with its own ``TF_CONFIG``, the group restarted
    up to ``max_restarts`` times when a worker fails (:func:`lwdsl.backend.tfconfig.launch_local`;
    ``lwdsl run`` calls that without importing TensorFlow)."""
    return launch_local(workers, entry, args, timeout_s, max_restarts=max_restarts)
