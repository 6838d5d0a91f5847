"""Exit codes and CLI habits: 0/1/2 and nothing else for any arguments, ``--debug`` anywhere,
``--version``, ``-h``, readable help, 80-column ``ops`` and ``explain``, backend notes from
``check``, progress lines in logs, ``fmt`` on JSON, a closed pipe."""

from __future__ import annotations

import json
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from lwdsl.cli.app import app
from lwdsl.cli.ops_table import option_rows, print_ops
from lwdsl.runner.progress import PlainBar, progress_factory

from ._util import LWDSL, cli_env

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ["check", "fmt", "explain", "diff", "schema", "ops", "run", "train"]


@pytest.fixture
def work(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "good.lw").write_text("prune l1 0.5\n")
    (tmp_path / "bad.lw").write_text("prune l1 150%\n")
    return tmp_path


def invoke(*args: str, columns: int = 80):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})


_TOKENS = st.sampled_from(
    COMMANDS + ["good.lw", "bad.lw", "missing.lw", "", "-", "--", "--debug", "-h", "--set", "a=1", "=", "--backend", "torch",
                "nope", "--data", "mnist", "synthetic:1,2,2:2", "--check", "--root", ".", "/", "--seed", "-5", "--threads",
                "0", "--quiet", "--version", "--nope", "é", "--model"]
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(_TOKENS, max_size=6))
def test_any_arguments_end_in_0_1_or_2_without_a_traceback(work: Path, args: list[str]) -> None:
    if "run" in args or "train" in args:  # never start work: an --out that is refused comes last
        args = args + ["--out", "."] if "run" in args else args + ["--out", "x.txt"]
    if "explain" in args and "--model" in args:
        args = [a for a in args if a != "--model"]
    if "fmt" in args:
        args = args + ["--check"]  # change no file
    result = invoke(*args)
    debug = "--debug" in args
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.output)
    assert "internal error" not in result.output, (args, result.output)
    assert debug or "Traceback" not in result.output, (args, result.output)
    assert (work / "good.lw").read_text() == "prune l1 0.5\n"


def test_debug_works_before_and_after_the_command(work: Path) -> None:
    for args in (["--debug", "check", "bad.lw"], ["check", "bad.lw", "--debug"], ["check", "--debug", "bad.lw"]):
        result = invoke(*args)
        assert result.exit_code == 2 and "Traceback" in result.stderr and "AMOUNT" in result.stderr, args
    result = invoke("check", "bad.lw")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_version_and_short_help(work: Path) -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"lwdsl {version('lwdsl')}"
    for command in [None, *COMMANDS]:
        result = invoke(*([command] if command else []), "-h")
        assert result.exit_code == 0 and "Usage:" in result.stdout, command


@pytest.mark.parametrize("columns", [80, 200])
def test_help_shows_words_not_python_types(work: Path, columns: int) -> None:
    for command in [None, *COMMANDS]:
        text = invoke(*([command] if command else []), "--help", columns=columns).stdout
        for python in ("<bool>", "<str>", "<int", "<path>", "<list[", "<float>", "SET_"):
            assert python not in text, (command, python, text)


def test_usage_errors_exit_2_on_every_command(work: Path) -> None:
    for command in COMMANDS:
        result = invoke(command, "--no-such-option")
        assert result.exit_code == 2, (command, result.output)
    for args in (["check"], ["diff", "good.lw"], ["explain"], ["run"], ["train"], ["nosuchcommand"]):
        assert invoke(*args).exit_code == 2, args
    for args in (["check", "good.lw", "--backend", "nope"], ["run", "good.lw", "--backend", "nope"], ["train", "lenet5", "--data", "nope"]):
        result = invoke(*args)
        assert result.exit_code == 2 and "nope" in result.stderr, (args, result.output)


def test_ops_fits_80_columns_and_never_splits_a_word() -> None:
    console = Console(record=True, width=80, force_terminal=False)
    print_ops(console)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    for row in option_rows():
        name = row.name.upper() if row.positional else f"{row.name}="
        assert any(line.split()[:1] == [name] for line in lines), name
    assert "weight_dec\n" not in text and "ay=" not in [line.strip() for line in lines]


