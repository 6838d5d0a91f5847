"""TensorFlow's way of naming the workers of a run, ``TF_CONFIG``, read and written without
TensorFlow: this process's place among the workers, and ``lwdsl run --backend tensorflow
--workers N`` starting N workers on this machine.

``TF_CONFIG`` is JSON: ``{"cluster": {"worker": ["host0:port", "host1:port", ...]}, "task":
{"type": "worker", "index": i}}`` (a ``"chief"`` job of one task may come first: it is rank 0
and the workers follow it, TensorFlow's own order). The rank is the task's place in that order,
the world the number of tasks. Every worker of a run must be given the same ``cluster`` and its
own ``task``; what TensorFlow would only find out by hanging (an address listed twice, an index
out of range) is refused here, before any work, exit 2.

The launcher (:func:`launch_local`) picks a free port on localhost per worker, writes each
worker's ``TF_CONFIG`` (and ``RANK``/``WORLD_SIZE``, which :func:`lwdsl.runner.ranks.world_from_env`
reads), starts the workers as fresh processes (``spawn``: TensorFlow must start in each) and
waits for them. When one fails, the others are given :data:`GRACE_S` seconds to stop on their
own (TensorFlow's heartbeat aborts their collectives), then killed: TensorFlow traps SIGTERM
once its cluster is up, so only SIGKILL stops a worker stuck in a collective. With
``max_restarts`` (``lwdsl run --max-restarts M``) a failed group is killed at once and started
again, up to M times, each worker told the restart's number (:data:`RESTART_COUNT`): it
resumes from the run's last point by itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Optional

from ..errors import UsageError

__all__ = ["TFWorld", "parse_tf_config", "world_from_tf_config", "wait_for_peers", "start_watchdog", "launch_local", "GRACE_S", "RESTART_COUNT"]

#: Seconds the other workers get to stop by themselves after one failed, when the group is not
#: restarted (then SIGKILL).
GRACE_S = 20.0

#: How many times :func:`launch_local` restarted the group, in each worker's environment (0 on
#: the first start): torch's elastic agent says it with ``TORCHELASTIC_RESTART_COUNT``;
#: :func:`lwdsl.runner.ranks.world_from_env` reads either.
RESTART_COUNT = "LWDSL_RESTART_COUNT"

_HINT = ('TF_CONFIG is JSON: {"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}, '
         "the same cluster on every worker and each its own index")


class TFWorld:
    """What ``TF_CONFIG`` says: every task's address in rank order, and this task's rank."""

    def __init__(self, addresses: list[str], rank: int, job: str, index: int) -> None:
        self.addresses, self.rank, self.job, self.index = addresses, rank, job, index

    @property
    def world(self) -> int:
        return len(self.addresses)

    @property
    def local(self) -> tuple[int, int]:
        """(this task's place among the tasks on its host, how many tasks share its host)."""
        host = _host(self.addresses[self.rank])
        same = [r for r, a in enumerate(self.addresses) if _host(a) == host]
        return same.index(self.rank), len(same)


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0]


def parse_tf_config(raw: str) -> TFWorld:
    """The workers ``TF_CONFIG`` names and this one's rank.

    Raises:
        UsageError: not JSON, no ``cluster``/``task``, a job other than chief/worker, more than
            one chief, an index out of range, an address that is not ``host:port`` or that is
            listed twice.

    >>> w = parse_tf_config('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}')
    >>> (w.rank, w.world, w.local)
    (1, 2, (0, 1))
    """
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"TF_CONFIG is not valid JSON ({exc})", hint=_HINT) from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) or not isinstance(config.get("task"), dict):
        raise UsageError("TF_CONFIG needs a \"cluster\" and a \"task\" object", hint=_HINT)
    cluster, task = config["cluster"], config["task"]
    jobs = {k: v for k, v in cluster.items() if v}
    unknown = sorted(set(jobs) - {"chief", "worker"})
    if unknown:
        raise UsageError(f"TF_CONFIG names a {unknown[0]!r} job: lwdsl trains on 'worker' tasks (and at most one 'chief')",
                         hint="parameter servers and evaluators are not used; list every training process under \"worker\"")
    lists = {}
    for job in ("chief", "worker"):
        entries = jobs.get(job, [])
        if not isinstance(entries, list) or not all(isinstance(a, str) for a in entries):
            raise UsageError(f"TF_CONFIG's cluster {job!r} must be a list of \"host:port\" strings", hint=_HINT)
        lists[job] = entries
    if len(lists["chief"]) > 1:
        raise UsageError(f"TF_CONFIG names {len(lists['chief'])} chiefs: there is at most one", hint=_HINT)
    addresses = lists["chief"] + lists["worker"]
    if not addresses:
        raise UsageError("TF_CONFIG's cluster lists no worker", hint=_HINT)
    for a in addresses:
        host, _, port = a.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"TF_CONFIG lists {a!r}: an address is host:port (a port from 1 to 65535)", hint=_HINT)
    seen: dict[str, int] = {}
    for r, a in enumerate(addresses):
        if a in seen:
            raise UsageError(f"TF_CONFIG names the worker {a} twice (tasks {seen[a]} and {r} of the cluster): two tasks cannot "
                             "share one address", hint="give each worker its own host:port, the same list on every worker")
        seen[a] = r
    job, index = task.get("type"), task.get("index")
    if job not in ("chief", "worker"):
        raise UsageError(f"TF_CONFIG's task type is {job!r}: lwdsl runs 'worker' (or 'chief') tasks", hint=_HINT)
    if isinstance(index, bool) or not isinstance(index, int):
        raise UsageError(f"TF_CONFIG's task index is {index!r}: a whole number", hint=_HINT)
    if not 0 <= index < len(lists[job]):
        raise UsageError(f"TF_CONFIG's task is {job} {index}, but the cluster has {len(lists[job])} {job}(s), "
                         f"numbered from 0", hint=f"give an index from 0 to {len(lists[job]) - 1}, a different one on each worker")
    rank = index if job == "chief" else len(lists["chief"]) + index
    return TFWorld(addresses, rank, job, index)


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


