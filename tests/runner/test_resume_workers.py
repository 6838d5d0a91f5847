"""Resume across worker counts and through the launcher's restarts (issue 22, torch).

A point (after a step, or after an epoch inside one) is the same whatever the number of
workers that made it: a run may continue on another number, and ends with the same masks and
weights within the conformance limit of N workers against one process (1e-4 relative per
tensor, docs/semantics.md "Several workers": float32 rounding of the batch mean, grown over the
steps that follow). ``lwdsl run --workers 2 --max-restarts 1``
survives a worker killed with SIGKILL: the group restarts and resumes by itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lwdsl  # noqa: E402
from lwdsl.backend.ranks import OneProcess  # noqa: E402
from lwdsl.backend.weights import load_weights, save_weights  # noqa: E402
from lwdsl.runner.ranks import WorldEnv  # noqa: E402

DATA = "synthetic:1,12,12:4"
RECIPE = "prune l1 0.5 | finetune epochs=3 batch=89 lr=0.05 momentum=0.9"
LWDSL = [str(Path(sys.executable).with_name("lwdsl"))]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("base")
    os.environ.setdefault("LWDSL_CACHE", str(folder / "cache"))
    result = lwdsl.run("prune l1 0.1", "lenet300", data=DATA, baseline_epochs=1, quiet=True, latency=False)
    path = folder / "base.lwz"
    save_weights(path, result.backend.state(result.model))
    return path


def _run(checkpoint, out, recipe=RECIPE, **kw):
    return lwdsl.run(recipe, "lenet300", data=DATA, checkpoint=checkpoint, quiet=True, latency=False, train_threads=1, out=out,
                     **kw)


def _on(world: int, monkeypatch) -> dict:
    """Runs that follow take ``world`` shards a batch (one process accumulating them: bit for bit
    what ``world`` gloo ranks compute, tests/runner/test_ranks.py)."""
    from lwdsl.backends.torch_backend.backend import TorchBackend

    monkeypatch.setattr(TorchBackend, "join_ranks", lambda self, rank, size, timeout, **kw: OneProcess(size))
    return {"world": WorldEnv(0, world, 0, 1, "test")} if world > 1 else {}


def _stop_after_epoch(monkeypatch, step: int, epoch: int) -> None:
    from lwdsl.runner import resume as R

    real = R.EpochPoints.epoch_done

    def epoch_done(self, e, *a, **k):
        real(self, e, *a, **k)
        if self.step == step and e == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(R.EpochPoints, "epoch_done", epoch_done)


def _close(got: dict, want: dict) -> None:
    """Same zeros (masks), weights within the conformance limit of N workers against one process."""
    assert set(got) == set(want)
    for name in want:
        a, w = np.asarray(got[name], dtype=np.float64), np.asarray(want[name], dtype=np.float64)
        assert np.array_equal(a == 0, w == 0), f"{name}: another mask"
        assert np.linalg.norm(a - w) <= 1e-4 * max(np.linalg.norm(w), 1e-30), name


@pytest.mark.parametrize("first,then", [(1, 2), (2, 1)])
def test_a_point_made_on_one_number_of_workers_resumes_on_another(checkpoint, tmp_path, monkeypatch, first, then):
    whole = _run(checkpoint, tmp_path / "whole")
    want = whole.backend.state(whole.model)
    _stop_after_epoch(monkeypatch, step=1, epoch=1)
    with pytest.raises(KeyboardInterrupt):
        _run(checkpoint, tmp_path / "cut", **_on(first, monkeypatch))
    monkeypatch.undo()
    point = json.loads((tmp_path / "cut.resume" / "progress.json").read_text())
    assert point["training"]["epoch"] == 1
    resumed = _run(checkpoint, tmp_path / "cut", resume=True, **_on(then, monkeypatch))
    _close(resumed.backend.state(resumed.model), want)
    rows = [s["op"] for s in resumed.report["steps"]]
    assert rows == ["baseline", "prune", "finetune"]


def _lwdsl(args, cwd, timeout=600, **env):
    full = dict(os.environ, COLUMNS="120", **env)
    full.pop("WORLD_SIZE", None)
    return subprocess.run([*LWDSL, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_a_one_process_point_resumes_on_two_gloo_workers(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "r.lw"
    recipe.write_text(RECIPE.replace(" | ", "\n") + "\n")
    whole = _run(checkpoint, tmp_path / "whole", recipe=recipe)
    _stop_after_epoch(monkeypatch, step=1, epoch=2)
    with pytest.raises(KeyboardInterrupt):
        _run(checkpoint, tmp_path / "out", recipe=recipe)
    monkeypatch.undo()
    done = _lwdsl(["run", str(recipe), "--model", "lenet300", "--data", DATA, "--checkpoint", str(checkpoint), "--out", "out",
                   "--workers", "2", "--resume"], cwd=tmp_path, LWDSL_CACHE=str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr[-4000:]
    assert "resuming after step 1 of 2 and epoch 2 of 3 of step 2" in done.stderr
    got, _ = load_weights(tmp_path / "out" / "model.lwz")
    _close(got, whole.backend.state(whole.model))
    assert json.loads((tmp_path / "out" / "lwdsl.lock.json").read_text())["world_size"] == 2
    assert not (tmp_path / "out.resume").exists()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def _workers(pid: int) -> list[int]:
    """The worker processes the elastic agent in process ``pid`` spawned (first started first)."""
    found = []
    for child in sorted(_children(pid)):
        try:
            if b"spawn_main" in (Path("/proc") / str(child) / "cmdline").read_bytes():
                found.append(child)
        except OSError:
            pass
    return found


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_restarts_the_group_which_resumes(checkpoint, tmp_path, monkeypatch):
    """``--workers 2 --max-restarts 1``: a worker (the first started) is killed (SIGKILL) once
    the point after epoch 1 of the fine-tune is written; the agent restarts both workers, they resume from that point,
    and the run ends bit for bit where 2 workers end uninterrupted (one process accumulating the
    2 shards), with nothing left beside the run folder."""
    recipe = tmp_path / "r.lw"
    recipe.write_text("prune l1 0.5\nfinetune epochs=4 batch=8 lr=0.01 momentum=0.9\n")
    cache = str(tmp_path / "cache")
    full = dict(os.environ, COLUMNS="120", LWDSL_CACHE=cache)
    full.pop("WORLD_SIZE", None)
    proc = subprocess.Popen([*LWDSL, "run", str(recipe), "--model", "lenet300", "--data", DATA, "--checkpoint", str(checkpoint),
                             "--out", "out", "--workers", "2", "--max-restarts", "1"], cwd=tmp_path, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress, killed = tmp_path / "out.resume" / "progress.json", None
    try:
        deadline = time.monotonic() + 300
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                training = json.loads(progress.read_text()).get("training") or {}
            except (OSError, ValueError):
                training = {}
            if training.get("epoch") == 1:
                workers = _workers(proc.pid)
                if len(workers) == 2:
                    os.kill(workers[0], signal.SIGKILL)
                    killed = workers[0]
            time.sleep(0.02)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, f"the point after epoch 1 never appeared: {err[-3000:]}"
    assert proc.returncode == 0, err[-4000:]
    assert "restart 1 by the launcher" in err and "resuming after step 1 of 2 and epoch" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out", "r.lw"]  # no resume point, staging folder or lock left
    got, _ = load_weights(tmp_path / "out" / "model.lwz")
    reference = _run(checkpoint, None, recipe=recipe, **_on(2, monkeypatch))
    want = reference.backend.state(reference.model)
    assert set(got) == set(want)
    for name in want:
        assert np.array_equal(got[name], want[name]), name  # bit for bit: the same 2 shards, the same state


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rendezvous_that_never_completes_is_exit_2_after_the_stated_wait(tmp_path):
    """Rank 0 of 2 started by a launcher of the user's own, the other rank never comes:
    ``--rdzv-timeout 2`` ends it as a usage error within seconds, not the default 600."""
    recipe = tmp_path / "r.lw"
    recipe.write_text("finetune epochs=1\n")
    from typer.testing import CliRunner

    from lwdsl.cli.app import app

    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    start = time.monotonic()
    result = CliRunner().invoke(app, ["run", str(recipe), "--model", "lenet300", "--data", DATA, "--out", str(tmp_path / "out"),
                                      "--rdzv-timeout", "2"], env=env)
    took = time.monotonic() - start
    os.environ.pop("LWDSL_RDZV_TIMEOUT", None)
    assert result.exit_code == 2, result.output
    assert "rank 0 of 2 could not join the others (gloo) within 2 s" in result.output
    assert "--rdzv-timeout" in result.output and "Traceback" not in result.output
    assert took < 60  # not the default 600 s wait
    assert not (tmp_path / "out").exists()


def test_max_restarts_without_workers_is_exit_2(tmp_path):
    from typer.testing import CliRunner

    from lwdsl.cli.app import app

    recipe = tmp_path / "r.lw"
    recipe.write_text("finetune epochs=1\n")
    result = CliRunner().invoke(app, ["run", str(recipe), "--model", "lenet300", "--data", DATA, "--max-restarts", "1"])
    assert result.exit_code == 2, result.output
    assert "--max-restarts 1 without --workers N" in result.output
    result = CliRunner().invoke(app, ["run", str(recipe), "--model", "lenet300", "--data", DATA, "--max-restarts", "1"],
                                env={"WORLD_SIZE": "2", "RANK": "0", "TORCHELASTIC_RUN_ID": "x"})
    assert result.exit_code == 2, result.output
    assert "the launcher restarts the workers, not lwdsl" in result.output
    bad = CliRunner().invoke(app, ["run", str(recipe), "--model", "lenet300", "--data", DATA, "--rdzv-timeout", "0"])
    assert bad.exit_code == 2
