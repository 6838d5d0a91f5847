"""How many threads a run trains, evaluates and calibrates with.

The default is the CPUs this process may use, not the machine's core count: the CPUs of its
affinity mask (``taskset``, a container's cpuset), and no more than its CPU quota allows (a
container's ``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in v1),
rounded down, at least 1. On a shared machine, more threads than that are slower, not faster.

And how idle threads wait (:func:`quiet_openmp`): torch's CPU kernels run on GNU OpenMP, whose
threads spin between parallel regions. When the machine's cores are busy with other work, a
spinning thread takes the core its partner needs: a LeNet-5 training step with 2 threads on 2
cores at a load of 5-7 took 253-795 ms spinning against 24-38 ms with ``OMP_WAIT_POLICY=PASSIVE``
(idle threads sleep), measured side by side. lwdsl sets PASSIVE with a short spin
(``GOMP_SPINCOUNT=10000``, which keeps the idle machine's speed) unless the user chose.

:func:`quiet_logs` keeps a framework's notices (its loggers, Python warnings) out of a run's output.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Iterator, Optional

__all__ = ["usable_cpus", "cgroup_quota", "quiet_openmp", "cpu_model", "cpu_flags", "check_device", "quiet_logs"]

_CGROUP = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = _CGROUP) -> Optional[float]:
    """The CPUs the process's cgroup quota allows (``2.5`` for 250 ms per 100 ms), or None when
    there is no quota (or no cgroup file to read)."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, _, period = v2.read_text().strip().partition(" ")
            return None if quota == "max" else int(quota) / int(period or 100_000)
        quota_file, period_file = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if quota_file.is_file() and period_file.is_file():
            quota_us = int(quota_file.read_text().strip())
            return None if quota_us <= 0 else quota_us / int(period_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return None


def usable_cpus(root: Path = _CGROUP) -> int:
    """The CPUs this process may use: its affinity mask, capped by its cgroup quota; >= 1.

    >>> usable_cpus() >= 1
    True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_quota(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def _openmp_loaded() -> bool:
    """True when an OpenMP runtime is mapped into this process already (it read its settings)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            return any(("libgomp" in line or "libiomp" in line or "libomp" in line) for line in f)
    except OSError:  # not Linux: judge by torch having been imported
        import sys

        return "torch" in sys.modules


#: How long an idle OpenMP thread spins before it sleeps (GNU OpenMP counts loop iterations:
#: about 10 microseconds here). Measured on a 2-core Xeon (bench/train_loop_bench.py, LeNet-5, 2
#: threads): idle, 0.87 s an epoch of 6,400 images against 0.99 s with OpenMP's default and 1.27 s
#: with PASSIVE alone; beside two other torch jobs, 2.46 s against 18.82 s and 2.16 s.
SPINCOUNT = "10000"
_SET_HERE: list[bool] = []  # True once this process set them (not the user)


def quiet_openmp() -> str:
    """Make OpenMP's idle threads spin briefly, then sleep (``OMP_WAIT_POLICY=PASSIVE``,
    ``GOMP_SPINCOUNT=10000``) unless the user set either or a runtime has read its settings
    already; says which, for the report."""
    mine = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": SPINCOUNT}
    said = f"OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT={SPINCOUNT} (lwdsl's default: idle threads spin briefly, then sleep)"
    if _SET_HERE and all(os.environ.get(k) == v for k, v in mine.items()):
        return said  # set by an earlier call in this process (the command line, then the run)
    theirs = [f"{k}={os.environ[k]}" for k in mine if k in os.environ]
    if theirs:
        return f"{' '.join(theirs)} (set by the user)"
    if _openmp_loaded():
        return "the OpenMP runtime's default (it was loaded before lwdsl could set OMP_WAIT_POLICY)"
    os.environ.update(mine)
    _SET_HERE.append(True)
    return said


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``, else :func:`platform.processor`)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``'s first ``flags`` line; empty where there is
    none to read, e.g. not on Linux)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def check_device(device: str) -> str:
    """``device`` if it is a device name lwdsl knows (``auto``, ``cpu``, ``cuda``, ``cuda:N``,
    ``mps``), else a UsageError listing them."""
    import re

    from ..errors import UsageError, did_you_mean

    if re.fullmatch(r"auto|cpu|cuda|cuda:\d+|mps", device or ""):
        return device
    near = did_you_mean(device, ["auto", "cpu", "cuda", "mps"])
    raise UsageError(f"--device {device!r} is not a device", hint=(f"did you mean '{near}'? " if near else "")
                     + "give auto, cpu, cuda, cuda:N or mps")


@contextlib.contextmanager
def quiet_logs(*names: str) -> Iterator[None]:
    """The loggers ``names`` at ERROR and Python warnings ignored inside the block, as they were after it."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
