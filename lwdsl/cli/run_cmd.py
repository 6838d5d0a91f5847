"""CLI commands that run models: ``lwdsl run`` and ``lwdsl train`` (registered by lwdsl.cli.app).

Kept apart from the language commands so that ``lwdsl check`` never imports a framework.

Everything a user gives is checked before any work, and a bad value exits 2 with one line:
the recipe (compiled here, ``use`` confined to ``--root``), the backend name, the data set name
(``synthetic:`` sizes included) or path (its layout, classes and first image; its preprocessing
options ``--resize``, ``--crop``, ``--mean``, ``--std``, ``--channels``, ``--split``), ``--seed``, ``--threads``, the epochs, and ``--out``
(:func:`lwdsl.runner.outdir.check_out`: only a run folder lwdsl wrote is ever replaced). The run then
holds ``OUT.lock`` (:class:`lwdsl.runner.outdir.RunLock`), so a second run to the same folder is
refused instead of silently losing one result.

``--workers N`` starts N processes on this machine through torch's elastic launcher (torch) or
with a ``TF_CONFIG`` each (tensorflow, :mod:`lwdsl.backend.tfconfig`), each running this same
command as one rank (:mod:`lwdsl.runner.ranks`); this process holds
the lock meanwhile and exits with the workers' exit code. With ``--max-restarts M`` the
launcher (torch's elastic agent; lwdsl's own for tensorflow) restarts the group when a worker
fails, up to M times, and the restarted workers resume from the last point.
``--rdzv-timeout S`` bounds the wait for the workers to join (exit 2 after it). Under a launcher of the user's own
(``torchrun ... -m lwdsl run ...``) each process is one rank already; rank 0 takes the lock.
"""

# No `from __future__ import annotations` here: Typer reads every option's annotation when it builds
# the commands (all of them, for any command), and a string annotation costs an eval each: about 20 ms
# of every `lwdsl check`'s start-up (bench/parse_bench.py).

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..limits import MAX_EPOCHS, MAX_RDZV_TIMEOUT_S, MAX_RESTARTS, MAX_SEED, MAX_THREADS, MAX_WORKERS

__all__ = ["register"]

Backend = Annotated[str, typer.Option(metavar="NAME", help="torch or tensorflow")]
DataHelp = ("mnist, fashion_mnist, synthetic:C,H,W:K, pydoc (token sequences), pydoc-code (labelled token sequences), or a path: a folder of class folders (train/ and test/, or split), "
            "a .npz (x_train, y_train, x_test, y_test), a CIFAR-10/100 binary folder, a Hugging Face datasets folder; "
            "options as PATH?resize=64&crop=56")
_PANEL = "Data read from a path"
Resize = Annotated[Optional[str], typer.Option(metavar="S|HxW", rich_help_panel=_PANEL,
                                               help="resize: shorter side to S, or exactly HxW (default: none)")]
Crop = Annotated[Optional[str], typer.Option(metavar="S|HxW", rich_help_panel=_PANEL, help="centre crop (default: none)")]
Mean = Annotated[Optional[str], typer.Option(metavar="M[,M,M]", rich_help_panel=_PANEL,
                                             help="normalisation mean, one or per channel (default 0.5)")]
Std = Annotated[Optional[str], typer.Option(metavar="S[,S,S]", rich_help_panel=_PANEL,
                                            help="normalisation std, one or per channel (default 0.5)")]
Channels = Annotated[Optional[int], typer.Option(metavar="1|3", rich_help_panel=_PANEL,
                                                 help="convert images to 1 (grey) or 3 channels (default: the first image's)")]
Split = Annotated[Optional[float], typer.Option(metavar="F", rich_help_panel=_PANEL,
                                                help="test fraction of data with no test split (default 0.2; seeded, stratified)")]


def _data_options(resize: Optional[str], crop: Optional[str], mean: Optional[str], std: Optional[str],
                  channels: Optional[int], split: Optional[float]) -> dict[str, Optional[str]]:
    return {"resize": resize, "crop": crop, "mean": mean, "std": std,
            "channels": None if channels is None else str(channels), "split": None if split is None else repr(split)}