def test_explain_fits_80_columns_on_every_example_recipe(work: Path) -> None:
    for recipe in sorted((ROOT / "recipes").rglob("*.lw")):
        result = invoke("explain", str(recipe))
        assert result.exit_code == 0, result.output
        for line in result.stdout.splitlines():
            if line[:1].isdigit() or line.startswith(("recipe ", "target", "variable")):
                continue  # the recipe's own words, as written
            assert len(line) <= 80, (recipe.name, line)


def test_check_says_which_backends_run_each_recipe(work: Path, monkeypatch) -> None:
    """From the static support tables (here two made-up ones: the real ones grow)."""
    import lwdsl.backend
    import lwdsl.backend.registry
    from lwdsl.backend import SupportTable
    from lwdsl.language.specs import OPS

    prune = tuple(getattr(OPS["prune"], "FORMS", ()))
    tables = {
        "torch": SupportTable("torch", {"prune": prune, "export": ("torch",)}),
        "tensorflow": SupportTable("tensorflow", {"prune": prune, "export": ("keras",)}),
    }
    for module in (lwdsl.backend, lwdsl.backend.registry):
        monkeypatch.setattr(module, "support_table", lambda name: tables.get({"tf": "tensorflow"}.get(name, name)))
    (work / "k.lw").write_text("prune l1 0.5\nexport keras\n")  # only tensorflow writes keras files
    (work / "o.lw").write_text("prune l1 0.5\nexport onnx\n")  # nobody writes onnx
    result = invoke("check", "good.lw", "k.lw", "o.lw")
    lines = result.stdout.splitlines()
    assert result.exit_code == 0
    assert lines[:2] == ["ok: good.lw (1 step)", "  note: runs on torch and tensorflow"]
    assert lines[2:4] == ["ok: k.lw (2 steps)", "  note: runs on tensorflow only (torch cannot run step 2 `export keras`)"]
    assert lines[4] == "ok: o.lw (2 steps)" and lines[5].startswith("  note: no backend runs it yet (torch and")
    assert all(len(line) <= 80 for line in lines)
    assert "note:" not in invoke("check", "good.lw", "--backend", "torch").stdout


def test_progress_is_plain_lines_when_stdout_is_not_a_terminal(capsys) -> None:
    lines: list[str] = []
    clock = iter(range(0, 1000, 1))  # one second a step: a loop of 200 s
    bar = PlainBar(200, "train epoch 1/1", lines.append, clock=lambda: float(next(clock)))
    for _ in range(200):
        bar.update()
    bar.close()
    assert len(lines) == 4 and lines[-1] == "train epoch 1/1: 200 steps in 201 s"  # at 60, 120, 180 s, and the end
    assert lines[0] == "train epoch 1/1: 60/200 (30%), 60 s, eta 140 s"
    bar = progress_factory(False, terminal=False)(3, "evaluate")  # as in CI: to stderr
    bar.update(3)
    bar.close()
    assert capsys.readouterr().err == ""  # a short loop: its step's line says the figures
    slow = iter([0.0, 0.5, 3.0])
    bar = PlainBar(1, "calibrate", lines.append, clock=lambda: next(slow))
    bar.update()
    bar.close()
    assert lines[-1] == "calibrate: 1 steps in 3 s"
    quiet = progress_factory(True, terminal=False)(3, "x")
    quiet.update(3)
    quiet.close()
    assert capsys.readouterr().err == ""


def test_fmt_gives_a_json_plan_canonical_json(work: Path) -> None:
    plan = work / "p.json"
    plan.write_text('{"steps":[{"op":"prune","amount":0.5}],   "version":1}')
    assert invoke("fmt", "--check", "p.json").exit_code == 1
    assert invoke("fmt", "p.json").exit_code == 0
    assert json.loads(plan.read_text()) == {"version": 1, "steps": [{"op": "prune", "amount": 0.5}]}
    assert invoke("fmt", "--check", "p.json").exit_code == 0


def test_a_closed_pipe_is_not_an_error(work: Path) -> None:
    proc = subprocess.Popen([LWDSL, "ops"], cwd=work, env=cli_env(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=30)
    assert "Traceback" not in err and "internal error" not in err, err
