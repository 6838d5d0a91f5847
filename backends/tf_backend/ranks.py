"""This backend's ranks: TensorFlow's collective ops between the workers ``TF_CONFIG`` names
(``MultiWorkerMirroredStrategy``'s cluster, the model not built under its scope), for the
core's :class:`lwdsl.backend.ranks.Ranks`. How the cluster comes up, the bounded join
(:func:`lwdsl.backend.tfconfig.wait_for_peers`, a watchdog) and which collectives are issued:
docs/semantics.md ("Several workers"). Nothing here decides a number or a flow."""

from __future__ import annotations

import os
import pickle
from typing import Any, Callable, Sequence

import numpy as np

from lwdsl.backend.ranks import Ranks
from lwdsl.errors import RunError, UsageError
from lwdsl.backend.tfconfig import start_watchdog, wait_for_peers, world_from_tf_config

from ._tf import tf

__all__ = ["TFRanks", "COLLECTIVES"]

#: What the lock file says of the collectives.
COLLECTIVES = "tensorflow collective ops (MultiWorkerMirroredStrategy cluster, ring, CPU)"

#: The collective group every lwdsl collective uses (the strategy's own start at 1).
GROUP_KEY = 0x1D51

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
        watchdog = start_watchdog(
            self.timeout, f"error: worker {self.rank} of {self.world}: TensorFlow's cluster ({', '.join(self.addresses[:4])}) did "
            f"not start within {self.timeout:g} s; this worker is stopped\n  hint: a worker stopped while joining; start them "
            "all again (the wait is LWDSL_DIST_TIMEOUT seconds)")
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
