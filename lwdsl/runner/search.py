"""``lwdsl search``: find the values of a recipe's search variables (issue 23 item 4).

A recipe whose ``let`` lines leave values open (``choice(...)``, ``range(...)``,
:mod:`lwdsl.language.space`) is a search space. A search runs it again and again, each *trial*
one :func:`lwdsl.runner.pipeline.run` of the recipe with values Optuna picks, into
``OUT/trials/NNN/`` (a run folder, its ``recipe.lw`` the recipe with those values written in),
and keeps the best: the smallest objective (``size``, ``params``, ``latency``, ``macs``) among
the trials that meet ``--max-drop`` (points of test accuracy lost, absolute, against the
baseline), or, with two objectives (``size,accuracy``), the Pareto front.

The lifecycle (:func:`search`):

1. compile the space (``--set`` pins variables), check OUT (empty, or a search of this same
   command: then it resumes) and hold ``OUT.lock``;
2. the baseline: trained once (or read from the cache, or the ``--checkpoint``) and measured;
   every trial starts from it;
3. trials until ``--trials`` have finished (counting those of earlier runs of the same command),
   ``--time`` is spent, or a space of only whole values has had every point tried. Each trial's
   values come from a sampler seeded with ``seed + (trials finished before it)``: one worker with
   one seed gives the same trials whether the search ran at once or was interrupted and resumed.
   Values a finished trial already had are not run again (its figures are taken). A trial that
   fails (a NaN loss, values that do not fit together) is recorded with its error and counts;
4. after every trial the study is in the database (SQLite ``OUT/search.db``, or ``--storage``)
   and ``best.lw``, ``trials.md`` and ``trials.json`` are written again
   (:mod:`lwdsl.runner.search_output`). Ctrl-C stops the running trial (lost, not counted) and
   keeps everything else.

Optuna is imported lazily (``pip install 'lwdsl[search]'``). Hopeless trials are not stopped
early: the accuracy after a step is a poor guide to the accuracy after the recipe's later
fine-tuning (a prune step loses accuracy that a later finetune wins back), so stopping on it
would favour the timid recipes a search is meant to beat.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import LwdslError, RecipeError, RunError, UsageError
from ..language.plan import Recipe
from .search_settings import NO_FEASIBLE_EXIT, OBJECTIVES, POPULATION, STARTUP_TRIALS, SearchSettings, Trial, check_settings

__all__ = ["SearchOutcome", "search", "outcome", "read_trials", "trial_figures"]

@dataclass
class SearchOutcome:
    """What a search returns: every trial, the best (or the front), and the exit code."""

    trials: list[Trial]
    best: Optional[Trial]
    front: list[Trial]
    baseline: dict[str, Any]
    exit_code: int
    stopped: str  # why the search stopped
    out: Path


def _optuna() -> Any:
    try:
        import optuna
    except ModuleNotFoundError:
        raise UsageError(
            "lwdsl search needs Optuna, which is not installed",
            hint="pip install 'lwdsl[search]' (or pip install 'optuna>=4')",
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def search(
    settings: SearchSettings, echo: Callable[[str], None] = print, quiet: bool = False, track: Optional[str] = None,
    verbose: bool = False,
) -> SearchOutcome:
    """Search the recipe's space; write OUT (``best.lw``, ``trials.md``, ``trials.json``,
    ``trials/NNN/``, ``search.db``) after every trial.

    Args:
        settings: the space, budget, goal and run options.
        echo: where progress lines go: the baseline's, then one per trial; ``quiet`` none.
        verbose: also the search's settings (space, objectives, sampler, study), and for the
            baseline and every trial its run's details (model, data, resolved arguments, layers,
            the time of each phase: ``lwdsl run --verbose``), each trial's lines prefixed
            ``#N:``; ignored when ``quiet``.
        track: ``mlflow`` logs the search as a parent run and each trial as a nested run
            (:mod:`lwdsl.runner.search_track`).

    Returns:
        A :class:`SearchOutcome`; ``exit_code`` is 0, or :data:`NO_FEASIBLE_EXIT` when no trial
        met ``--max-drop`` (the best-so-far is written all the same).

    Raises:
        RecipeError: the recipe is not a space that can be searched.
        UsageError: bad options, an OUT that is not this search's, Optuna missing.
        RunError: every trial failed.
        KeyboardInterrupt: Ctrl-C; the running trial is lost, the others are kept.

    Example:
        >>> search(SearchSettings(Path("space.lw"), Path("out"), trials=20, max_drop=0.5))  # doctest: +SKIP
    """
    from .outdir import RunLock
    from .search_output import check_search_out, write_outputs, write_identity
    from .search_track import open_search_tracker

    check_settings(settings)
    tracker = open_search_tracker(track)  # an unknown tracker, or MLflow missing: refused before any work
    if settings.workers > 1 and settings.train_threads is None:  # the CPUs shared out, not each worker taking all
        from ..backend.threads import usable_cpus

        settings = dataclasses.replace(settings, train_threads=max(1, usable_cpus() // settings.workers))
    space_plan = _space(settings)
    _model_and_data(settings, space_plan)
    optuna = _optuna()
    out = check_search_out(settings.out, settings.identity())
    with RunLock(out):
        write_identity(out, settings.identity(), settings.study_name())
        study = _study(optuna, settings, out, fresh_session=True)
        verbose = verbose and not quiet
        if verbose:
            echo(_settings_line(settings, space_plan, study, out))
        trials: list[Trial] = []
        if tracker is not None:  # opened before the baseline: a search failing there is tracked too
            tracker.start(settings, space_plan, out, settings.study_name())
        try:
            baseline = _baseline(settings, space_plan, echo if not quiet else (lambda _msg: None), verbose)
            session = uuid.uuid4().hex
            deadline = time.monotonic() + settings.seconds if settings.seconds else None
            runner = _Trials(optuna, study, settings, space_plan, out, baseline, session, echo, quiet,
                             on_trial=tracker.sync if tracker is not None else None, verbose=verbose)
            workers = _start_workers(settings, deadline, session, baseline) if settings.workers > 1 else []
            try:
                stopped = runner.loop(deadline)
            finally:
                for proc in workers:
                    proc.join()
                trials = read_trials(optuna, study)
                write_outputs(out, settings, space_plan, trials, baseline)
            result = outcome(out, settings, trials, baseline, stopped)
        except BaseException as exc:
            if tracker is not None:
                tracker.fail(exc, trials)
            raise
        if tracker is not None:
            tracker.finish(result)
    return result


def outcome(out: Path, settings: SearchSettings, trials: list[Trial], baseline: dict[str, Any], stopped: str) -> SearchOutcome:
    from .search_output import choose

    best, front = choose(settings, trials)
    if best is None:
        errors = sorted({t.error for t in trials if t.error})
        raise RunError(
            f"no trial of the search finished ({len(trials)} tried): " + ("; ".join(errors[:3]) or "none ran"),
            hint=f"see {out}/trials.md; the recipe with one value per variable can be run alone: lwdsl run RECIPE --set NAME=VALUE",
        )
    code = 0 if best.feasible else NO_FEASIBLE_EXIT
    return SearchOutcome(trials, best, front, baseline, code, stopped, out)


def _space(settings: SearchSettings) -> Recipe:
    from ..language.compiler import load

    if Path(settings.recipe).suffix != ".lw":
        raise UsageError(
            f"{settings.recipe}: lwdsl search reads .lw recipes (a search writes values into the recipe's text)",
            hint="write the recipe as a .lw file with `let NAME = choice(...)` lines",
        )
    plan = load(settings.recipe, overrides=settings.sets, root=settings.root)
    if not plan.space:
        raise UsageError(
            f"{settings.recipe} has nothing to search: no `let NAME = choice(...)` or `range(...)` is left open",
            hint="declare a search variable, e.g. let sparsity = choice(70%, 80%, 90%), and use $sparsity in a step",
        )
    return plan


def _storage(optuna: Any, settings: SearchSettings, out: Path) -> Any:
    url = settings.storage or f"sqlite:///{out / 'search.db'}"
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as exc:  # a bad URL, a server that is down, a driver that is missing
        raise UsageError(f"--storage {url}: cannot open it: {exc}".splitlines()[0][:400]) from None


def _study(optuna: Any, settings: SearchSettings, out: Path, fresh_session: bool = False) -> Any:
    """The study of this search, created or loaded. On the local database (only this command
    uses it: OUT.lock is held) a trial left running by a killed search is marked interrupted."""
    storage = _storage(optuna, settings, out)
    directions = [OBJECTIVES[n].direction for n in settings.objectives]
    study = optuna.create_study(storage=storage, study_name=settings.study_name(), directions=directions, load_if_exists=True)
    if fresh_session and settings.storage is None:
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    return study


def _settings_line(settings: SearchSettings, plan: Recipe, study: Any, out: Path) -> str:
    """What ``--verbose`` says first: the space, the goal, the sampler and where the study is."""
    space = ", ".join(f"{name}={var.text()}" for name, var in plan.space.items())
    words = {"minimize": "minimised", "maximize": "maximised"}
    goal = ", ".join(f"{n} ({words[OBJECTIVES[n].direction]})" for n in settings.objectives)
    limit = f"; --max-drop {settings.max_drop:g} points" if settings.max_drop is not None else ""
    sampler = (f"NSGA-II (population {POPULATION})" if len(settings.objectives) > 1
               else f"TPE ({STARTUP_TRIALS} random trials first)")
    where = settings.storage or f"sqlite:///{out / 'search.db'}"
    return (f"search: space {space}; objective {goal}{limit}; sampler {sampler}, seeded {settings.seed} + the trials "
            f"finished before each; study {study.study_name} in {where}; {settings.workers} worker(s); folder {out}")


def _baseline(settings: SearchSettings, plan: Recipe, echo: Callable[[str], None], verbose: bool = False) -> dict[str, Any]:
    """Train (or read from the cache, or load) the baseline once, and measure it: every trial
    starts from it (the cache is keyed as a run's is), and ``--max-drop`` is measured against
    its accuracy. A model or data set that cannot be used fails here, before any trial."""
    from .pipeline import run

    model, data = _model_and_data(settings, plan)
    result = run(
        Recipe(), model, backend=settings.backend, data=data, checkpoint=settings.checkpoint, seed=settings.seed,
        quiet=False, baseline_epochs=settings.baseline_epochs, latency=False, device=settings.device,
        train_threads=settings.train_threads, verbose=verbose,
        echo=lambda msg: echo(msg) if verbose or msg.startswith("baseline: training") else None,
    )
    metrics = result.report["steps"][0]["metrics"]
    echo(
        f"baseline: test accuracy {100 * metrics['accuracy']:.2f}%, {metrics['size_gzip_bytes']:,} B gzip, "
        f"{metrics['nonzero_params']:,} non-zero parameters (every trial starts from it)"
    )
    keys = ("accuracy", "loss", "params", "nonzero_params", "size_bytes", "size_gzip_bytes")
    baseline: dict[str, Any] = {k: metrics[k] for k in keys}
    if "macs" in settings.objectives:
        from ..data.builtin import data_shape
        from .metrics import macs

        shape, _ = data_shape(str(data))
        try:
            positions = result.backend.positions(result.model, tuple(shape))
        except LwdslError as exc:  # a backend that does not count them
            raise UsageError(f"--objective macs: {exc.message}", hint="use --objective size or params") from None
        baseline.update(macs=macs(result.backend.stats(result.model), positions), positions=positions)
    return baseline


def _model_and_data(settings: SearchSettings, plan: Recipe) -> tuple[str, Optional[str]]:
    """The model and data every trial runs on: the options, else the recipe's target."""
    target = plan.target
    model = settings.model or (target.model if target else None)
    data = settings.data or (target.data if target else None)
    if model is None:
        raise UsageError("no model to compress", hint="give --model NAME (e.g. lenet5) or a `target MODEL on DATA` line")
    if data is None:
        raise UsageError("no data set", hint="give --data NAME (mnist, fashion_mnist, synthetic:C,H,W:K) or `target MODEL on DATA`")
    return model, data


def read_trials(optuna: Any, study: Any) -> list[Trial]:
    """Every trial of the study, as the outputs show it, in order."""
    states = optuna.trial.TrialState
    out = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        if t.state == states.COMPLETE:
            state = "complete"
        elif t.state == states.RUNNING:
            state = "running"
        elif attrs.get("interrupted"):
            state = "interrupted"
        else:
            state = "failed"
        out.append(
            Trial(
                number=t.number, state=state, values=dict(attrs.get("values", {})), figures=dict(attrs.get("figures", {})),
                objectives=list(t.values) if t.values is not None else None, violation=attrs.get("violation"),
                seconds=attrs.get("seconds"), run_dir=attrs.get("run_dir"), error=attrs.get("error"), same_as=attrs.get("same_as"),
            )
        )
    return out


class _Trials:
    """The trial loop of one process (the main one, or a ``--workers`` helper)."""

    def __init__(self, optuna, study, settings, space_plan, out, baseline, session, echo, quiet, worker: int = 0,
                 on_trial: Optional[Callable[[list[Trial]], None]] = None, verbose: bool = False) -> None:
        self.optuna, self.study, self.settings, self.space = optuna, study, settings, space_plan
        self.out, self.baseline, self.session, self.echo, self.quiet, self.worker = out, baseline, session, echo, quiet, worker
        self.on_trial = on_trial  # told every trial after each of this process's trials (the tracker)
        self.verbose = verbose and not quiet  # each trial's run says its details, prefixed "#N: "
        self.deadline: Optional[float] = None
        self.ran: list[float] = []  # seconds of the trials this process ran

    # --- the budget ---------------------------------------------------------------------------

    def _counts(self) -> tuple[list[Trial], int]:
        trials = read_trials(self.optuna, self.study)
        ours = sum(1 for t in self.study.get_trials(deepcopy=False) if t.state.name == "RUNNING" and t.user_attrs.get("session") == self.session)
        return trials, sum(1 for t in trials if t.finished) + (ours if self.settings.workers > 1 else 0)

    def _exhausted(self, trials: list[Trial]) -> bool:
        points = math.prod(var.points() for var in self.space.space.values())
        return math.isfinite(points) and len({_key(t.values) for t in trials if t.finished}) >= points

    def loop(self, deadline: Optional[float]) -> str:
        self.deadline = deadline
        while True:
            trials, done = self._counts()
            if done >= self.settings.trials:
                return f"{self.settings.trials} trials done"
            if deadline is not None and time.monotonic() >= deadline:
                return f"--time {self.settings.seconds:g} s spent"
            if self._exhausted(trials):
                return "every point of the space is tried"
            self.one(trials, done)

    # --- one trial ----------------------------------------------------------------------------

    def _sampler(self, done: int) -> Any:
        samplers = self.optuna.samplers
        seed = self.settings.seed + done + 1_000_003 * self.worker
        constraints = None  # Optuna >= 5 reads Trial.set_constraint (see _constrain); 4 needs the function
        if self.settings.max_drop is not None and not hasattr(self.optuna.trial.Trial, "set_constraint"):
            constraints = lambda t: (t.user_attrs.get("violation", 0.0),)  # noqa: E731
        if len(self.settings.objectives) > 1:
            return samplers.NSGAIISampler(seed=seed, population_size=POPULATION, constraints_func=constraints)
        return samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, multivariate=True, constraints_func=constraints)

    def _distributions(self) -> dict[str, Any]:
        d = self.optuna.distributions
        out = {}
        for name, var in self.space.space.items():
            if var.kind == "choice":
                out[name] = d.CategoricalDistribution(list(var.values))
            elif var.integer:
                out[name] = d.IntDistribution(int(var.low), int(var.high), log=var.log)
            else:
                out[name] = d.FloatDistribution(var.low, var.high, log=var.log)
        return out

    def one(self, trials: list[Trial], done: int) -> None:
        from .search_output import progress_line, write_outputs

        self.study.sampler = self._sampler(done)
        trial = self.study.ask(self._distributions())
        trial.set_user_attr("session", self.session)
        values = {name: (var.value_text(trial.params[name]) if var.kind == "range" else trial.params[name])
                  for name, var in self.space.space.items()}
        trial.set_user_attr("values", values)
        same = next((t for t in trials if t.finished and _key(t.values) == _key(values)), None)
        start = time.monotonic()
        if same is not None:  # the same values as a finished trial: its figures, not run again
            self._tell_same(trial, same)
        else:
            self._run(trial, values)
        if same is None:
            self.ran.append(time.monotonic() - start)
        trials = read_trials(self.optuna, self.study)
        if self.worker == 0:
            write_outputs(self.out, self.settings, self.space, trials, self.baseline)
        if self.on_trial is not None:
            self.on_trial(trials)
        if not self.quiet:
            self.echo(progress_line(self.settings, trials, trial.number, self._eta(trials)))

    def _constrain(self, trial: Any, violation: Optional[float]) -> None:
        """The ``--max-drop`` constraint of a trial, for the sampler: feasible when <= 0."""
        if violation is None:
            return
        trial.set_user_attr("violation", violation)
        if hasattr(trial, "set_constraint"):
            trial.set_constraint("max_drop", violation)

    def _tell_same(self, trial: Any, same: Trial) -> None:
        trial.set_user_attr("same_as", same.number)
        for key in ("figures", "run_dir", "error"):
            value = getattr(same, key)
            if value is not None:
                trial.set_user_attr(key, value)
        self._constrain(trial, same.violation)
        trial.set_user_attr("seconds", 0.0)
        if same.state == "complete":
            self.study.tell(trial, same.objectives)
        else:
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)

    def _run(self, trial: Any, values: dict[str, str]) -> None:
        from .pipeline import run
        from .search_output import trial_plan

        run_dir = self.out / "trials" / f"{trial.number:03d}"
        start = time.monotonic()
        say: Callable[[str], None] = (lambda msg: self.echo(f"#{trial.number}: {msg}")) if self.verbose else (lambda _msg: None)
        say(f"values {', '.join(f'{k}={v}' for k, v in values.items())}; run folder {run_dir}")
        try:
            plan = trial_plan(self.settings, values)
            result = run(
                plan, self.settings.model, backend=self.settings.backend, data=self.settings.data,
                checkpoint=self.settings.checkpoint, out=run_dir, seed=self.settings.seed, threads=self.settings.threads,
                train_threads=self.settings.train_threads, quiet=not self.verbose, baseline_epochs=self.settings.baseline_epochs,
                latency=any(OBJECTIVES[n].needs_latency for n in self.settings.objectives), device=self.settings.device,
                echo=say, verbose=self.verbose,
            )
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            raise
        except UsageError:  # not the values' fault (the model, the data): the search stops
            trial.set_user_attr("interrupted", True)
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            raise
        except (RecipeError, RunError, LwdslError) as exc:  # these values fail: recorded, the search goes on
            trial.set_user_attr("error", exc.message.splitlines()[0][:500])
            trial.set_user_attr("seconds", round(time.monotonic() - start, 2))
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            return
        figures = trial_figures(result)
        if "positions" in self.baseline:
            from .metrics import macs

            figures.update(macs=macs(result.backend.stats(result.model), self.baseline["positions"]), baseline_macs=self.baseline["macs"])
        violation = None
        if self.settings.max_drop is not None:
            violation = round(figures["drop_points"] - self.settings.max_drop, 4)
        self._constrain(trial, violation)
        trial.set_user_attr("figures", figures)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("seconds", round(time.monotonic() - start, 2))
        self.study.tell(trial, [float(figures[OBJECTIVES[n].key]) for n in self.settings.objectives])

    def _eta(self, trials: list[Trial]) -> Optional[float]:
        left = self.settings.trials - sum(1 for t in trials if t.finished)
        per = sum(self.ran) / len(self.ran) if self.ran else None
        eta = left * per / max(self.settings.workers, 1) if per is not None else None
        if self.deadline is not None:
            until = max(self.deadline - time.monotonic(), 0.0)
            eta = until if eta is None else min(eta, until)
        return eta