Seed = Annotated[int, typer.Option(min=0, max=MAX_SEED, metavar="N", help="seed for init, data order and random pruning")]


def run_command(
    recipe: Annotated[str, typer.Argument(metavar="RECIPE", help="recipe file (.lw or .json)", show_default=False)],
    backend: Backend = "torch",
    model: Annotated[Optional[str], typer.Option(metavar="NAME|FILE", help="model name or file (default: the recipe's target)")] = None,
    checkpoint: Annotated[
        Optional[Path],
        typer.Option(metavar="FILE", exists=True, dir_okay=False, help="weights to start from (.pt, .keras, .h5, .lwz); never modified"),
    ] = None,
    data: Annotated[Optional[str], typer.Option(metavar="DATA", help=DataHelp)] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="NAME=VALUE", help="override a recipe variable (repeatable)")] = None,
    out: Annotated[
        Optional[str],
        typer.Option(metavar="DIR", help="run folder (default: runs/<recipe file name>); only a run folder lwdsl wrote is replaced"),
    ] = None,
    seed: Seed = 0,
    threads: Annotated[int, typer.Option(min=1, max=MAX_THREADS, metavar="N", help="threads for latency measurements")] = 1,
    train_threads: Annotated[
        Optional[int],
        typer.Option(min=1, max=MAX_THREADS, metavar="N", help="threads for training, evaluation and calibration (default: the CPUs this process may use)"),
    ] = None,
    baseline_epochs: Annotated[
        int, typer.Option(min=1, max=MAX_EPOCHS, metavar="N", help="epochs of the baseline trained when no checkpoint is given")
    ] = 3,
    device: Annotated[
        str, typer.Option(metavar="DEV", help="auto (a GPU when present, else the CPU), cpu, cuda, cuda:N or mps")
    ] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted run of this recipe from its last completed step")] = False,
    track: Annotated[Optional[str], typer.Option(metavar="TRACKER", help="log the run to an experiment tracker: mlflow")] = None,
    root: Annotated[
        Optional[Path], typer.Option(metavar="DIR", file_okay=False, help="the folder `use` may read recipes from (default: the recipe's folder)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars or table: only the final line (or the error)")] = False,
    workers: Annotated[
        Optional[int],
        typer.Option(min=1, max=MAX_WORKERS, metavar="N", help="train on N processes of this machine (torch: torch.distributed "
                     "through its elastic launcher, gloo on the CPU, NCCL on GPUs; tensorflow: a TF_CONFIG each, "
                     "TensorFlow's collective ops); under torchrun or your own TF_CONFIG leave it out"),
    ] = None,
    max_restarts: Annotated[
        int,
        typer.Option(min=0, max=MAX_RESTARTS, metavar="N", help="with --workers: when a worker fails, restart the group up to N "
                     "times, each time resuming from the last epoch's point (under torchrun: its own --max-restarts)"),
    ] = 0,
    rdzv_timeout: Annotated[
        Optional[float],
        typer.Option(min=1, max=MAX_RDZV_TIMEOUT_S, metavar="SECONDS", help="how long the workers wait for each other to join "
                     "(default 600, or LWDSL_RDZV_TIMEOUT); then exit 2"),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="also the model, data source, each step's resolved arguments and layers, and phase timings")
    ] = False,
    resize: Resize = None,
    crop: Crop = None,
    mean: Mean = None,
    std: Std = None,
    channels: Channels = None,
    split: Split = None,
) -> None:
    """Compress a model with a recipe, measure every step and write a run folder."""
    from .args import check_backend_name, check_verbosity, parse_sets, with_data_options
    from ..errors import UsageError
    from ..language.compiler import load
    from ..data.builtin import data_shape
    from ..runner.outdir import RunLock, check_out
    from ..runner.pipeline import refuse_space

    overrides = parse_sets(set_)
    check_verbosity(quiet, verbose)
    check_backend_name(backend)
    from ..backend.threads import check_device

    check_device(device)
    from ..runner.track import open_tracker

    open_tracker(track)  # an unknown tracker, or MLflow missing: exit 2 before any work
    out_path = check_out(out if out is not None else str(Path("runs") / Path(recipe).stem))
    plan = load(recipe, overrides=overrides, root=root)
    refuse_space(plan)
    data_name = data or (plan.target.data if plan.target and plan.target.data else None)
    data_name = with_data_options(data_name, _data_options(resize, crop, mean, std, channels, split))
    if data_name is not None:
        data_shape(data_name)  # an unknown or oversized data set fails now, not after the model is built
    from ..runner.ranks import RDZV_TIMEOUT, check_workers_backend, join_timeout_s, launch_workers, world_from_env

    env = world_from_env()
    if workers is not None and env is not None and not env.launched_by_lwdsl and workers != env.world:
        raise UsageError(f"--workers {workers}, but the launcher ({env.launcher}) started {env.world} worker(s)",
                         hint="under torchrun leave --workers out: the launcher decides how many")
    if max_restarts and (env is not None and not env.launched_by_lwdsl):
        if env.launcher == "TF_CONFIG":  # workers started by hand: whoever started them restarts them
            raise UsageError(f"--max-restarts {max_restarts} on a worker started with TF_CONFIG: lwdsl restarts only the "
                             "workers it starts (lwdsl run --backend tensorflow --workers N)",
                             hint="restart your workers yourself (or by your cluster manager) with --resume: each continues "
                                  "from the run's last point")
        raise UsageError(f"--max-restarts {max_restarts} under {env.launcher}: the launcher restarts the workers, not lwdsl",
                         hint=f"give it to the launcher (torchrun --max-restarts {max_restarts} ...); a restarted worker resumes by itself")
    if max_restarts and (workers is None or workers < 2) and env is None:
        raise UsageError(f"--max-restarts {max_restarts} without --workers N (N >= 2): there is no group of workers to restart",
                         hint=f"add --workers 2 (or more), or rerun a failed one-process run with --resume")
    if rdzv_timeout is not None:
        os.environ[RDZV_TIMEOUT] = repr(float(rdzv_timeout))  # the workers started below read it too
    join_timeout_s()  # a bad LWDSL_RDZV_TIMEOUT: exit 2 now
    kwargs: dict[str, Any] = dict(
        recipe=plan, model=model, backend=backend, data=data_name, checkpoint=checkpoint, out=out_path, seed=seed,
        threads=threads, train_threads=train_threads, quiet=quiet, baseline_epochs=baseline_epochs, device=device,
        resume=resume, track=track, verbose=verbose,
    )
    if env is None and workers is not None and workers > 1:  # start the ranks; each runs _run_rank
        check_workers_backend(backend, workers)
        with RunLock(out_path):
            code = launch_workers(backend, workers, _run_rank, (kwargs,), max_restarts=max_restarts,
                                  say=lambda msg: typer.echo(msg, err=True))
        if code in (130, 143):  # Ctrl-C or SIGTERM: the workers cleaned up; said once, here
            from .args import _INTERRUPTED

            typer.echo(f"{'terminated (SIGTERM)' if code == 143 else 'interrupted'}{_INTERRUPTED[11:]}", err=True)
        if code:
            raise typer.Exit(code)
        return
    own_lock = env is None or (env.rank == 0 and not env.launched_by_lwdsl)  # lwdsl run --workers holds it
    with RunLock(out_path) if own_lock else contextlib.nullcontext():
        _run_and_say(kwargs)


