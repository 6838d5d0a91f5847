"""Colour only on a terminal: `lwdsl explain` and recipe errors highlight the recipe text with
the recipe lexer when the output is a terminal (a real pseudo-terminal here), never in a pipe or
a log, never with NO_COLOR; FORCE_COLOR turns it on without a terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lwdsl.cli.colour import colour_on, recipe_highlighter

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LWDSL = str(Path(sys.executable).with_name("lwdsl"))


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture
def plain_env(monkeypatch):
    for name in ("NO_COLOR", "FORCE_COLOR", "TERM"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_colour_is_on_for_a_terminal_only_and_no_color_wins(plain_env):
    assert colour_on(_Stream(True)) and not colour_on(_Stream(False)) and not colour_on(object())
    plain_env.setenv("NO_COLOR", "1")
    assert not colour_on(_Stream(True)) and recipe_highlighter(_Stream(True)) is None
    plain_env.setenv("FORCE_COLOR", "1")
    assert not colour_on(_Stream(True))  # NO_COLOR wins over everything
    plain_env.setenv("NO_COLOR", "")  # set but empty: no-color.org says it does not count
    assert colour_on(_Stream(False))  # FORCE_COLOR without a terminal
    plain_env.delenv("FORCE_COLOR")
    plain_env.setenv("TERM", "dumb")
    assert not colour_on(_Stream(True))


def test_the_highlighter_colours_recipe_text_by_the_lexer_and_keeps_it(plain_env):
    colour = recipe_highlighter(_Stream(True))
    text = 'prune l1 0.5 on "fc*"  # why'
    shown = colour(text)
    assert ANSI.sub("", shown) == text and shown != text
    assert re.search(r"\x1b\[[0-9;]*mprune\x1b", shown) and re.search(r"\x1b\[[0-9;]*m0\.5\x1b", shown)
    assert recipe_highlighter(_Stream(False)) is None


def _run(args: list[str], tmp_path: Path, terminal: bool, **env: str) -> tuple[int, str]:
    """``lwdsl ARGS`` with stdout and stderr on a pseudo-terminal (or a pipe): exit code, output."""
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM")}
    environ.update(LWDSL_CACHE=str(tmp_path / "cache"), TERM="xterm", COLUMNS="100", **env)
    if not terminal:
        done = subprocess.run([LWDSL, *args], capture_output=True, text=True, env=environ, cwd=tmp_path, timeout=120)
        return done.returncode, done.stdout + done.stderr
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen([LWDSL, *args], stdout=follower, stderr=follower, env=environ, cwd=tmp_path)
    finally:
        os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the other side closed (EIO on Linux)
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=120), b"".join(chunks).decode().replace("\r\n", "\n")


def test_explain_is_in_colour_on_a_terminal_only(tmp_path):
    (tmp_path / "r.lw").write_text("let amount = 50%\nprune l1 $amount on conv\nquantize int8  # small\n")
    code, coloured = _run(["explain", "r.lw"], tmp_path, terminal=True)
    assert code == 0, coloured
    step = next(line for line in coloured.splitlines() if line.startswith("1. "))
    assert ANSI.search(step) and ANSI.sub("", step) == "1. prune l1 0.5 on conv"
    assert not any(ANSI.search(line) for line in coloured.splitlines() if line.startswith("   "))  # the prose stays plain
    code, piped = _run(["explain", "r.lw"], tmp_path, terminal=False)
    assert code == 0 and not ANSI.search(piped)
    assert ANSI.sub("", coloured) == piped  # the same words, colour aside
    code, no_color = _run(["explain", "r.lw"], tmp_path, terminal=True, NO_COLOR="1")
    assert code == 0 and not ANSI.search(no_color) and no_color == piped


def test_a_recipe_error_shows_its_source_line_in_colour_on_a_terminal_only(tmp_path):
    (tmp_path / "bad.lw").write_text("prune l1 0.5 on conv\nquantise int8 calibrate=100\n")
    code, coloured = _run(["check", "bad.lw"], tmp_path, terminal=True)
    assert code == 2
    lines = coloured.splitlines()
    source = lines[lines.index(next(line for line in lines if "error:" in line)) + 1]
    assert ANSI.search(source) and ANSI.sub("", source) == "    quantise int8 calibrate=100"
    assert lines[lines.index(source) + 1] == "    ^^^^^^^^"  # the caret, plain, under the word
    code, piped = _run(["check", "bad.lw"], tmp_path, terminal=False)
    assert code == 2 and not ANSI.search(piped) and ANSI.sub("", coloured) == piped
    code, no_color = _run(["check", "bad.lw"], tmp_path, terminal=True, NO_COLOR="1")
    assert code == 2 and no_color == piped
