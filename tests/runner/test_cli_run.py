"""``lwdsl run`` as a user runs it: a real backend in a subprocess, Ctrl-C included (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
LWDSL = [str(Path(sys.executable).with_name("lwdsl"))]
ARGS = ["--model", "lenet300", "--data", "synthetic:1,28,28:10", "--baseline-epochs", "1"]


def _env(tmp_path):
    return dict(os.environ, LWDSL_CACHE=str(tmp_path / "cache"), COLUMNS="120")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_run_then_ctrl_c_leaves_the_previous_outputs_intact(backend_name, tmp_path):
    out = tmp_path / "out"
    first = tmp_path / "first.lw"
    first.write_text("prune global l1 0.5\n")
    done = subprocess.run(
        [*LWDSL, "run", str(first), *ARGS, "--backend", backend_name, "--out", str(out)],
        env=_env(tmp_path), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["backend"] == backend_name
    assert set(report["steps"][-1]["metrics"]) >= {"accuracy", "params", "nonzero_params", "size_bytes", "size_gzip_bytes", "latency_ms_b1", "latency_ms_b64", "seconds", "layers"}
    before = _snapshot(out)

    slow = tmp_path / "slow.lw"
    slow.write_text("prune global l1 0.8\nfinetune epochs=500\n")
    proc = subprocess.Popen(
        [*LWDSL, "run", str(slow), *ARGS, "--backend", backend_name, "--out", str(out)],
        env=_env(tmp_path), stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        # as a run typed at a terminal: a test run started in the background (`cmd &` without job
        # control) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    for line in proc.stderr:  # wait until the prune step is done and fine-tuning has begun
        if line.startswith("prune global") or time.monotonic() > deadline:
            break
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
