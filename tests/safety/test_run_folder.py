"""Nothing lost, nothing written outside the run folder: ``--out``, export paths, the run lock,
SIGTERM.

Every case hashes the folders around the run before and after, and fails if anything outside
the run folder was added, removed or changed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lwdsl
from lwdsl.errors import RecipeError, UsageError
from lwdsl.runner.outdir import RUN_FILES, RunLock, check_out, export_path_problem, is_run_folder
from lwdsl.runner.report import staging_dir, write_run_dir

from ._util import LWDSL, TINY, assert_refused, cli_env, run_cli, snapshot

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")


@pytest.fixture
def place(tmp_path: Path, monkeypatch) -> Path:
    """A working folder with a recipe, the user's notes, a folder of the user's files and a
    run folder lwdsl wrote; the current folder during the test."""
    work = tmp_path / "work"
    (work / "mine" / "deep").mkdir(parents=True)
    (work / "recipe.lw").write_text("prune l1 0.5\n")
    (work / "notes.txt").write_text("do not lose me\n")
    (work / "mine" / "data.csv").write_text("1,2,3\n")
    (work / "mine" / "deep" / "keep.bin").write_bytes(os.urandom(64))
    fake_run(work / "runs" / "old")
    monkeypatch.chdir(work)
    return work


# --- a run folder written by lwdsl's own code, with a stand-in backend -----------------------


class _StubBackend:
    name = "stub"
    native_suffix = ".pt"

    def state(self, handle):
        return {"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3) * handle}

    def save_native(self, handle, path):
        Path(path).write_bytes(b"native %d" % handle)


def _report() -> dict:
    layer = {"name": "fc", "kind": "linear", "weights": 6, "sparsity": 0.5, "requested": 0.5}
    metrics = {
        "accuracy": 0.5, "loss": 1.0, "params": 6, "nonzero_params": 3, "size_bytes": 100, "size_gzip_bytes": 80,
        "latency_ms_b1": None, "latency_ms_b64": None, "seconds": 0.0, "layers": [layer],
    }
    summary = {"accuracy_before": 0.5, "accuracy_after": 0.5, "accuracy_change_points": 0.0, "nonzero_compression": 2.0, "size_ratio": 1.0, "size_gzip_ratio": 1.0}
    return {"recipe": None, "backend": "stub", "model": "m", "data": "d", "seed": 0, "summary": summary,
            "steps": [{"op": "baseline", "text": "baseline", "metrics": metrics}, {"op": "prune", "text": "prune l1 0.5", "metrics": metrics}]}


def fake_run(out: Path, handle: int = 1) -> Path:
    """A run folder written by :func:`write_run_dir` (what a real run does last; without the
    plots, which only take time here)."""
    with mock.patch("lwdsl.runner.report._plots", return_value=[]):
        return write_run_dir(out, staging_dir(out), _StubBackend(), handle, lwdsl.parse("prune l1 0.5"), _report(), {"recipe_sha256": "0" * 64})


# --- --out ---------------------------------------------------------------------------------


_REFUSED_OUTS = [
    (".", "--out . is the current folder"),
    ("", "--out is empty"),
    ("notes.txt", "--out notes.txt is a file"),
    ("mine", "--out mine exists"),
    ("mine/deep/", "--out mine/deep/ exists"),
    ("..", "is a folder above the current one"),
    ("notes.txt/sub", "notes.txt is a file, not a folder"),
    ("/proc", "--out /proc is a mount point"),
    ("/proc/self/new", "cannot be written"),
]


def test_run_refuses_an_out_it_did_not_write_before_any_work(place: Path) -> None:
    """In a real process for two cases; all cases through the same CLI code in-process."""
    from typer.testing import CliRunner

    from lwdsl.cli.app import app

    before = snapshot(place.parent)
    for out, culprit in _REFUSED_OUTS[:2]:
        done = run_cli(["run", "recipe.lw", *TINY, "--out", out], place, env=cli_env(place.parent), timeout=60, memory_mb=1024)
        assert_refused(done, culprit)
        assert "baseline" not in done.err  # refused before any work
    for out, culprit in _REFUSED_OUTS:
        result = CliRunner().invoke(app, ["run", "recipe.lw", *TINY, "--out", out])
        assert result.exit_code == 2 and culprit in result.stderr and "Traceback" not in result.output, (out, result.output)
    assert snapshot(place.parent) == before


_NAMES = st.text(st.sampled_from("abcxyz-_.0"), min_size=1, max_size=6).filter(lambda n: n not in (".", ".."))
_TREES = st.dictionaries(
    st.lists(_NAMES, min_size=1, max_size=3).map(lambda parts: "/".join(parts)), st.binary(max_size=40), min_size=1, max_size=8
)


def _build(root: Path, tree: dict[str, bytes]) -> list[Path]:
    made = []
    for rel, data in tree.items():
        path = root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            made.append(path)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            continue  # a name already used the other way (file vs folder)
    return made


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=_TREES, pick=st.integers(0, 10_000), kind=st.sampled_from(["file", "folder", "cwd", "above", "under-file", "link"]))
def test_check_out_refuses_whatever_is_not_its_own_and_writes_nothing(tmp_path_factory, tree, pick, kind) -> None:
    root = tmp_path_factory.mktemp("tree")
    work = root / "work"
    work.mkdir()
    made = _build(work, tree)
    if not made:
        return
    file = made[pick % len(made)]
    target = {
        "file": file,
        "folder": file.parent if file.parent != work else work,
        "cwd": work,
        "above": root,
        "under-file": file / "run",
        "link": work / "link",
    }[kind]
    if kind == "link":
        fake_run(root / "real-run")
        os.symlink(root / "real-run", target)
    before = snapshot(root)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        with pytest.raises(UsageError) as err:
            check_out(target)
    finally:
        os.chdir(cwd)
    assert snapshot(root) == before
    assert "--out" in err.value.message


def test_a_run_folder_is_replaced_only_while_it_holds_only_lwdsl_files(place: Path) -> None:
    (place / "empty").mkdir()
    assert check_out("empty") == place / "empty"  # an empty folder holds nothing to lose
    out = place / "runs" / "old"
    assert is_run_folder(out)
    fake_run(out, handle=2)  # lwdsl's own folder: replaced
    assert (out / "model.pt").read_bytes() == b"native 2"
    (out / "my-analysis.ipynb").write_text("{}")  # the user adds a file: no longer replaceable
    assert not is_run_folder(out)
    before = snapshot(out)
    with pytest.raises(UsageError, match="my-analysis.ipynb") as err:
        check_out(out)
    with pytest.raises(UsageError, match="my-analysis.ipynb") as err:
        fake_run(out, handle=3)
    assert snapshot(out) == before
    kept = Path(err.value.message.rsplit("results are in ", 1)[1])
    assert (kept / "model.pt").read_bytes() == b"native 3"  # the finished run is kept, visibly
    assert not any(p.name.startswith(".") for p in (place / "runs").iterdir())


def test_a_failed_swap_puts_the_old_folder_back(place: Path, monkeypatch) -> None:
    out = place / "runs" / "old"
    before = snapshot(out)
    real_replace = os.replace

    def fail_second(src, dst):
        if Path(dst) == out and Path(src).name.startswith(".old.staging-"):
            raise KeyboardInterrupt  # Ctrl-C between the two renames
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_second)
    with pytest.raises(KeyboardInterrupt):
        fake_run(out, handle=9)
    monkeypatch.undo()
    assert snapshot(out) == before
    assert sorted(p.name for p in (place / "runs").iterdir()) == ["old"]


# --- export paths ----------------------------------------------------------------------------

_PIECES = st.sampled_from(["..", ".", "", "~", "a", "b.pt", "model.lwz", "Report.JSON", "model", "/", "\\", "C:", "x\ny", "é"])


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(_PIECES, min_size=1, max_size=5), fmt=st.sampled_from(["torch", "keras", "onnx", "tflite", "saved_model"]))
def test_an_export_path_is_refused_or_stays_inside_and_off_the_run_files(parts, fmt) -> None:
    path = "/".join(parts) if len(parts) > 1 else parts[0]
    if not path:
        return
    written = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    try:
        recipe = lwdsl.parse(f'export {fmt} "{written}"', file="r.lw")
    except RecipeError as exc:
        assert exc.location is not None and (exc.location.line, exc.location.col) == (1, len(f"export {fmt} ") + 1)
        assert "PATH" in exc.message
        assert export_path_problem(path, fmt) is not None
        return
    step = recipe.steps[0]
    inside = os.path.normpath(os.path.join("/run", step.artifact_name()))
    assert inside.startswith("/run/"), path
    names = inside.split("/")[2:]
    top = names[0]
    written_names = {top.casefold()}
    if fmt == "keras" and len(names) == 1:  # the keras writer puts .keras in place of the suffix
        written_names.add(str(Path(top).with_suffix(".keras")).casefold())
    assert not written_names & {name.casefold() for name in RUN_FILES}, path


def test_check_refuses_exports_outside_the_run_folder_with_the_place(place: Path) -> None:
    cases = {
        "up.lw": ('prune l1 0.5\nexport torch "../../x.pt"\n', "up.lw:2:14", "leaves the run folder"),
        "abs.lw": ('export torch "/etc/x.pt"\n', "abs.lw:1:14", "absolute"),
        "own.lw": ('export torch "model.lwz"\n', "own.lw:1:14", "model.lwz"),
        "twice.lw": ('export torch "a.pt"\nexport torch "a.pt"\n', "twice.lw:2:1", "collides"),
    }
    for name, (text, where, what) in cases.items():
        (place / name).write_text(text)
    before = snapshot(place.parent)
    assert_refused(run_cli(["check", "up.lw"], place, env=cli_env(place.parent), timeout=30), *cases["up.lw"][1:])
    for name, (_, where, what) in cases.items():
        with pytest.raises(RecipeError) as err:
            lwdsl.load(name)
        assert where in err.value.render() and what in err.value.render()
    assert snapshot(place.parent) == before


# --- the lock ------------------------------------------------------------------------------

_HOLD = "import sys, time; from lwdsl.runner.outdir import RunLock; l = RunLock(sys.argv[1]); l.acquire(); print('held', flush=True); time.sleep(120)"


def test_a_second_run_to_the_same_out_is_refused_while_the_first_holds_it(place: Path) -> None:
    out = place / "runs" / "old"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(place.parent)
        with pytest.raises(UsageError, match=f"another lwdsl run is writing .*pid {holder.pid}"):
            RunLock(out).acquire()
        done = run_cli(["run", "recipe.lw", *TINY, "--out", "runs/old"], place, env=cli_env(place.parent), timeout=60)
        assert_refused(done, "another lwdsl run is writing", str(out))
        assert snapshot(place.parent) == before
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a crash: the kernel drops the lock
        holder.wait()
    with RunLock(out):  # a stale lock file is no obstacle
        assert (place / "runs" / "old.lock").read_text().startswith("lwdsl run lock")
    assert not (place / "runs" / "old.lock").exists()


def test_a_lock_file_that_is_not_lwdsls_is_left_alone(place: Path) -> None:
    theirs = place / "runs" / "old.lock"
    theirs.write_text("my own notes about the old run\n")
    with pytest.raises(UsageError, match="not a lock file of lwdsl's"):
        RunLock(place / "runs" / "old").acquire()
    assert theirs.read_text() == "my own notes about the old run\n"


# --- whole runs (torch, tiny synthetic data) -------------------------------------------------


@needs_torch
def test_sigterm_cleans_up_and_exits_143_with_one_line(place: Path) -> None:
    (place / "slow.lw").write_text("prune l1 0.5\nfinetune epochs=5000\n")
    out = place / "runs" / "old"
    before = snapshot(place.parent)
    proc = subprocess.Popen(
        [LWDSL, "run", "slow.lw", *TINY, "--out", "runs/old"], cwd=place, env=cli_env(place.parent),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 90
    while not any(p.name.startswith(".old.staging-") for p in out.parent.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no staging folder after 90 s"
        time.sleep(0.1)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "SIGTERM" in line] == [
        "terminated (SIGTERM): nothing was written; earlier outputs and the input model are as they were"
    ]
    resume = out.parent / "old.resume"  # the resume point of the steps done, when one was (lwdsl run --resume)
    assert not resume.exists() or (resume / "progress.json").exists()
    assert snapshot(place.parent, skip=(place.parent / ".cache-lwdsl", resume)) == {
        k: v for k, v in before.items() if not k.startswith(".cache-lwdsl")
    }


@needs_torch
def test_a_run_writes_its_folder_and_exports_inside_it_and_nothing_else(place: Path) -> None:
    (place / "exp.lw").write_text('prune l1 0.5\nexport torch "exports/m.pt"\n')
    before = snapshot(place.parent, skip=(place.parent / ".cache-lwdsl", place / "runs"))
    done = run_cli(["run", "exp.lw", *TINY, "--quiet", "--out", "runs/new"], place, env=cli_env(place.parent), timeout=300)
    assert done.code == 0, done.text[-3000:]
    out = place / "runs" / "new"
    assert (out / "exports" / "m.pt").is_file() and is_run_folder(out)
    assert set(json.loads((out / "report.json").read_text())["files"]) >= {"exports", "model.lwz", "report.json"}
    assert sorted(p.name for p in (place / "runs").iterdir()) == ["new", "old"]  # no lock, no staging left
    assert snapshot(place.parent, skip=(place.parent / ".cache-lwdsl", place / "runs")) == before
