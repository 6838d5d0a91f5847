"""``lwdsl run`` as a user runs it: a real backend in a subprocess, Ctrl-C included (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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


def test_a_killed_run_resumes_from_its_last_step_to_the_uninterrupted_model(tmp_path):
    """SIGKILL (no chance to clean up) after two steps; ``--resume`` finishes the run, and its
    model.lwz holds the same tensors as a run that was never interrupted."""
    from lwdsl.backend.weights import load_weights

    recipe = tmp_path / "r.lw"
    recipe.write_text("prune l1 0.5\nfinetune epochs=1 lr=0.05\nprune l1 0.7\nfinetune epochs=15 lr=0.01\n")
    base = [*LWDSL, "run", str(recipe), *ARGS, "--backend", "torch", "-q"]
    whole = subprocess.run([*base, "--out", str(tmp_path / "whole")], env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "cut"
    proc = subprocess.Popen([*base, "--out", str(out)], env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = out.parent / "cut.resume" / "progress.json"
    deadline = time.time() + 600
    while time.time() < deadline and (not progress.is_file() or json.loads(progress.read_text())["done"] < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert json.loads(progress.read_text())["done"] == 3 and not out.exists()
    resumed = subprocess.run([*base, "--out", str(out), "--resume"], env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    want, _ = load_weights(tmp_path / "whole" / "model.lwz")
    got, _ = load_weights(out / "model.lwz")
    assert set(want) == set(got) and all(np.array_equal(want[k], got[k]) for k in want)
    assert not progress.parent.exists()
