"""`import lwdsl` (and the CLI's startup) never imports a framework; `lwdsl check` (run by
pre-commit on every commit) imports only what checking a recipe needs; the public names load
on first use and still work as plain imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import lwdsl

HEAVY = ("torch", "tensorflow", "keras", "tf_keras")


@pytest.mark.parametrize("module", ["lwdsl", "lwdsl.cli.app"])
def test_no_framework_on_import(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_public_api() -> None:
    assert set(lwdsl.__all__) >= {"parse", "load", "Recipe", "RecipeError", "LwdslError"}
    assert issubclass(lwdsl.RecipeError, lwdsl.LwdslError)
    with pytest.raises(AttributeError):
        lwdsl.no_such_thing  # noqa: B018


#: What a check never needs: the frameworks, numpy (data, backends), rich (tables, bars), Pygments
#: (colour on a terminal only), and the optional extras of run, search, compare and track.
NOT_FOR_CHECK = (*HEAVY, "numpy", "rich", "pygments", "optuna", "mlflow", "matplotlib", "onnx", "onnxruntime", "PIL", "lwdsl.runner")

_CHECK = """
import contextlib, io, sys
sys.argv = ["lwdsl", "check", *sys.argv[1:]]
from lwdsl.cli.app import main
with contextlib.redirect_stdout(io.StringIO()) as shown:
    try:
        main()
    except SystemExit as exc:
        assert exc.code in (0, None), (exc.code, shown.getvalue())
assert shown.getvalue().startswith("ok: "), shown.getvalue()
"""


@pytest.mark.parametrize("recipe", ["lenet5-mnist.lw", "lenet5-mnist-space.lw", "distill-student.lw"])
def test_lwdsl_check_imports_no_framework_numpy_or_extra(recipe: str, tmp_path) -> None:
    path = str(Path(__file__).resolve().parents[2] / "recipes" / recipe)
    code = _CHECK + "\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert sorted(m for m in loaded if any(m == n or m.startswith(n + ".") for n in NOT_FOR_CHECK)) == []
    assert "lark" in loaded and "lwdsl.language.compiler" in loaded  # it did compile the recipe


def test_import_lwdsl_loads_the_compiler_only_when_a_name_is_used(tmp_path) -> None:
    code = """
import sys, lwdsl
light = not any(m in sys.modules for m in ("lark", "pydantic", "lwdsl.language.compiler", "numpy"))
from lwdsl import parse, RecipeError
recipe = lwdsl.parse("prune l1 0.5 | finetune")
again = lwdsl.Recipe.from_json(recipe.to_json())  # the JSON reader is registered with the compiler
print(light, again == recipe, "lwdsl.language.compiler" in sys.modules, sorted(set(lwdsl.__all__) - set(dir(lwdsl))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(tmp_path), check=True).stdout
    assert out.split("\n")[0] == "True True True []"


def test_reading_a_support_table_does_not_import_numpy(tmp_path) -> None:
    code = """
import sys
from lwdsl.backend import BACKENDS, support_table
tables = [support_table(name) for name in BACKENDS]
print(all(tables), "numpy" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(tmp_path), check=True).stdout
    assert out.strip() == "True False"


def test_the_lazy_names_are_the_real_ones() -> None:
    from lwdsl.backend import Backend, Dataset, StepContext, get_backend
    from lwdsl.backend.protocol import Backend as real_backend
    from lwdsl.data.dataset import Dataset as real_dataset
    from lwdsl.errors import RecipeError
    from lwdsl.runner.pipeline import run

    assert Backend is real_backend and Dataset is real_dataset and callable(get_backend) and StepContext
    assert lwdsl.RecipeError is RecipeError and lwdsl.run is run
    with pytest.raises(AttributeError):
        import lwdsl.backend as be

        be.no_such_thing  # noqa: B018


def _env(tmp_path) -> dict[str, str]:
    import os

    return {**os.environ, "LWDSL_CACHE": str(tmp_path / "cache")}
