"""``--resume``: a run interrupted after some steps continues from its last completed step and
ends with what an uninterrupted run gives, bit for bit on the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lwdsl
from lwdsl.backend import get_backend
from lwdsl.errors import UsageError

DATA = "synthetic:1,12,12:4"
RECIPE = "prune l1 0.5 | finetune epochs=1 lr=0.05 | prune l1 0.7 | finetune epochs=1 lr=0.05 | quantize int8"


def _run(out, **kw):
    return lwdsl.run(RECIPE, "lenet300", data=DATA, quiet=True, latency=False, baseline_epochs=1, out=out, **kw)


def _interrupted(backend_name, out, after):
    """A run stopped by Ctrl-C as step ``after + 1`` begins."""
    be = get_backend(backend_name)
    real, calls = be.apply, []

    def apply(*a, **k):
        calls.append(1)
        if len(calls) > after:
            raise KeyboardInterrupt
        return real(*a, **k)

    be.apply = apply
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(out, backend=backend_name)
    finally:
        del be.apply


@pytest.mark.parametrize("backend_name", ["torch", "tensorflow"])
def test_a_run_stopped_after_three_steps_resumes_to_the_uninterrupted_result(tmp_path, backend_name, monkeypatch):
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    whole = _run(tmp_path / "whole", backend=backend_name)
    _interrupted(backend_name, tmp_path / "cut", after=3)
    point = json.loads((tmp_path / "cut.resume" / "progress.json").read_text())
    assert point["done"] == 3 and not (tmp_path / "cut").exists()  # nothing in the run folder's place yet
    resumed = _run(tmp_path / "cut", backend=backend_name, resume=True)
    assert not (tmp_path / "cut.resume").exists()  # the run succeeded: nothing left to resume
    be = get_backend(backend_name)
    want, got = be.state(whole.model), be.state(resumed.model)
    assert set(want) == set(got)
    for key in want:
        assert np.array_equal(want[key], got[key]), key  # bit for bit
    rows = [(s["op"], s["metrics"]["accuracy"], s["metrics"]["nonzero_params"]) for s in resumed.report["steps"]]
    assert rows == [(s["op"], s["metrics"]["accuracy"], s["metrics"]["nonzero_params"]) for s in whole.report["steps"]]


def test_resume_refuses_a_point_left_by_another_run(tmp_path, monkeypatch):
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    _interrupted("torch", tmp_path / "cut", after=1)
    with pytest.raises(UsageError, match=r"cut.resume was left by a run with another seed") as err:
        _run(tmp_path / "cut", backend="torch", resume=True, seed=1)
    assert "delete" in err.value.hint
    assert (tmp_path / "cut.resume" / "progress.json").is_file()  # still there for the run that made it


def test_resume_refuses_a_point_of_an_older_layout_by_name(tmp_path, monkeypatch):
    """A point written by a version whose files had another layout (no ``format``, or another
    one) is refused with what differs, never half read (a KeyError deep in a trainer)."""
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    _interrupted("torch", tmp_path / "cut", after=1)
    path = tmp_path / "cut.resume" / "progress.json"
    point = json.loads(path.read_text())
    del point["fingerprint"]["format"]
    path.write_text(json.dumps(point))
    with pytest.raises(UsageError, match=r"cut.resume was left by a run with another format") as err:
        _run(tmp_path / "cut", backend="torch", resume=True)
    assert "delete" in err.value.hint


def test_without_resume_a_run_starts_over_and_says_it_could_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    _interrupted("torch", tmp_path / "cut", after=2)
    said = []
    lwdsl.run(RECIPE, "lenet300", data=DATA, latency=False, baseline_epochs=1, out=tmp_path / "cut", echo=said.append,
              quiet=False)
    assert any("--resume would continue from there" in line and "after 2 step(s)" in line for line in said)
    assert not (tmp_path / "cut.resume").exists()


# --- inside a step: a point at the end of every epoch -------------------------------------------

EPOCHS = "prune l1 0.5 | finetune epochs=3 lr=0.05 momentum=0.9 | prune l1 0.8 epochs=3 schedule=gradual frequency=5 | finetune epochs=2 optimizer=adam lr=0.001"


def _epochs_run(out, backend_name, **kw):
    return lwdsl.run(EPOCHS, "lenet300", data=DATA, quiet=True, latency=False, baseline_epochs=1, out=out, backend=backend_name,
                     **kw)


def _stopped_after_epoch(backend_name, out, step, epoch, monkeypatch):
    """A run stopped (Ctrl-C) as soon as the point after ``epoch`` epochs of step ``step``
    (0-based) is written."""
    from lwdsl.runner import resume as R

    real = R.EpochPoints.epoch_done

    def epoch_done(self, e, *a, **k):
        real(self, e, *a, **k)
        if self.step == step and e == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(R.EpochPoints, "epoch_done", epoch_done)
    with pytest.raises(KeyboardInterrupt):
        _epochs_run(out, backend_name)
    monkeypatch.setattr(R.EpochPoints, "epoch_done", real)


@pytest.mark.parametrize("backend_name", ["torch", "tensorflow"])
@pytest.mark.parametrize("step,epoch", [pytest.param(1, 1, marks=pytest.mark.slow), (2, 2), pytest.param(3, 1, marks=pytest.mark.slow)])
def test_a_run_stopped_after_an_epoch_resumes_to_the_uninterrupted_result(tmp_path, backend_name, step, epoch, monkeypatch):
    """Stopped inside a fine-tune with momentum (1), a gradual prune whose masks change while it
    trains (2) or an Adam fine-tune (3): the resumed run continues with the next epoch (the
    optimizer state, masks, step count and random state restored) and ends bit for bit where
    an uninterrupted run ends."""
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    whole = _epochs_run(tmp_path / "whole", backend_name)
    _stopped_after_epoch(backend_name, tmp_path / "cut", step, epoch, monkeypatch)
    point = json.loads((tmp_path / "cut.resume" / "progress.json").read_text())
    assert point["done"] == step and point["training"]["step"] == step and point["training"]["epoch"] == epoch
    assert sorted(p.name for p in (tmp_path / "cut.resume").iterdir()) == sorted(
        ["progress.json", point["model"], point["masks"], point["training"]["file"]])  # earlier points gone
    assert not (tmp_path / "cut").exists()
    said: list[str] = []
    resumed = lwdsl.run(EPOCHS, "lenet300", data=DATA, latency=False, baseline_epochs=1, out=tmp_path / "cut", backend=backend_name,
                        resume=True, quiet=False, echo=said.append)
    assert any(f"resuming after step {step} of 4 and epoch {epoch} of" in line for line in said), said[:5]
    be = get_backend(backend_name)
    want, got = be.state(whole.model), be.state(resumed.model)
    assert set(want) == set(got)
    for key in want:
        assert np.array_equal(want[key], got[key]), key  # bit for bit
    rows = [(s["op"], s["metrics"]["accuracy"], s["metrics"]["nonzero_params"]) for s in resumed.report["steps"]]
    assert rows == [(s["op"], s["metrics"]["accuracy"], s["metrics"]["nonzero_params"]) for s in whole.report["steps"]]
    assert not (tmp_path / "cut.resume").exists()


@pytest.mark.slow
def test_a_process_killed_after_an_epoch_resumes_bit_for_bit(tmp_path):
    """``lwdsl run`` killed with SIGKILL once the point after epoch 1 of a 4-epoch fine-tune is
    written; ``--resume`` ends with the uninterrupted run's model file's weights, bit for bit,
    and leaves nothing beside the run folder (the killed run's staging folder and lock included)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from lwdsl.backend.weights import load_weights

    recipe = tmp_path / "r.lw"
    recipe.write_text("prune l1 0.5\nfinetune epochs=4 batch=16 lr=0.02 momentum=0.9\n")
    cli = [str(Path(sys.executable).with_name("lwdsl")), "run", "r.lw", "--model", "lenet300", "--data", DATA,
           "--baseline-epochs", "1"]
    env = dict(os.environ, LWDSL_CACHE=str(tmp_path / "cache"), COLUMNS="120")
    env.pop("WORLD_SIZE", None)
    whole = subprocess.run([*cli, "--out", "whole", "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    proc = subprocess.Popen([*cli, "--out", "cut", "--quiet"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = False
    try:
        deadline = time.monotonic() + 300
        while not killed and proc.poll() is None and time.monotonic() < deadline:
            try:
                training = json.loads((tmp_path / "cut.resume" / "progress.json").read_text()).get("training") or {}
            except (OSError, ValueError):
                training = {}
            if training.get("epoch") == 1:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
            time.sleep(0.01)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed, "the point after epoch 1 never appeared"
    assert not (tmp_path / "cut").exists() and any(p.name.startswith(".cut.staging-") for p in tmp_path.iterdir())
    resumed = subprocess.run([*cli, "--out", "cut", "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after step 1 of 2 and epoch" in resumed.stderr
    want, _ = load_weights(tmp_path / "whole" / "model.lwz")
    got, _ = load_weights(tmp_path / "cut" / "model.lwz")
    assert set(want) == set(got)
    for key in want:
        assert np.array_equal(want[key], got[key]), key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "cut", "r.lw", "whole"]


QAT_DISTILL = "prune l1 0.5 | quantize int8 mode=qat epochs=3 | distill T=2 alpha=0.5 epochs=2 lr=0.02"


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["torch", "tensorflow"])
@pytest.mark.parametrize("step", [1, 2])
def test_qat_and_distillation_stopped_after_an_epoch_resume_bit_for_bit(tmp_path, monkeypatch, backend_name, step):
    """Quantization-aware training (the float masters of the quantized weights, the activation
    ranges) and distillation (its teacher built again when the step runs again) resume from an
    epoch point to the uninterrupted run's model, bit for bit."""
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))

    def run(out, **kw):
        return lwdsl.run(QAT_DISTILL, "lenet300", data=DATA, quiet=True, latency=False, baseline_epochs=1, out=out,
                         backend=backend_name, **kw)

    whole = run(tmp_path / "whole")
    from lwdsl.runner import resume as R

    real = R.EpochPoints.epoch_done

    def epoch_done(self, e, *a, **k):
        real(self, e, *a, **k)
        if self.step == step and e == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(R.EpochPoints, "epoch_done", epoch_done)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut")
    monkeypatch.setattr(R.EpochPoints, "epoch_done", real)
    assert json.loads((tmp_path / "cut.resume" / "progress.json").read_text())["training"]["step"] == step
    resumed = run(tmp_path / "cut", resume=True)
    be = get_backend(backend_name)
    want, got = be.state(whole.model), be.state(resumed.model)
    assert set(want) == set(got)
    for key in want:
        assert np.array_equal(want[key], got[key]), key
