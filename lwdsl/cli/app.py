"""The ``lwdsl`` command line: check, fmt, explain, diff, schema, ops (and run, train).

Commands raise :class:`~lwdsl.errors.LwdslError` for anything a user got wrong. One place,
:class:`_Group`, catches it, prints its rendering to stderr and exits with its code: 2 for bad
input (a bad recipe, an unknown name, a value out of range, an ``--out`` that must not be
replaced), 1 for a failed run. ``--debug`` (before or after the command) prints the Python
traceback as well. Ctrl-C exits 130 and SIGTERM 143, each with one line, after the run has
cleaned up. Startup stays light: frameworks are never imported here, rich only for ``ops``.

Exit codes: 0 success; 1 a failed run, ``fmt --check`` with files to reformat, ``diff`` with
differences; 2 bad input or bad usage; 130 interrupted; 143 terminated.
"""

# No `from __future__ import annotations` here: Typer reads every option's annotation when it builds
# the commands (all of them, for any command), and a string annotation costs an eval each: about 20 ms
# of every `lwdsl check`'s start-up (bench/parse_bench.py).

import copy
import json
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from .args import _INTERRUPTED, Terminated, _on_sigterm, _terminated, check_backend_name, parse_sets
from ..errors import LwdslError, UsageError

__all__ = ["app", "main", "parse_sets", "Terminated"]

_DEBUG = "lwdsl.debug"  # key in the click context's meta, shared by the group and its commands


def _set_debug(ctx: typer.Context, _param: Any, value: bool) -> bool:
    if value:
        ctx.meta[_DEBUG] = True
    return value


def _readable(param: Any) -> None:
    """Help shows a word (``NAME``, ``N``), never a Python type (``<list[str]>``): a flag shows
    nothing, an option its metavar, an argument its name."""
    if isinstance(param, TyperArgument):
        param.display_type_rich = lambda ctx: None  # the name (its metavar) says it all
    elif isinstance(param, TyperOption) and param.metavar is None:
        param.metavar = "" if param.is_flag else param.name.upper()


def _readable_command(command: Any) -> None:
    for param in command.params:
        _readable(param)
    make_help = command.get_help_option  # built when help is shown: made readable then

    def get_help_option(ctx: Any) -> Any:
        option = make_help(ctx)
        if option is not None:
            _readable(option)
        return option

    command.get_help_option = get_help_option