def _run_and_say(kwargs: dict[str, Any]) -> None:
    """The run, then (rank 0) the table and the final line."""
    from ..runner.pipeline import run
    from ..runner.report import print_table

    result = run(echo=lambda msg: typer.echo(msg, err=True), **kwargs)
    if not result.report:  # a rank other than 0: rank 0 says what came out
        return
    if not kwargs["quiet"]:
        print_table(result.report)
    s = result.report["summary"]  # the one line --quiet still prints: what came out and where
    quality = f"accuracy {100 * s['accuracy_before']:.2f}% -> {100 * s['accuracy_after']:.2f}%"
    if "perplexity_before" in s:  # a language model: perplexity first, next-token accuracy beside it
        quality = f"perplexity {s['perplexity_before']:.2f} -> {s['perplexity_after']:.2f} (next-token {quality})"
    typer.echo(
        f"{quality}, "
        f"{s['nonzero_compression']:.1f}x fewer non-zero weights, file {s['size_gzip_ratio']:.1f}x smaller (gzip); "
        f"report in {result.run_dir}/report.md"
    )


def _run_rank(kwargs: dict[str, Any]) -> None:
    """One worker of ``lwdsl run --workers N`` (a process torch's elastic agent started):
    the run as this rank, its error said as the command line says it (rank 0's only, unless
    the error is this rank's own) and turned into the exit code the launcher reports."""
    import signal

    from .args import Terminated, _on_sigterm
    from ..errors import LwdslError

    signal.signal(signal.SIGTERM, _on_sigterm)  # the agent stopping the workers: clean up as for Ctrl-C
    rank = os.environ.get("RANK", "0")
    try:
        _run_and_say(kwargs)
    except LwdslError as exc:
        if rank == "0":  # every rank meets the same error: rank 0 says it
            typer.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:  # the command that started the workers says it
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    except Exception as exc:  # noqa: BLE001 - a crash of this rank (or a peer gone): said with the rank
        typer.echo(f"worker {rank}: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n"
                   "  hint: run again with --debug for the traceback, and report it", err=True)
        sys.exit(1)


