"""CLI commands that run models: ``lwdsl run`` and ``lwdsl train`` (registered by lwdsl.cli).

Kept apart from the language commands so that ``lwdsl check`` never imports a framework.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["register"]


def _overrides(values: Optional[list[str]]) -> dict[str, str]:
    from .errors import LwdslError

    out = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise LwdslError(f"--set takes NAME=VALUE, got '{item}'")
        out[name.strip()] = value.strip()
    return out


def run_command(
    recipe: Annotated[Path, typer.Argument(help="recipe file (.lw or .json)")],
    backend: Annotated[str, typer.Option(help="torch or tensorflow")] = "torch",
    model: Annotated[Optional[str], typer.Option(help="model name or file (default: the recipe's target)")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="weights to start from (.pt, .keras, .h5, .lwz); never modified")] = None,
    data: Annotated[Optional[str], typer.Option(help="mnist, fashion_mnist or synthetic:C,H,W:K")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a recipe variable: NAME=VALUE")] = None,
    out: Annotated[Optional[Path], typer.Option(help="run folder (default: runs/<recipe name>)")] = None,
    seed: Annotated[int, typer.Option(help="seed for init, data order and random pruning")] = 0,
    threads: Annotated[int, typer.Option(min=1, help="threads for latency measurements")] = 1,
    baseline_epochs: Annotated[int, typer.Option(min=1, help="epochs of the baseline trained when no checkpoint is given")] = 3,
    quiet: Annotated[bool, typer.Option(help="no progress bars or table")] = False,
) -> None:
    """Compress a model with a recipe, measure every step and write a run folder."""
    from .report import print_table
    from .runner import run

    result = run(
        recipe,
        model,
        backend=backend,
        data=data,
        checkpoint=checkpoint,
        out=out or Path("runs") / recipe.stem,
        seed=seed,
        threads=threads,
        quiet=quiet,
        overrides=_overrides(set_),
        baseline_epochs=baseline_epochs,
        echo=lambda msg: typer.echo(msg, err=True),
    )
    if not quiet:
        print_table(result.report)
        s = result.report["summary"]
        typer.echo(
            f"accuracy {100 * s['accuracy_before']:.2f}% -> {100 * s['accuracy_after']:.2f}%, "
            f"{s['nonzero_compression']:.1f}x fewer non-zero weights, file {s['size_gzip_ratio']:.1f}x smaller (gzip); "
            f"report in {result.run_dir}/report.md"
        )


def train_command(
    model: Annotated[str, typer.Argument(help="model name, e.g. lenet5")],
    data: Annotated[str, typer.Option(help="mnist, fashion_mnist or synthetic:C,H,W:K")] = "mnist",
    backend: Annotated[str, typer.Option(help="torch or tensorflow")] = "torch",
    epochs: Annotated[int, typer.Option(min=1)] = 3,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Optional[Path], typer.Option(help="also copy the weights to this .lwz file")] = None,
    quiet: Annotated[bool, typer.Option()] = False,
) -> None:
    """Train (or fetch from the cache) the baseline a run starts from without a checkpoint."""
    from .runner import run
    from .plan import Recipe
    from .weights import save_weights

    result = run(Recipe(), model, backend=backend, data=data, seed=seed, quiet=quiet, baseline_epochs=epochs, latency=False,
                 echo=lambda msg: typer.echo(msg, err=True))
    acc = result.report["steps"][0]["metrics"]["accuracy"]
    if out is not None:
        save_weights(out, result.backend.state(result.model), {"model": model, "data": data, "seed": seed, "epochs": epochs})
    typer.echo(f"{model} on {data}: test accuracy {100 * acc:.2f}%" + (f"; weights in {out}" if out else ""))


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``train`` to the CLI."""
    app.command("run")(run_command)
    app.command("train")(train_command)