def trial_figures(result: Any) -> dict[str, Any]:
    """The figures of one trial's run: accuracy before and after, the drop in points, and the
    final model's size, parameters and latency (with the baseline's, for ratios)."""
    base, final = result.report["steps"][0]["metrics"], result.report["steps"][-1]["metrics"]
    return {
        "accuracy_before": base["accuracy"],
        "accuracy_after": final["accuracy"],
        "drop_points": round(100 * (base["accuracy"] - final["accuracy"]), 4),
        "size_gzip_bytes": final["size_gzip_bytes"],
        "size_bytes": final["size_bytes"],
        "baseline_size_gzip_bytes": base["size_gzip_bytes"],
        "nonzero_params": final["nonzero_params"],
        "params": final["params"],
        "baseline_params": base["params"],
        "latency_ms_b1": final.get("latency_ms_b1"),
        "baseline_latency_ms_b1": base.get("latency_ms_b1"),
    }


def _key(values: dict[str, str]) -> str:
    return json.dumps(values, sort_keys=True)


def _start_workers(settings: SearchSettings, deadline: Optional[float], session: str, baseline: dict[str, Any]) -> list[Any]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
    procs = []
    for index in range(1, settings.workers):
        proc = ctx.Process(target=_worker, args=(asdict(settings), index, left, session, baseline), daemon=False)
        proc.start()
        procs.append(proc)
    return procs


def _worker(fields: dict[str, Any], index: int, seconds_left: Optional[float], session: str, baseline: dict[str, Any]) -> None:
    """A ``--workers`` helper process: the same loop on the same study, quietly."""
    settings = SearchSettings(**fields)
    optuna = _optuna()
    study = _study(optuna, settings, Path(settings.out))
    deadline = None if seconds_left is None else time.monotonic() + seconds_left
    runner = _Trials(optuna, study, settings, _space(settings), Path(settings.out), baseline, session, print, True, worker=index)
    try:
        runner.loop(deadline)
    except KeyboardInterrupt:
        pass
