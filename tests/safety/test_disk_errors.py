"""Full and read-only disks: every write that the place refuses is a clear error naming the place
(and, on a full disk, the space needed and free), exit 2 when nothing could be written or 1 for
a run that failed, earlier outputs intact; a baseline that cannot be cached is still used.

The disk is simulated: the write functions raise the OSError a full disk (ENOSPC) or a
read-only mount (EROFS) raises (the tests run as root, which chmod does not stop).
"""

from __future__ import annotations

import contextlib
import errno
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lwdsl.backend.weights as weights_mod
from lwdsl.backend import registry as backend_mod
from lwdsl.cli.app import app
from lwdsl.errors import RunError
from lwdsl.runner.pipeline import run

from ..runner.fake_backend import FakeBackend
from ._util import snapshot

DATA = "synthetic:1,6,6:3"


@pytest.fixture
def fake(monkeypatch, tmp_path):
    be = FakeBackend()
    monkeypatch.setitem(backend_mod._instances, "fake", be)
    monkeypatch.setitem(backend_mod.BACKENDS, "fake", ("tests.runner.fake_backend", "FakeBackend", "fake"))
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return be


def _refusing(monkeypatch, code: int, where: str) -> None:
    """``atomic_path`` (every lwdsl file write goes through it) raises ``code`` for paths
    containing ``where``, as the disk would on creating the temporary file."""
    real = weights_mod.atomic_path

    @contextlib.contextmanager
    def atomic_path(path):
        if where in str(path):
            raise OSError(code, {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system"}[code], str(path))
        with real(path) as tmp:
            yield tmp

    monkeypatch.setattr(weights_mod, "atomic_path", atomic_path)


def _no_traceback(result) -> None:
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only file system"), (errno.ENOSPC, "no space left on device")])
def test_fmt_on_a_disk_that_refuses_the_write_names_it_and_exits_2(tmp_path, monkeypatch, code, words):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.lw"
    recipe.write_text("prune   l1 0.5\n")
    _refusing(monkeypatch, code, "r.lw")
    result = CliRunner().invoke(app, ["fmt", "r.lw"])
    assert result.exit_code == 2, result.output
    _no_traceback(result)
    assert f"fmt: cannot write {recipe}: {words}" in result.output and "r.lw is unchanged" in result.output
    if code == errno.ENOSPC:
        assert "bytes needed" in result.output and "free there" in result.output
    assert recipe.read_text() == "prune   l1 0.5\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.lw"]


def test_a_full_disk_while_writing_the_run_folder_exits_1_and_keeps_the_old_one(fake, tmp_path, monkeypatch):
    (tmp_path / "r.lw").write_text("prune l1 0.5\n")
    args = ["run", "r.lw", "--backend", "fake", "--model", "linear2", "--data", DATA, "--out", "out", "-q"]
    assert CliRunner().invoke(app, args).exit_code == 0
    before = snapshot(tmp_path / "out")
    _refusing(monkeypatch, errno.ENOSPC, ".out.staging-")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    _no_traceback(result)
    assert f"writing the run folder: cannot write {tmp_path / 'out'}: no space left on device" in result.output
    assert "needed" in result.output and "free there" in result.output
    assert f"nothing was replaced: {tmp_path / 'out'} is as it was" in result.output
    assert snapshot(tmp_path / "out") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out", "r.lw"]  # no staging folder left


def test_a_baseline_that_cannot_be_cached_is_still_used_with_a_warning(fake, tmp_path, monkeypatch):
    _refusing(monkeypatch, errno.ENOSPC, str(tmp_path / "cache"))
    said: list[str] = []
    result = run("prune l1 0.5", "linear2", backend="fake", data=DATA, out=tmp_path / "out", echo=said.append)
    assert fake.calls.count("train") == 1 and result.run_dir == tmp_path / "out"
    warning = next(line for line in said if line.startswith("warning: "))
    assert "the trained baseline was not cached" in warning and "no space left on device" in warning
    assert f"cannot write {tmp_path / 'cache' / 'baselines'}/fake-linear2-" in warning and "this run goes on with it" in warning
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["steps"][0]["warnings"] == [warning.removeprefix("warning: ")]
    assert "## Warnings" in (tmp_path / "out" / "report.md").read_text()
    lock = json.loads((tmp_path / "out" / "lwdsl.lock.json").read_text())
    assert lock["baseline"]["source"] == "trained" and lock["baseline"]["path"] is None
    run("prune l1 0.5", "linear2", backend="fake", data=DATA, out=None, quiet=True)  # nothing cached: trains again
    assert fake.calls.count("train") == 2


def test_a_read_only_cache_is_a_warning_too(fake, tmp_path, monkeypatch):
    _refusing(monkeypatch, errno.EROFS, str(tmp_path / "cache"))
    result = run("prune l1 0.5", "linear2", backend="fake", data=DATA, out=None, quiet=True)
    assert "read-only file system" in result.report["steps"][0]["warnings"][0]


def test_a_failed_run_on_a_full_disk_still_says_what_failed(fake, tmp_path, monkeypatch):
    fake.fail_on = "finetune"
    _refusing(monkeypatch, errno.ENOSPC, "out.failed")
    said: list[str] = []
    with pytest.raises(RunError, match="finetune failed on purpose"):
        run("prune l1 0.5 | finetune epochs=1", "linear2", backend="fake", data=DATA, out=tmp_path / "out", quiet=True, echo=said.append)
    assert any(f"keeping its report so far: cannot write {tmp_path / 'out.failed'}: no space left" in line for line in said), said
    assert not (tmp_path / "out.failed").exists()


def test_train_out_on_a_full_disk_names_it_and_exits_1(fake, tmp_path, monkeypatch):
    _refusing(monkeypatch, errno.ENOSPC, "w.lwz")
    result = CliRunner().invoke(app, ["train", "linear2", "--backend", "fake", "--data", DATA, "--out", "w.lwz", "-q"])
    assert result.exit_code == 1, result.output
    _no_traceback(result)
    assert f"--out: cannot write {Path(tmp_path / 'w.lwz')}: no space left on device" in result.output
    assert not (tmp_path / "w.lwz").exists()