def start_watchdog(wait_s: float, message: str) -> Any:
    """A small process that kills this one after ``wait_s`` seconds, writing ``message`` on
    stderr first (a join TensorFlow holds Python's lock in cannot be bounded from a thread);
    kill it once the wait is over."""
    return subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(wait_s), message], stdin=subprocess.DEVNULL)


def world_from_tf_config(env: Mapping[str, str]) -> Optional[TFWorld]:
    """``TF_CONFIG`` from ``env`` (None when unset or empty)."""
    raw = env.get("TF_CONFIG", "").strip()
    return parse_tf_config(raw) if raw else None


def tf_config(addresses: list[str], rank: int) -> str:
    """The ``TF_CONFIG`` of worker ``rank`` of ``addresses`` (every task a ``worker``)."""
    return json.dumps({"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": int(rank)}})


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on localhost now (held together while picked, then released)."""
    held = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def _worker(environ: dict[str, str], entry: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """A worker process: its environment first (before TensorFlow is imported), then the run."""
    os.environ.update(environ)
    entry(*args)


def launch_local(workers: int, entry: Callable[..., Any], args: tuple[Any, ...], timeout_s: float, max_restarts: int = 0,
                 join_s: Optional[float] = None) -> dict[int, int]:
    """Run ``entry(*args)`` in ``workers`` fresh processes on this machine, worker ``r`` with
    ``TF_CONFIG`` naming ``localhost:PORT_0 .. PORT_{N-1}`` and task ``r`` (and ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, and :data:`RESTART_COUNT`). Returns
    each failed worker's exit code (empty when all succeeded; a signal ``s`` is ``128 + s``; the
    workers this launcher killed after the first failure are not counted);
    Ctrl-C here is ``{0: 130}`` (SIGTERM ``{0: 143}``, passed on to the workers as SIGINT) once
    the workers stopped. ``timeout_s`` is the workers' own: each waits that long for the others
    to join (:class:`lwdsl.backends.tf_backend.ranks.TFRanks`); ``join_s`` is not used.

    When a worker fails (a non-zero exit, a signal) and fewer than ``max_restarts`` restarts
    were made, the others are killed at once (SIGKILL: TensorFlow traps SIGTERM, and they would
    wait in a collective for a worker that is gone) and the whole group starts again: new
    processes, fresh ports, :data:`RESTART_COUNT` one more (the workers resume from the run's
    last point, :mod:`lwdsl.runner.resume`), as torch's elastic agent does. The last attempt's
    failures are returned: the other workers then get :data:`GRACE_S` seconds to stop on their
    own (and say why) before they are killed."""
    attempt = 0
    while True:
        last = attempt >= max_restarts
        failed, stopped = _launch_once(workers, entry, args, attempt, GRACE_S if last else 0.0)
        if not failed or stopped or last:
            return failed
        attempt += 1


def _launch_once(workers: int, entry: Callable[..., Any], args: tuple[Any, ...], attempt: int,
                 grace_s: float) -> tuple[dict[int, int], bool]:
    """One attempt of :func:`launch_local`: (the failed workers' exit codes, whether Ctrl-C or
    SIGTERM stopped it). Once a worker failed, the others get ``grace_s`` seconds, then SIGKILL."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    addresses = [f"localhost:{p}" for p in _free_ports(workers)]
    procs = []
    for r in range(workers):
        environ = {"TF_CONFIG": tf_config(addresses, r), "RANK": str(r), "WORLD_SIZE": str(workers), "LOCAL_RANK": str(r),
                   "LOCAL_WORLD_SIZE": str(workers), RESTART_COUNT: str(attempt)}
        p = ctx.Process(target=_worker, args=(environ, entry, args), name=f"lwdsl-worker-{r}")
        p.start()
        procs.append(p)
    failed: dict[int, int] = {}
    try:
        deadline: Optional[float] = None
        while any(p.is_alive() for p in procs):
            for r, p in enumerate(procs):
                if not p.is_alive() and p.exitcode and r not in failed:
                    failed[r] = _code(p.exitcode)
            if failed and deadline is None:
                deadline = time.monotonic() + grace_s
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    except KeyboardInterrupt as exc:  # Ctrl-C reached the workers too; SIGTERM (lwdsl's Terminated) only this process
        terminated = type(exc).__name__ == "Terminated"
        if terminated:  # tell the workers as Ctrl-C would (TensorFlow traps SIGTERM in them)
            for p in procs:
                if p.is_alive() and p.pid is not None:
                    os.kill(p.pid, signal.SIGINT)
        _stop(procs, GRACE_S)
        return {0: 143 if terminated else 130}, True
    stopped = _stop(procs, 0.0)
    for r, p in enumerate(procs):  # those this launcher killed did not fail: the first failure stopped them (torch's agent alike)
        if p.exitcode and r not in failed and r not in stopped:
            failed[r] = _code(p.exitcode)
    return failed, False


def _code(exitcode: int) -> int:
    return 128 - exitcode if exitcode < 0 else exitcode


def _stop(procs: list[Any], grace_s: float) -> set[int]:
    """Wait ``grace_s`` for ``procs`` to end, then SIGKILL those still running; which it killed."""
    end = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
    killed = set()
    for r, p in enumerate(procs):
        if p.is_alive():
            p.kill()
            p.join()
            killed.add(r)
    return killed
