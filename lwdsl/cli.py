"""The ``lwdsl`` command line: check, fmt, explain, diff, schema, ops (and run, train).

Commands raise :class:`~lwdsl.errors.LwdslError` for anything a user got wrong. One place,
:class:`_Group`, catches it, prints its rendering to stderr and exits with its code: 2 for a
bad recipe, 1 for a failed run. ``--debug`` prints the Python traceback as well. Startup stays
light: frameworks are never imported here, rich only for ``ops``.

Exit codes: 0 success; 1 a failed run, ``fmt --check`` with files to reformat, ``diff`` with
differences; 2 a bad recipe or bad usage.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from .errors import LwdslError

__all__ = ["app", "main"]


class _Group(TyperGroup):
    """The command group: where every LwdslError becomes a message and an exit code."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except LwdslError as exc:
            if ctx.params.get("debug"):
                traceback.print_exc()
            typer.echo(exc.render(), err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: nothing was written; earlier outputs and the input model are as they were", err=True)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:  # a bug of lwdsl's, not the user's: say so, briefly
            if ctx.params.get("debug"):
                traceback.print_exc()
            typer.echo(
                f"internal error: {type(exc).__name__}: {exc}\n  hint: run again with --debug for the traceback, and report it",
                err=True,
            )
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    name="lwdsl",
    help="Compression recipes (prune, quantize, distill) for PyTorch and TensorFlow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Files = Annotated[list[str], typer.Argument(help="recipe files (.lw or .json)", metavar="FILE", show_default=False)]
Sets = Annotated[
    Optional[list[str]],
    typer.Option("--set", metavar="NAME=VALUE", help="replace the value of `let NAME` (repeatable)"),
]


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="show the Python traceback of errors")] = False) -> None:
    """Compression recipes (prune, quantize, distill) for PyTorch and TensorFlow."""


def _overrides(sets: Optional[list[str]]) -> dict[str, str]:
    overrides = {}
    for item in sets or []:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise typer.BadParameter(f"{item!r}: write NAME=VALUE, e.g. --set amount=0.3", param_hint="--set")
        overrides[name.strip()] = value
    return overrides


@app.command()
def check(
    files: Files,
    backend: Annotated[
        Optional[str], typer.Option(help="also check that this backend can run every step (e.g. torch)")
    ] = None,
    sets: Sets = None,
) -> None:
    """Compile recipes and report the first error; print `ok: FILE (N steps)` for each good one."""
    from .compiler import load
    from .validate import check_backend

    overrides = _overrides(sets)
    for file in files:
        recipe = load(file, overrides=overrides)
        if backend:
            check_backend(recipe, backend)
        count = len(recipe.steps)
        typer.echo(f"ok: {file} ({count} step{'s' if count != 1 else ''})")


@app.command()
def fmt(
    files: Files,
    check: Annotated[bool, typer.Option("--check", help="change nothing; exit 1 if a file would change")] = False,
) -> None:
    """Rewrite recipes in the canonical layout, keeping comments."""
    from .compiler import read_text
    from .formatter import format_source

    changed = []
    for file in files:
        text = read_text(file)
        formatted = format_source(text, file)
        if formatted != text:
            changed.append(file)
            if not check:
                Path(file).write_text(formatted, encoding="utf-8")
            typer.echo(f"{'would reformat' if check else 'formatted'}: {file}")
    if not changed:
        typer.echo(f"{len(files)} file{'s' if len(files) != 1 else ''} already formatted")
    if check and changed:
        raise typer.Exit(1)


@app.command()
def explain(
    file: Annotated[str, typer.Argument(help="recipe file", show_default=False)],
    sets: Sets = None,
    model: Annotated[
        Optional[str], typer.Option(help="also list the layers each step matches in this model (name or file)")
    ] = None,
    backend: Annotated[str, typer.Option(help="backend that builds --model")] = "torch",
    data: Annotated[Optional[str], typer.Option(help="data set giving the input shape (default: the target's, or mnist)")] = None,
) -> None:
    """Explain a recipe step by step, with every default made explicit.

    With --model, each step also lists the layers its selector matches, with parameter counts;
    the model is only built, never changed."""
    from .compiler import load
    from .explain import explain_recipe

    recipe = load(file, overrides=_overrides(sets))
    layers = None
    if model is not None:
        from .backend import get_backend
        from .data import data_shape

        data_name = data or (recipe.target.data if recipe.target and recipe.target.data else "mnist")
        be = get_backend(backend)
        shape, classes = data_shape(data_name)
        layers = be.layers(be.load_model(model, shape, classes))
    typer.echo(explain_recipe(recipe, layers))


@app.command()
def diff(
    old: Annotated[str, typer.Argument(help="the old recipe", show_default=False)],
    new: Annotated[str, typer.Argument(help="the new recipe", show_default=False)],
    sets: Sets = None,
) -> None:
    """Show what two recipes do differently; exit 0 when nothing, 1 otherwise (like diff)."""
    from .compiler import load
    from .diff import diff_recipes, render_diff

    overrides = _overrides(sets)
    changes = diff_recipes(load(old, overrides=overrides), load(new, overrides=overrides))
    typer.echo(render_diff(changes))
    raise typer.Exit(1 if changes else 0)


@app.command()
def schema() -> None:
    """Print the JSON Schema of a recipe plan (the format of .json recipes)."""
    from .plan import Recipe

    typer.echo(json.dumps(Recipe.model_json_schema(), indent=2))


@app.command()
def ops() -> None:
    """List every operation and option, with types, ranges, defaults and backend support."""
    from rich.console import Console

    from .ops_table import print_ops

    print_ops(Console())


def main() -> None:
    """The ``lwdsl`` console script."""
    app(prog_name="lwdsl")


try:  # `run` and `train` live in lwdsl/cli_run.py, with the runner
    from .cli_run import register as _register_run
except ModuleNotFoundError as _missing:
    if _missing.name != f"{__package__}.cli_run":
        raise
else:
    _register_run(app)