def train_command(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="model name, e.g. lenet5", show_default=False)],
    data: Annotated[str, typer.Option(metavar="DATA", help=DataHelp)] = "mnist",
    backend: Backend = "torch",
    epochs: Annotated[int, typer.Option(min=1, max=MAX_EPOCHS, metavar="N", help="training epochs")] = 3,
    seed: Seed = 0,
    out: Annotated[
        Optional[str], typer.Option(metavar="FILE", help="also copy the weights to this .lwz file (never replaces another kind of file)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also the model, the data and where they came from, a line for every loop, and the time of each phase")] = False,
    resize: Resize = None,
    crop: Crop = None,
    mean: Mean = None,
    std: Std = None,
    channels: Channels = None,
    split: Split = None,
) -> None:
    """Train (or fetch from the cache) the baseline a run starts from without a checkpoint."""
    from .args import check_backend_name, check_verbosity, with_data_options
    from ..data.builtin import data_shape
    from ..runner.outdir import check_file_out
    from ..language.plan import Recipe
    from ..runner.pipeline import run
    from ..backend.weights import save_weights

    check_verbosity(quiet, verbose)
    check_backend_name(backend)
    data = with_data_options(data, _data_options(resize, crop, mean, std, channels, split)) or data
    data_shape(data)
    out_path = check_file_out(out) if out is not None else None
    result = run(Recipe(), model, backend=backend, data=data, seed=seed, quiet=quiet, verbose=verbose, baseline_epochs=epochs,
                 latency=False, echo=lambda msg: typer.echo(msg, err=True))
    acc = result.report["steps"][0]["metrics"]["accuracy"]
    if out_path is not None:
        from ..runner.outdir import is_write_error, write_error

        state = result.backend.state(result.model)
        try:
            save_weights(out_path, state, {"model": model, "data": data, "seed": seed, "epochs": epochs})
        except OSError as exc:  # a full disk: name the place and the space; any earlier file stays
            if not is_write_error(exc):
                raise
            needed = sum(int(a.nbytes) for a in state.values())
            raise write_error(exc, "--out", out_path, needed=needed, then=f"{out} is as it was") from None
    typer.echo(f"{model} on {data}: test accuracy {100 * acc:.2f}%" + (f"; weights in {out}" if out else ""))


def register(app: typer.Typer) -> None:
    """Add ``run``, ``train``, ``search`` and ``sensitivity`` to the CLI."""
    from .search_cmd import search_command
    from .sensitivity_cmd import sensitivity_command

    app.command("run")(run_command)
    app.command("train")(train_command)
    app.command("search")(search_command)
    app.command("sensitivity")(sensitivity_command)
