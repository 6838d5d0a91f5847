"""The command line: exit codes 0/1/2, messages on stderr, no traceback without --debug."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lwdsl.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def files(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.lw").write_text("let a = 0.2\n\nprune global l1 $a\nquantize int8\n")
    (tmp_path / "same.lw").write_text("# the same plan\nprune global l1 20% | quantize int8 mode=static\n")
    (tmp_path / "other.lw").write_text("prune global l1 0.3\nquantize int8\nexport tflite\n")
    (tmp_path / "bad.lw").write_text("prune l1 150%\n")
    return tmp_path


def run(*args: str):
    return runner.invoke(app, list(args))


def test_check(files: Path) -> None:
    result = run("check", "good.lw", "same.lw")
    lines = result.output.splitlines()
    assert result.exit_code == 0 and lines[0] == "ok: good.lw (2 steps)" and lines[2] == "ok: same.lw (2 steps)"
    assert lines[1].startswith("  note: ") and lines[3].startswith("  note: ")  # which backends run it
    assert "note:" not in run("check", "good.lw", "--backend", "tensorflow").output
    assert run("check", "good.lw", "--set", "a=0.5").exit_code == 0


def test_check_bad_recipe_exits_2_without_traceback(files: Path) -> None:
    result = run("check", "good.lw", "bad.lw")
    assert result.exit_code == 2
    assert "ok: good.lw" in result.stdout
    assert result.stderr.startswith("bad.lw:1:10: error: step 1 `prune l1 150%`: AMOUNT is a fraction")
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(files: Path) -> None:
    result = run("--debug", "check", "bad.lw")
    assert result.exit_code == 2 and "Traceback" in result.stderr and "AMOUNT" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (("check", "other.lw", "--backend", "torch"), "the torch backend cannot export tflite"),
        (("check", "good.lw", "--set", "amont=1"), "--set amont: the recipe has no variable `amont`"),
        (("check", "missing.lw"), "cannot read missing.lw"),
    ],
)
def test_check_errors(files: Path, args, message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2 and message in result.stderr


def test_bad_usage_exits_2(files: Path) -> None:
    assert run("check", "good.lw", "--set", "novalue").exit_code == 2
    assert run("check").exit_code == 2


def test_fmt(files: Path) -> None:
    result = run("fmt", "--check", "good.lw", "same.lw")
    assert result.exit_code == 1 and result.output == "would reformat: same.lw\n"
    assert (files / "same.lw").read_text().startswith("# the same plan\nprune global l1 20% |")
    result = run("fmt", "same.lw")
    assert result.exit_code == 0 and result.output == "formatted: same.lw\n"
    assert (files / "same.lw").read_text() == "# the same plan\nprune global l1 20%\nquantize int8 mode=static\n"
    assert run("fmt", "--check", "good.lw", "same.lw").output == "2 files already formatted\n"
    (files / "broken.lw").write_text("prune |")
    assert run("fmt", "broken.lw").exit_code == 2


def test_diff(files: Path) -> None:
    same = run("diff", "good.lw", "same.lw")
    assert (same.exit_code, same.output) == (0, "no semantic difference\n")
    result = run("diff", "good.lw", "other.lw")
    assert result.exit_code == 1
    assert result.output == "~ step 1: prune: amount: 0.2 -> 0.3\n+ step 3: export tflite\n"
    assert run("diff", "good.lw", "bad.lw").exit_code == 2


def test_explain_schema_ops(files: Path) -> None:
    result = run("explain", "good.lw", "--set", "a=0.4")
    assert result.exit_code == 0 and "amount = 0.4" in result.output
    schema = run("schema")
    assert schema.exit_code == 0 and json.loads(schema.output)["title"] == "Recipe"
    ops = runner.invoke(app, ["ops"], env={"COLUMNS": "200"})
    assert ops.exit_code == 0 and "quantize" in ops.output


def test_console_script_in_a_subprocess(files: Path) -> None:
    cmd = [sys.executable, "-c", "from lwdsl.cli.app import main; main()", "check", "bad.lw"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "^^^^" in result.stderr
