"""``lwdsl search``: find the values of a recipe's ``choice``/``range`` variables (registered by
:mod:`lwdsl.cli.run_cmd` with ``run``). The flow is :mod:`lwdsl.runner.search`.

Exit codes: 0 a best recipe that meets the constraint is in ``OUT/best.lw``; 3 no trial met
``--max-drop`` (the best-so-far is written, and the line says by how much it misses); 1 no trial
finished; 2 bad input (recipe, options, an OUT holding another search); 130/143 interrupted
(the running trial is lost, the others are kept: the same command resumes).
"""

# No `from __future__ import annotations` here: Typer reads every option's annotation when it builds
# the commands (all of them, for any command), and a string annotation costs an eval each: about 20 ms
# of every `lwdsl check`'s start-up (bench/parse_bench.py).

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..limits import MAX_EPOCHS, MAX_SEED, MAX_THREADS

__all__ = ["search_command"]

#: At most this many trials in one search (a budget, not a memory limit).
MAX_TRIALS = 100_000


def search_command(
    recipe: Annotated[str, typer.Argument(metavar="RECIPE", help="recipe with `let NAME = choice(...)`/`range(...)` (.lw)", show_default=False)],
    trials: Annotated[int, typer.Option(min=1, max=MAX_TRIALS, metavar="N", help="trials in all (a rerun of the same command counts the earlier ones)")] = 20,
    time_: Annotated[
        Optional[float], typer.Option("--time", min=1, metavar="SECONDS", help="start no trial after this long (the running one finishes)")
    ] = None,
    objective: Annotated[
        str,
        typer.Option(metavar="NAME[,NAME]", help="size, params, latency or macs, minimised; two for a Pareto front (size,accuracy)"),
    ] = "size",
    max_drop: Annotated[
        Optional[float],
        typer.Option(metavar="POINTS", help="at most this many points of test accuracy lost, absolute, against the baseline"),
    ] = None,
    out: Annotated[Optional[str], typer.Option(metavar="DIR", help="search folder (default: runs/search-<recipe name>); the same command resumes it")] = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, metavar="N", help="seed of the sampler and of every trial's run")] = 0,
    storage: Annotated[
        Optional[str], typer.Option(metavar="URL", help="a database shared by several machines (default: OUT/search.db, SQLite)")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, metavar="N", help="trials run at once on this machine, each in its own process")] = 1,
    model: Annotated[Optional[str], typer.Option(metavar="NAME|FILE", help="model name or file (default: the recipe's target)")] = None,
    data: Annotated[Optional[str], typer.Option(metavar="DATA", help="mnist, fashion_mnist or synthetic:C,H,W:K")] = None,
    backend: Annotated[str, typer.Option(metavar="NAME", help="torch or tensorflow")] = "torch",
    checkpoint: Annotated[
        Optional[Path], typer.Option(metavar="FILE", exists=True, dir_okay=False, help="weights every trial starts from; never modified")
    ] = None,
    baseline_epochs: Annotated[
        int, typer.Option(min=1, max=MAX_EPOCHS, metavar="N", help="epochs of the baseline trained (once) when no checkpoint is given")
    ] = 3,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="NAME=VALUE", help="fix a variable, searched or not (repeatable)")] = None,
    root: Annotated[
        Optional[Path], typer.Option(metavar="DIR", file_okay=False, help="the folder `use` may read recipes from (default: the recipe's folder)")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, max=MAX_THREADS, metavar="N", help="threads for latency measurements")] = 1,
    train_threads: Annotated[
        Optional[int], typer.Option(min=1, max=MAX_THREADS, metavar="N", help="threads for training and evaluation (default: the CPUs this process may use)")
    ] = None,
    device: Annotated[str, typer.Option(metavar="DEV", help="auto, cpu, cuda, cuda:N or mps")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no baseline or trial lines: only the result (or the error)")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="also the settings, and each trial's model, data, resolved arguments and phase timings")
    ] = False,
    track: Annotated[
        Optional[str], typer.Option(metavar="TRACKER", help="log the search to an experiment tracker: mlflow (a run, a nested run a trial)")
    ] = None,
) -> None:
    """Search the values of a recipe's `choice`/`range` variables; write the best as a plain recipe (OUT/best.lw).

    Every trial is one run of the recipe with values Optuna picks (TPE, seeded; NSGA-II for two
    objectives), into OUT/trials/NNN/, from one baseline. The best trial has the smallest
    objective among those within --max-drop. Exit 3 when no trial meets --max-drop (the
    best-so-far is written all the same); the same command resumes an interrupted search."""
    from .args import Terminated, check_backend_name, check_verbosity, parse_sets
    from ..backend.threads import check_device
    from ..data.builtin import data_shape
    from ..runner.search import search
    from ..runner.search_settings import NO_FEASIBLE_EXIT, SearchSettings, check_settings

    check_verbosity(quiet, verbose)
    check_backend_name(backend)
    check_device(device)
    if data is not None:
        data_shape(data)
    settings = SearchSettings(
        recipe=Path(recipe), out=Path(out if out is not None else str(Path("runs") / f"search-{Path(recipe).stem}")),
        trials=trials, objectives=tuple(o.strip() for o in objective.split(",") if o.strip()), max_drop=max_drop,
        seconds=time_, seed=seed, storage=storage, workers=workers, sets=parse_sets(set_), root=root, model=model,
        data=data, backend=backend, checkpoint=checkpoint, baseline_epochs=baseline_epochs, threads=threads,
        train_threads=train_threads, device=device,
    )
    check_settings(settings)
    say = lambda msg: typer.echo(msg, err=True)  # noqa: E731
    try:
        result = search(settings, echo=say, quiet=quiet, track=track, verbose=verbose)
    except KeyboardInterrupt as exc:
        folder = settings.out
        say(
            f"{'terminated (SIGTERM)' if isinstance(exc, Terminated) else 'interrupted'}: the running trial is lost; "
            f"the finished ones are kept in {folder} (best.lw and trials.md show them): run the same command to go on"
        )
        raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None
    from ..runner.search_output import constraint_words

    best = result.best
    f = best.figures
    finished = sum(1 for t in result.trials if t.finished)
    values = ", ".join(f"{k}={v}" for k, v in best.values.items())
    typer.echo(
        f"best: trial #{best.number} of {finished} ({values}): accuracy {100 * f['accuracy_before']:.2f}% -> "
        f"{100 * f['accuracy_after']:.2f}%, {f['size_gzip_bytes']:,} B gzip "
        f"({f['baseline_size_gzip_bytes'] / max(f['size_gzip_bytes'], 1):.1f}x smaller); {result.stopped}; "
        f"recipe in {result.out}/best.lw, every trial in {result.out}/trials.md"
    )
    if result.front:
        typer.echo(f"Pareto front: {', '.join('#' + str(t.number) for t in result.front)} (marked in trials.md; front.png)")
    if result.exit_code == NO_FEASIBLE_EXIT:
        say(f"no trial met the constraint: {constraint_words(settings, best)}; best.lw is the closest (exit {NO_FEASIBLE_EXIT})")
        raise typer.Exit(NO_FEASIBLE_EXIT)
