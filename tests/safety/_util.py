"""What the safety tests share: the CLI in a subprocess with time and memory bounds, snapshots of
a folder tree, and the checks every refusal must pass."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

LWDSL = str(Path(sys.executable).with_name("lwdsl"))
#: No test here trains on real data; a run that starts trains on tiny synthetic data.
TINY = ["--model", "lenet300", "--data", "synthetic:1,8,8:3", "--baseline-epochs", "1"]


def cli_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, LWDSL_CACHE=str(tmp / ".cache-lwdsl"), COLUMNS="80", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env.pop("LWDSL_DATA", None)
    env.update(extra)
    return env


@dataclass
class Done:
    code: int
    out: str
    err: str
    seconds: float
    max_rss_mb: float

    @property
    def text(self) -> str:
        return self.out + self.err


def run_cli(args: list[str], cwd: Path, *, env: Optional[dict] = None, timeout: float = 60, memory_mb: Optional[int] = None) -> Done:
    """``lwdsl ARGS`` in ``cwd``, killed after ``timeout`` s, its address space capped at
    ``memory_mb``; returns its exit code, output, wall time and peak resident memory."""

    def limit() -> None:
        if memory_mb:
            resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen([LWDSL, *args], cwd=cwd, env=env or cli_env(cwd), stdout=out, stderr=err, preexec_fn=limit)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                os.kill(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
                raise AssertionError(f"lwdsl {' '.join(args)[:200]} ran for more than {timeout} s")
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        return Done(proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"), seconds, usage.ru_maxrss / 1024)


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """Every entry under ``root`` (not following links) with its content's hash, its link
    target or ``dir``: equal snapshots mean nothing was added, removed or changed."""
    found = {}
    skipped = {os.path.abspath(p) for p in skip}
    for folder, dirs, files in os.walk(root, followlinks=False):
        # the parser's table cache (lwdsl/language/parser.py) is lwdsl's own, like __pycache__: not an output
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skipped and not (d == "parser" and folder.endswith(".cache-lwdsl"))]
        for name in dirs + files:
            path = os.path.join(folder, name)
            if path in skipped:
                continue
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                found[rel] = "link:" + os.readlink(path)
            elif os.path.isdir(path):
                found[rel] = "dir"
            else:
                with open(path, "rb") as f:
                    found[rel] = hashlib.sha256(f.read()).hexdigest()
    for rel in [k for k, v in found.items() if v == "dir" and os.path.basename(k) == ".cache-lwdsl"]:
        if not any(k.startswith(rel + os.sep) for k in found):  # holds only the parser's tables
            del found[rel]
    return found


def assert_refused(done: Done, *culprits: str, code: int = 2) -> None:
    """The exit code, a message naming each culprit, and no traceback."""
    assert done.code == code, f"exit {done.code}, expected {code}:\n{done.text[-2000:]}"
    assert "Traceback" not in done.text and "internal error" not in done.text, done.text[-2000:]
    assert "error" in done.err.lower(), done.err
    for culprit in culprits:
        assert culprit in done.err, f"{culprit!r} not named in:\n{done.err}"
