"""``use`` reads only ``.lw`` recipes under the top recipe's folder (or ``--root``): never a
file elsewhere, a device, a pipe or a folder, and an error never shows a line of such a file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lwdsl
from lwdsl.errors import RecipeError

from ._util import assert_refused, cli_env, run_cli

SECRET = "SECRET-LINE-42 prune l1 0.5"  # not a recipe: read, it would fail and be quoted


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """top/r/ holds the recipes (the root); top/outside/ and top/secret.lw are outside it."""
    top = tmp_path_factory.mktemp("use")
    r = top / "r"
    (r / "sub").mkdir(parents=True)
    (top / "outside").mkdir()
    (r / "base.lw").write_text("prune l1 0.5\n")
    (r / "sub" / "inner.lw").write_text('use "../base.lw"\nfinetune epochs=1\n')
    (r / "notes.txt").write_text(SECRET + "\n")
    (r / "folder.lw").mkdir()
    os.mkfifo(r / "pipe.lw")
    (top / "secret.lw").write_text(SECRET + "\n")
    (top / "outside" / "other.lw").write_text("prune l1 0.5\n")  # a good recipe, outside the root
    os.symlink(top / "secret.lw", r / "link-out.lw")
    os.symlink(r / "base.lw", r / "link-in.lw")
    os.symlink("/dev/zero", r / "zero.lw")
    return top


_PIECES = st.sampled_from(
    ["..", ".", "sub", "r", "outside", "base.lw", "inner.lw", "secret.lw", "other.lw", "notes.txt", "folder.lw",
     "pipe.lw", "link-out.lw", "link-in.lw", "zero.lw", "etc", "passwd", "dev", "zero", "missing.lw"]
)


def _allowed(top: Path, written: str) -> bool:
    """What the rule allows: a .lw regular file whose real path is under top/r."""
    path = (top / "r" / written).resolve()
    return written.endswith(".lw") and path.is_relative_to((top / "r").resolve()) and path.is_file()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_PIECES, min_size=1, max_size=6), absolute=st.booleans())
def test_use_reads_only_recipes_under_the_root_and_never_quotes_other_files(tree: Path, parts, absolute) -> None:
    written = ("/" if absolute else "") + "/".join(parts)
    if absolute:
        written = str(tree) + written if parts[0] in ("r", "outside") else written
    main = tree / "r" / "main.lw"
    text = f'use "{written}"\nquantize int8 on linear\n'
    try:
        recipe = lwdsl.parse(text, file=str(main))
    except RecipeError as exc:
        shown = exc.render()
        assert SECRET not in shown and "SECRET" not in shown
        if not _allowed(tree, written):
            assert exc.location is not None and exc.location.line == 1 and exc.location.file == str(main)
        return
    assert _allowed(tree, written), written
    assert recipe.steps[-1].op == "quantize"


def test_the_attacks_of_the_issue_are_refused_on_the_use_line(tree: Path) -> None:
    main = tree / "r" / "main.lw"
    for written, why in [
        ("../../../../etc/passwd", "reads only recipe files"),
        ("/etc/passwd", "reads only recipe files"),
        ("/dev/zero", "reads only recipe files"),
        ("../secret.lw", "outside"),
        ("link-out.lw", "outside"),
        ("zero.lw", "outside"),
        ("pipe.lw", "not a regular file"),
        ("folder.lw", "it is a folder"),
    ]:
        with pytest.raises(RecipeError) as err:
            lwdsl.parse(f'use "{written}"\n', file=str(main))
        shown = err.value.render()
        assert why in shown and str(main) + ":1:5" in shown and SECRET not in shown, shown


def test_root_widens_the_tree_on_purpose(tree: Path) -> None:
    main = tree / "r" / "main.lw"
    main.write_text('use "../outside/other.lw"\n')
    with pytest.raises(RecipeError, match="outside"):
        lwdsl.load(main)
    assert [s.op for s in lwdsl.load(main, root=tree).steps] == ["prune"]
    assert [s.op for s in lwdsl.load(tree / "r" / "sub" / "inner.lw", root=tree / "r").steps] == ["prune", "finetune"]


def test_check_follows_the_rule_from_the_command_line(tree: Path) -> None:
    (tree / "r" / "cli.lw").write_text('use "../outside/other.lw"\n')
    done = run_cli(["check", "r/cli.lw"], tree, env=cli_env(tree), timeout=30)
    assert_refused(done, "r/cli.lw:1:5", "outside")
    done = run_cli(["check", "r/cli.lw", "--root", "."], tree, env=cli_env(tree), timeout=30)
    assert done.code == 0 and "ok: r/cli.lw (1 step)" in done.out, done.text


def test_a_pipe_or_device_given_as_the_recipe_is_refused_without_reading(tree: Path) -> None:
    done = run_cli(["check", "r/pipe.lw", "/dev/zero", "r"], tree, env=cli_env(tree), timeout=20, memory_mb=600)
    assert_refused(done, "r/pipe.lw", "not a regular file")


# --- issue 27: links to files that are not recipes, given on the command line or used ---------------


def test_a_recipe_that_is_a_link_out_of_its_folder_is_refused_without_reading(tree: Path) -> None:
    (tree / "r" / "env").mkdir(exist_ok=True)
    (tree / "r" / "env" / ".env").write_text(SECRET + "\n")
    links = {"passwd.lw": tree / "secret.lw", "dot-env.lw": tree / "r" / "env" / ".env", "up.lw": tree / "outside" / "other.lw"}
    for name, target in links.items():
        if not (tree / "r" / name).is_symlink():
            os.symlink(target, tree / "r" / name)
    for name, why in [("passwd.lw", "outside"), ("dot-env.lw", "not a .lw file"), ("up.lw", "outside")]:
        with pytest.raises(RecipeError) as err:
            lwdsl.load(tree / "r" / name)
        assert why in err.value.render() and "SECRET" not in err.value.render()
        done = run_cli(["check", f"r/{name}"], tree, env=cli_env(tree), timeout=30)
        assert_refused(done, f"r/{name}", why)
        assert "SECRET" not in done.text
    os.symlink(tree / "r" / "env" / ".env", tree / "r" / "env" / "vars.lw")  # inside its folder, not a recipe
    done = run_cli(["check", "r/env/vars.lw"], tree, env=cli_env(tree), timeout=30)
    assert_refused(done, "r/env/vars.lw", "not a .lw file")
    assert "SECRET" not in done.text
    done = run_cli(["fmt", "--check", "r/passwd.lw"], tree, env=cli_env(tree), timeout=30)
    assert done.code == 2 and "SECRET" not in done.text, done.text


def test_use_of_a_recipe_link_to_a_file_that_is_not_a_recipe_is_refused(tree: Path) -> None:
    (tree / "r" / ".env").write_text(SECRET + "\n")
    if not (tree / "r" / "vars.lw").is_symlink():
        os.symlink(tree / "r" / ".env", tree / "r" / "vars.lw")  # under the root, but a .env
    with pytest.raises(RecipeError) as err:
        lwdsl.parse('use "vars.lw"\nprune l1 0.2\n', file=str(tree / "r" / "main.lw"))
    shown = err.value.render()
    assert "reads only recipe files" in shown and "not a .lw file" in shown and "SECRET" not in shown
    assert str(tree / "r" / "main.lw") + ":1:5" in shown
