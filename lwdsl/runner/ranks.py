"""A run on several processes: who this process is, starting the workers, what the lock file
says of them.

Two ways in, one run:

- ``lwdsl run RECIPE --workers N`` starts N processes on this machine through the backend's
  own launcher (torch: the elastic agent ``torchrun`` runs, a c10d rendezvous on localhost);
  this process holds the run folder's lock while they run and exits with their exit code;
- a launcher the user runs (``torchrun --nproc-per-node 8 --nnodes 4 --rdzv-endpoint HOST:PORT
  -m lwdsl run ...``) starts ``lwdsl run`` in each process with ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``) in the environment: read here;
- tensorflow: each worker started with its own ``TF_CONFIG`` (by the user, one command per
  worker, or by ``lwdsl run --backend tensorflow --workers N`` on localhost:
  :mod:`lwdsl.backend.tfconfig`); ``RANK``/``WORLD_SIZE``, when set, win.

Every rank runs the same run (the same recipe, model, data, seed), trains its shards of every
global batch (:mod:`lwdsl.semantics.shards`) and computes every mask, code and calibration
itself, from the same weights. Only rank 0 writes: the run folder, report, lock file, resume
points, the baseline cache, progress and the table; the others print nothing but their own
failures. Joining the others waits :func:`join_timeout_s` at most (``--rdzv-timeout`` or
``LWDSL_RDZV_TIMEOUT``, default 600 s: a rendezvous that never completes is a UsageError, exit
2); collectives then wait :func:`timeout_s` (``LWDSL_DIST_TIMEOUT``, default 1800 s) for the
slowest rank, rank 0's measurements included.

A worker that fails (a crash, a SIGKILL, a lost machine) stops the run, unless the launcher
restarts the group (``lwdsl run --workers N --max-restarts M``, ``torchrun --max-restarts M``):
then each restarted worker sees ``TORCHELASTIC_RESTART_COUNT`` (torch) or ``LWDSL_RESTART_COUNT``
(tensorflow: :func:`lwdsl.backend.tfconfig.launch_local`) > 0 (:attr:`WorldEnv.restarts`) and the
run resumes by itself from its last point (:mod:`lwdsl.runner.resume`). When the restarts are
spent, :func:`failure_message` says so, the same words for both.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from ..backend.tfconfig import RESTART_COUNT as TF_RESTART_COUNT
from ..errors import UsageError

__all__ = ["WorldEnv", "world_from_env", "timeout_s", "join_timeout_s", "RDZV_TIMEOUT", "check_workers_backend", "launch_workers",
           "failure_message", "world_record", "LAUNCHED", "RESTART_COUNTS"]

#: Set by ``lwdsl run --workers N`` in the environment of the processes it starts (the parent
#: holds the run folder's lock; rank 0 does not take it again).
LAUNCHED = "LWDSL_WORKERS"

#: Where a launcher says how many times it restarted the group: torch's elastic agent, and
#: lwdsl's own tensorflow launcher (:data:`lwdsl.backend.tfconfig.RESTART_COUNT`).
RESTART_COUNTS = ("TORCHELASTIC_RESTART_COUNT", TF_RESTART_COUNT)

#: Seconds a collective waits for the slowest rank, unless LWDSL_DIST_TIMEOUT says.
DEFAULT_TIMEOUT_S = 1800.0

#: The variable that says how long joining the other ranks may take (``--rdzv-timeout`` sets it
#: for the workers it starts), and its default: torchrun's own rendezvous default (600 s).
RDZV_TIMEOUT = "LWDSL_RDZV_TIMEOUT"
DEFAULT_JOIN_S = 600.0


@dataclass(frozen=True)
class WorldEnv:
    """This process's place among the ranks, as its launcher's environment gives it."""

    rank: int
    world: int
    local_rank: int
    local_world: int
    launcher: str  # "lwdsl run --workers", "torchrun" (torch's elastic agent), "TF_CONFIG" or "environment"
    restarts: int = 0  # how many times the launcher restarted the group (TORCHELASTIC_RESTART_COUNT, LWDSL_RESTART_COUNT)

    @property
    def launched_by_lwdsl(self) -> bool:
        return self.launcher == "lwdsl run --workers"


def _int(env: Mapping[str, str], name: str, default: Optional[int] = None) -> int:
    raw = env.get(name)
    if raw is None:
        if default is None:
            raise UsageError(f"WORLD_SIZE is set but {name} is not: a launcher sets both",
                             hint="start the workers with torchrun (or lwdsl run --workers N), or unset WORLD_SIZE")
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} in the environment is not a whole number", hint="a launcher sets it; unset it to run one process") from None


def world_from_env(env: Optional[Mapping[str, str]] = None) -> Optional[WorldEnv]:
    """The launcher's word on this process (None when no launcher started it: no ``WORLD_SIZE``).

    Raises:
        UsageError: the variables are not whole numbers, or the rank is not in the world.
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return _world_from_tf_config(env)
    world, rank = _int(env, "WORLD_SIZE"), _int(env, "RANK")
    local_rank = _int(env, "LOCAL_RANK", 0)
    local_world = _int(env, "LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"RANK={rank} and WORLD_SIZE={world} in the environment: a rank is from 0 to WORLD_SIZE - 1")
    launcher = ("lwdsl run --workers" if env.get(LAUNCHED) else "torchrun" if env.get("TORCHELASTIC_RUN_ID") else "environment")
    restarts = max((_int(env, name, 0) for name in RESTART_COUNTS if env.get(name)), default=0)
    return WorldEnv(rank, world, local_rank, max(1, local_world), launcher, max(0, restarts))


def _world_from_tf_config(env: Mapping[str, str]) -> Optional[WorldEnv]:
    """A worker started with ``TF_CONFIG`` alone (TensorFlow's way; no ``WORLD_SIZE``): its rank
    is its task's place in the cluster (:func:`lwdsl.backend.tfconfig.parse_tf_config`); None
    without ``TF_CONFIG`` or with a cluster of one."""
    from ..backend.tfconfig import world_from_tf_config

    tfw = world_from_tf_config(env)
    if tfw is None or tfw.world < 2:
        return None
    local_rank, local_world = tfw.local
    return WorldEnv(tfw.rank, tfw.world, local_rank, local_world, "TF_CONFIG")


def timeout_s(env: Optional[Mapping[str, str]] = None) -> float:
    """How long a collective waits for the slowest rank: ``LWDSL_DIST_TIMEOUT`` seconds, default 1800."""
    return _seconds(env, "LWDSL_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)


def join_timeout_s(env: Optional[Mapping[str, str]] = None) -> float:
    """How long joining the other ranks may take: ``LWDSL_RDZV_TIMEOUT`` seconds (set by
    ``--rdzv-timeout``), default 600."""
    return _seconds(env, RDZV_TIMEOUT, DEFAULT_JOIN_S)


def _seconds(env: Optional[Mapping[str, str]], name: str, default: float) -> float:
    raw = (os.environ if env is None else env).get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise UsageError(f"{name}={raw!r} is not a positive number of seconds")
    return value


def check_workers_backend(backend: str, workers: int) -> None:
    """Refuse ``--workers N`` (N > 1) on a backend whose support table says it trains on one
    process only, from the table alone (no framework imported)."""
    if workers <= 1:
        return
    from ..backend.registry import support_table

    table = support_table(backend)
    if table is not None and not table.workers:
        raise UsageError(f"--workers {workers}: the {backend} backend cannot train on several workers yet "
                         "(torch and tensorflow can)",
                         hint=f"run with --backend torch --workers {workers}, or without --workers on {backend}")


def launch_workers(backend: str, workers: int, entry: Callable[..., Any], args: tuple[Any, ...], max_restarts: int = 0,
                   say: Optional[Callable[[str], None]] = None) -> int:
    """Run ``entry(*args)`` in ``workers`` processes through ``backend``'s launcher, which
    restarts the group up to ``max_restarts`` times when a worker fails; the exit code of the
    run: 0, or rank 0's failure (another rank's when rank 0 did not fail; a signal ``s`` is
    ``128 + s``). What the workers could not say themselves (a worker killed by a signal, the
    restarts spent) is given to ``say`` (:func:`failure_message`)."""
    before = os.environ.get(LAUNCHED)
    os.environ[LAUNCHED] = str(workers)
    try:
        failed = _launcher(backend)(workers, entry, args, timeout_s(), max_restarts=max_restarts, join_s=join_timeout_s())
    finally:
        if before is None:
            os.environ.pop(LAUNCHED, None)
        else:
            os.environ[LAUNCHED] = before
    if not failed:
        return 0
    failed = {r: 128 - c if c < 0 else c for r, c in failed.items()}  # torch's agent gives a signal as -s
    code = failed.get(0) or next((c for _, c in sorted(failed.items()) if c), 1)
    message = failure_message(failed, workers, max_restarts)
    if message and say is not None and code not in (130, 143):  # Ctrl-C and SIGTERM are said by the caller
        say(message)
    return code


def failure_message(failed: Mapping[int, int], workers: int, max_restarts: int) -> Optional[str]:
    """What a failed group of ``workers`` says once its launcher gave up (``failed``: rank ->
    exit code, a signal ``s`` as ``128 + s``): the workers a signal stopped (they could say
    nothing) and, with ``--max-restarts``, that the restarts are spent; the same words for every
    backend's launcher. None when each worker said its own error and no restart was asked.

    >>> print(failure_message({1: 137}, 2, 1))
    error: worker 1 of 2 was killed (SIGKILL); the group was restarted 1 time (--max-restarts 1) and failed again: the run stopped
      hint: continue it from its last point with --resume (on any number of workers), or allow more restarts
    """
    import signal

    from ..errors import RunError

    killed = []
    for rank, code in sorted(failed.items()):
        if code > 128:
            try:
                name = signal.Signals(code - 128).name
            except ValueError:
                name = f"signal {code - 128}"
            killed.append(f"worker {rank} of {workers} was killed ({name})")
    if not killed and not max_restarts:
        return None
    what = "; ".join(killed) if killed else f"worker {min(failed)} of {workers} failed (exit {failed[min(failed)]})"
    if max_restarts:
        times = "time" if max_restarts == 1 else "times"
        what += f"; the group was restarted {max_restarts} {times} (--max-restarts {max_restarts}) and failed again: the run stopped"
        hint = "continue it from its last point with --resume (on any number of workers), or allow more restarts"
    else:
        what += ": the run stopped"
        hint = ("continue it from its last point with --resume (on any number of workers); --max-restarts N restarts the "
                "group by itself")
    return RunError(what, hint=hint).render()


def _launcher(backend: str) -> Callable[..., dict[int, int]]:
    """The backend's launcher. TensorFlow's is framework-free (:func:`lwdsl.backend.tfconfig.launch_local`:
    processes with a ``TF_CONFIG`` each), called without importing TensorFlow here: this process
    only waits, and TensorFlow would cost it 4 s and 0.7 GB."""
    from ..backend.registry import ALIASES

    if ALIASES.get(backend, backend) == "tensorflow":
        from ..backend.tfconfig import launch_local

        return launch_local
    from ..backend import get_backend

    return get_backend(backend).launch


def world_record(ranks: Any, env: WorldEnv, device: Mapping[str, str]) -> dict[str, Any]:
    """What the lock file and report say of the ranks (one gather, on every rank): size,
    launcher, collectives, the shard rule, and each rank's host and device."""
    mine = {"host": socket.gethostname(), "local_rank": env.local_rank, **dict(device)}
    everyone = ranks.gather(mine)
    return {
        "size": ranks.world,
        "launcher": env.launcher,
        "collectives": getattr(ranks, "backend", "none"),
        "shards": "contiguous shards of each global batch in rank order (lwdsl.semantics.shards)",
        "ranks": [{"rank": r, **info} for r, info in enumerate(everyone)],
    }