class _Group(TyperGroup):
    """The command group: where every LwdslError becomes a message and an exit code, and where
    every command gets ``--debug`` and readable help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        debug = next((p for p in self.params if p.name == "debug"), None)
        for command in self.commands.values():
            if debug is not None and not any(p.name == "debug" for p in command.params):
                own = copy.copy(debug)  # the group's --debug, accepted after the command too
                own.expose_value = False
                command.params.append(own)
            _readable_command(command)
        _readable_command(self)

    def invoke(self, ctx: typer.Context):
        debug = lambda: bool(ctx.params.get("debug") or ctx.meta.get(_DEBUG))  # noqa: E731
        try:
            return super().invoke(ctx)
        except LwdslError as exc:
            if debug():
                traceback.print_exc()
            from .colour import recipe_highlighter

            highlight = recipe_highlighter(sys.stderr) if getattr(exc, "location", None) else None  # a recipe line to show
            typer.echo(exc.render(highlight=highlight), err=True, color=True if highlight else None)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            typer.echo(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}{_INTERRUPTED[11:]}", err=True)
            raise typer.Exit(143 if terminated else 130) from None
        except BrokenPipeError:  # the reader went away (`lwdsl ops | head`): stop quietly
            _drop_stdout()
            raise typer.Exit(141) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:  # a bug of lwdsl's, not the user's: say so, briefly
            if debug():
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
    context_settings={"help_option_names": ["-h", "--help"]},
)

Files = Annotated[list[str], typer.Argument(help="recipe files (.lw or .json)", metavar="FILE", show_default=False)]
Sets = Annotated[
    Optional[list[str]],
    typer.Option("--set", metavar="NAME=VALUE", help="replace the value of `let NAME` (repeatable)"),
]
Root = Annotated[
    Optional[Path],
    typer.Option(
        "--root",
        metavar="DIR",
        help="the folder `use` may read recipes from (default: the recipe's folder)",
        file_okay=False,
    ),
]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"lwdsl {version('lwdsl')}")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            typer.echo("lwdsl (version unknown: not installed)")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="show the Python traceback of errors", callback=_set_debug)] = False,
    version: Annotated[
        bool, typer.Option("--version", help="print the version and exit", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """Compression recipes (prune, quantize, distill) for PyTorch and TensorFlow."""


def _support_note(recipe: Any) -> str:
    """Which built-in backends can run ``recipe``, from their static support tables (imports
    no framework), as a note line wrapped to 80 columns; "" when no table is available."""
    import re
    import textwrap

    from ..backend import BACKENDS, support_table
    from ..errors import RecipeError
    from ..language.validate import check_backend

    can: list[str] = []
    cannot: dict[str, list[str]] = {}  # first step it cannot run -> backends
    for name in BACKENDS:
        if support_table(name) is None:
            continue
        try:
            check_backend(recipe, name, load=False)
            can.append(name)
        except RecipeError as exc:
            label = re.match(r"step \d+ `.*?`(?=: )", exc.message)
            cannot.setdefault(label[0] if label else exc.message, []).append(name)
    if not cannot:
        text = f"note: runs on {' and '.join(can)}" if can else ""
    else:
        why = "; ".join(f"{' and '.join(names)} cannot run {step}" for step, names in cannot.items())
        text = f"note: runs on {' and '.join(can)} only ({why})" if can else f"note: no backend runs it yet ({why})"
    return textwrap.fill(text, 80, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False) if text else ""


@app.command()
def check(
    files: Files,
    backend: Annotated[
        Optional[str],
        typer.Option(metavar="NAME", help="also check that this backend can run every step (e.g. torch)"),
    ] = None,
    sets: Sets = None,
    root: Root = None,
) -> None:
    """Compile recipes and report the first error; print `ok: FILE (N steps)` and which backends run each good one."""
    from ..language.compiler import load
    from ..language.validate import check_backend

    overrides = parse_sets(sets)
    if backend:
        check_backend_name(backend)
    for file in files:
        recipe = load(file, overrides=overrides, root=root)
        if backend:
            check_backend(recipe, backend)
        count = len(recipe.steps)
        space = f"; a search space: {recipe.space_words()}" if recipe.space else ""
        typer.echo(f"ok: {file} ({count} step{'s' if count != 1 else ''}{space})")
        if not backend:
            note = _support_note(recipe)
            if note:
                typer.echo(note)


@app.command()
def fmt(
    files: Files,
    check: Annotated[bool, typer.Option("--check", help="change nothing; exit 1 if a file would change")] = False,
) -> None:
    """Rewrite recipes in the canonical layout, keeping comments (a .json plan: canonical JSON)."""
    from ..language.compiler import read_text
    from ..language.formatter import format_source

    changed = []
    for file in files:
        text = read_text(file)
        if Path(file).suffix == ".json":
            from ..language.jsonplan import recipe_from_json

            formatted = recipe_from_json(text, file=file).to_json() + "\n"
        else:
            formatted = format_source(text, file)
        if formatted != text:
            changed.append(file)
            if not check:
                _rewrite(Path(file), formatted)
            typer.echo(f"{'would reformat' if check else 'formatted'}: {file}")
    if not changed:
        typer.echo(f"{len(files)} file{'s' if len(files) != 1 else ''} already formatted")
    if check and changed:
        raise typer.Exit(1)


def _rewrite(path: Path, text: str) -> None:
    """Replace the file's text atomically (an interruption never leaves half a recipe), keeping
    its permissions, and writing through a symbolic link rather than replacing it. A folder that
    cannot take the write (read-only, full) is a UsageError naming it; the file stays as it was."""
    import shutil

    from ..runner.outdir import is_write_error, write_error
    from ..backend.weights import atomic_path

    target = path.resolve()
    try:
        with atomic_path(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
            shutil.copymode(target, tmp)
    except OSError as exc:  # a read-only folder, a full disk: say where, leave the file as it was
        if not is_write_error(exc):
            raise
        raise write_error(exc, "fmt", target, needed=len(text.encode()), kind=UsageError, then=f"{path} is unchanged") from None


@app.command()
def explain(
    file: Annotated[str, typer.Argument(help="recipe file", metavar="FILE", show_default=False)],
    sets: Sets = None,
    model: Annotated[
        Optional[str],
        typer.Option(metavar="NAME|FILE", help="also list the layers each step matches in this model (name or file)"),
    ] = None,
    backend: Annotated[str, typer.Option(metavar="NAME", help="backend that builds --model")] = "torch",
    data: Annotated[
        Optional[str],
        typer.Option(metavar="DATA", help="data set giving the input shape (default: the target's, or mnist)"),
    ] = None,
    root: Root = None,
) -> None:
    """Explain a recipe step by step, with every default made explicit.

    With --model, each step also lists the layers its selector matches, with parameter counts,
    and a `prune ... remove=true` step the dependency groups it removes channels from (or why
    it is refused, as `run` would refuse it before training); a model that does not take the
    data is refused as `run` refuses it. The model is only built, never changed. On a terminal
    the recipe text is in colour (NO_COLOR=1 turns it off)."""
    from ..language.compiler import load
    from .colour import recipe_highlighter
    from .explain import explain_recipe

    recipe = load(file, overrides=parse_sets(sets), root=root)
    layers = groups = None
    if model is not None:
        from ..backend import get_backend
        from ..data.builtin import data_shape, data_task
        from ..backend.removal import needs_groups
        from ..runner.pipeline import check_fit, load_model_ref

        check_backend_name(backend)
        given = data or (recipe.target.data if recipe.target and recipe.target.data else None)
        data_name = given or "mnist"
        shape, classes = data_shape(data_name)
        be = get_backend(backend)
        built = load_model_ref(be, model, tuple(shape), classes)
        layers = be.layers(built)
        if given or needs_groups(recipe):  # as `run` checks it; listing layers alone needs no data
            assumed = "" if given else " (assumed: the recipe has no `target ... on DATA` and no --data was given)"
            check_fit(be, built, tuple(shape), classes, model, data_name, assumed=assumed, task=data_task(data_name))
        if needs_groups(recipe):
            groups = be.groups(built)
    highlight = recipe_highlighter(sys.stdout)  # recipe text in colour, on a terminal only (NO_COLOR honoured)
    typer.echo(explain_recipe(recipe, layers, groups, highlight=highlight), color=True if highlight else None)


@app.command()
def diff(
    old: Annotated[str, typer.Argument(help="the old recipe", metavar="OLD", show_default=False)],
    new: Annotated[str, typer.Argument(help="the new recipe", metavar="NEW", show_default=False)],
    sets: Sets = None,
    root: Root = None,
) -> None:
    """Show what two recipes do differently; exit 0 when nothing, 1 otherwise (like diff)."""
    from ..language.compiler import load
    from ..language.diff import diff_recipes, render_diff

    overrides = parse_sets(sets)
    changes = diff_recipes(load(old, overrides=overrides, root=root), load(new, overrides=overrides, root=root))
    typer.echo(render_diff(changes))
    raise typer.Exit(1 if changes else 0)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="run folders lwdsl run wrote", metavar="RUN_DIR...", show_default=False)],
    plot: Annotated[Path, typer.Option(metavar="FILE.png", help="where the accuracy/size/latency plot goes")] = Path("compare.png"),
    json_out: Annotated[Optional[Path], typer.Option("--json", metavar="FILE", help="also write the table as JSON")] = None,
) -> None:
    """Runs side by side: accuracy, size, latency, recipe differences, and a plot of them."""
    from ..runner.compare import compare_plot, compare_runs

    if plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {plot}: give a .png file name")
    rows, text = compare_runs(runs)
    typer.echo(text)
    written = compare_plot(rows, plot)
    if json_out is not None:
        from ..backend.weights import atomic_path

        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    typer.echo(f"\nplot: {written}" if written else "\n(no plot: matplotlib is not installed)")


@app.command()
def schema() -> None:
    """Print the JSON Schema of a recipe plan (the format of .json recipes)."""
    from ..language.plan import Recipe

    typer.echo(json.dumps(Recipe.model_json_schema(), indent=2))


@app.command()
def ops() -> None:
    """List every operation and option, with types, ranges, defaults and backend support."""
    from rich.console import Console

    from .ops_table import print_ops

    print_ops(Console())




def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout without a file descriptor
        pass


def main() -> None:
    """The ``lwdsl`` console script: SIGTERM is handled like Ctrl-C (clean up, one line, 143)."""
    from ..backend.threads import quiet_openmp

    quiet_openmp()  # before any command loads torch (lwdsl/backend/threads.py says why)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app(prog_name="lwdsl")
    except BrokenPipeError:
        _drop_stdout()
        sys.exit(141)
    except SystemExit as exc:
        if _terminated and exc.code != 143:  # arrived outside a command, where click says "Aborted!"
            sys.exit(143)
        raise


try:  # `run` and `train` live in lwdsl/cli_run.py, with the runner
    from .run_cmd import register as _register_run
except ModuleNotFoundError as _missing:
    if _missing.name != f"{__package__}.cli_run":
        raise
else:
    _register_run(app)
