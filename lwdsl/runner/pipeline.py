"""Run a recipe end to end: plan, check, load, baseline, steps, measure, report, write.

Nothing here knows a framework or an op: the backend does the work through
:class:`lwdsl.backend.Backend`, the runner never branches on its name, and what it needs from a
step (requested sparsity, whether it needs the original model) comes from the step's spec.
A run has three phases, each a function: :func:`_prepare`, :func:`_execute`, :func:`_write`.

1. compile the recipe and check every step against the backend (fails before any model work);
2. load the model, and check it against what can be known before training: one input of the
   data's shape goes through it (:func:`check_fit`), every selector matches, and every
   structured removal is possible on its graph (:func:`lwdsl.backend.removal.check_removals`);
3. load the data; without a checkpoint, a baseline is trained once (with a line per epoch and
   the time left) and cached (``$LWDSL_CACHE`` or ``~/.cache/lwdsl``) by backend, model, data
   (name and digest), seed, epochs and a digest of the starting weights (a model this version
   builds otherwise never takes an older baseline); a cache that cannot be written is a warning, and the
   run goes on with the baseline it trained;
4. measure the baseline, then apply each step to the layers its selector matches (no match is
   an error) and measure again;
5. make masks permanent and write everything into a staging folder beside ``out``, which then
   replaces ``out`` in one rename: a failed or interrupted run leaves the previous outputs as
   they were (a failed run's partial report and last good model go to ``<out>.failed``); a
   disk that is full or cannot be written is a RunError naming the place and the space needed.

The input checkpoint is only ever read.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..backend import Backend, StepContext, get_backend
from ..backend.threads import usable_cpus
from .usermodel import code_digest, is_code_ref, load_user_model
from ..data.dataset import Dataset
from ..errors import LoadWarning, LwdslError, RunError, UsageError
from .outdir import check_out, is_write_error, write_error
from .metrics import measure
from ..language.plan import Recipe
from ..language.specs import StepSpec, TrainingOptions

__all__ = ["run", "RunResult", "baseline_options", "resolve_recipe", "refuse_space", "matched_layers", "check_fit"]


@dataclass
class RunResult:
    """What a run returns: the compressed model (the backend's handle), the report, the folder."""

    model: Any
    report: dict[str, Any]
    run_dir: Optional[Path]
    backend: Backend

    @property
    def module(self) -> Any:
        """The framework's own model object (nn.Module or keras.Model)."""
        return self.backend.native(self.model)


@dataclass
class _Prepared:
    """Everything checked and loaded before any training: the outcome of :func:`_prepare`."""

    plan: Recipe
    backend: Backend
    model_ref: Any
    handle: Any
    dataset: Dataset
    checkpoint: Optional[Path]
    datasets: dict[str, Dataset]
    models: dict[str, Any] = field(default_factory=dict)
    said: list[str] = field(default_factory=list)  # the LoadWarnings of loading the model: the baseline row's warnings


def _token_ids(data: Dataset) -> bool:
    """Whether the data's inputs are token ids (one integer sequence per example)."""
    return len(data.input_shape) == 1 and np.issubdtype(np.asarray(data.train_x[:1]).dtype, np.integer)


def baseline_options(epochs: int, task: str = "classify", tokens: bool = False) -> TrainingOptions:
    """How a baseline is trained when no checkpoint is given: SGD, momentum 0.9, batch 64,
    lr 0.01, constant; a language model (``task`` lm) or a classifier of token sequences
    (``tokens``: ``--data pydoc-code``): Adam, lr 0.001, batch 16."""
    if task == "lm" or tokens:
        return TrainingOptions(epochs=epochs, lr=0.001, optimizer="adam", batch=16)
    return TrainingOptions(epochs=epochs, lr=0.01, optimizer="sgd", momentum=0.9, batch=64)


def resolve_recipe(recipe: Union[str, Path, Recipe], overrides: Optional[dict[str, str]] = None) -> Recipe:
    """A Recipe from a Recipe, a path to a .lw/.json file, or recipe text."""
    from ..language.compiler import load, parse

    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Path) or (isinstance(recipe, str) and "\n" not in recipe and recipe.endswith((".lw", ".json"))):
        return load(Path(recipe), overrides=overrides)
    return parse(str(recipe), overrides=overrides)


def refuse_space(plan: Recipe) -> None:
    """A recipe with search variables that have no value is searched, not run: a UsageError
    (exit 2) naming them, and the two ways on (``lwdsl search``, ``--set``)."""
    if not plan.space:
        return
    names = list(plan.space)
    pins = " ".join(f"--set {name}={var.candidates()[0]}" for name, var in plan.space.items())
    raise UsageError(
        f"the recipe is a search space: {plan.space_words()} "
        f"{'has' if len(names) == 1 else 'have'} no value yet, and a run needs one",
        hint=f"search it: lwdsl search RECIPE --trials 20 (see lwdsl search --help); or give each a value: {pins}",
    )


def matched_layers(recipe: Recipe, index: int, step: StepSpec, layers: list) -> list[str]:
    """The layer names the step's selector picks (an error if none, or if ``expect`` fails)."""
    from ..language.selectors import match_layers
    from ..language.validate import step_label

    names = match_layers(step.effective_selector(), layers, step_label=step_label(recipe, index), location=recipe.location(index))
    kinds = step.layer_kinds()
    if kinds is not None:
        from ..errors import RecipeError
        from ..language.selectors import layer_list

        wrong = [layer for layer in layers if layer.name in set(names) and layer.kind not in kinds]
        if wrong:
            raise RecipeError(
                f"{step_label(recipe, index)}: works on {', '.join(kinds)} layers only, and the selector picks "
                f"{len(wrong)} other{'s' if len(wrong) != 1 else ''}",
                recipe.location(index),
                found=layer_list(wrong),
                expected=f"a selector picking {' or '.join(kinds)} layers",
                hint=f"add `on {', '.join(kinds)}`, or leave the others out with except \"NAME\"",
            )
    return names


def _cache_dir() -> Path:
    root = os.environ.get("LWDSL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lwdsl"
    return Path(root) / "baselines"


def _baseline(backend: Backend, model: Any, ref: str, ctx: StepContext, epochs: int, say: Any, writes: bool = True) -> dict[str, Any]:
    from .progress import epoch_progress
    from ..backend.weights import load_weights, save_weights

    digest = f"-{ctx.data.sha256[:12]}" if ctx.data.sha256 else ""  # other images, another baseline
    from ..semantics.shards import digest as state_digest

    # other starting weights (a model built otherwise by this version), another baseline: the ranks' digest of them
    init = "".join(f"{int(w):04x}" for w in state_digest(backend.state(model)))
    key = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{backend.name}-{ref}-{ctx.data.name}{digest}-seed{ctx.seed}-e{epochs}-i{init}")
    path = _cache_dir() / f"{key}.lwz"
    if path.exists():
        try:
            state, _ = load_weights(path)
            backend.load_state(model, state)
            say(f"baseline: cached {path}")
            return {"source": "cache", "path": str(path), "epochs": epochs}
        except LwdslError as exc:  # lwdsl's own cache file, damaged: trained again, never used as it is
            ctx.warn(f"the cached baseline {path} could not be used ({exc.message}); it is trained again and replaced")
    say(f"baseline: training {ref} on {ctx.data.name} for {epochs} epoch(s) (cached afterwards at {path})")
    backend.train(model, baseline_options(epochs, ctx.data.task, tokens=_token_ids(ctx.data)), dataclasses.replace(ctx, progress=epoch_progress(ctx.progress, "baseline", epochs, say)))
    state = backend.state(model)
    if not writes:  # rank 0 caches it
        return {"source": "trained", "path": str(path), "epochs": epochs}
    try:
        save_weights(path, state, {"model": ref, "data": ctx.data.name, "seed": ctx.seed, "epochs": epochs})
    except OSError as exc:  # a full or read-only cache: this run still has its baseline
        if not is_write_error(exc):
            raise
        needed = sum(int(getattr(a, "nbytes", 0)) for a in state.values())
        then = "this run goes on with it, the next one trains it again"
        ctx.warn(write_error(exc, "the trained baseline was not cached", path, needed=needed, then=then).message)
        return {"source": "trained", "path": None, "epochs": epochs}
    return {"source": "trained", "path": str(path), "epochs": epochs}


def run(
    recipe: Union[str, Path, Recipe],
    model: Any = None,
    *,
    backend: str = "torch",
    data: Optional[str] = None,
    train: Any = None,
    test: Any = None,
    checkpoint: Optional[Union[str, Path]] = None,
    out: Optional[Union[str, Path]] = None,
    seed: int = 0,
    threads: int = 1,
    train_threads: Optional[int] = None,
    quiet: bool = False,
    overrides: Optional[dict[str, str]] = None,
    baseline_epochs: int = 3,
    latency: bool = True,
    echo: Any = None,
    models: Optional[dict[str, Any]] = None,
    device: str = "auto",
    resume: bool = False,
    track: Optional[str] = None,
    world: Any = None,
    verbose: bool = False,
) -> RunResult:
    """Compress a model with a recipe.

    Args:
        recipe: a :class:`Recipe`, a ``.lw``/``.json`` path, or recipe text.
        model: a model name (``lenet5``, ``torchvision:resnet18``, ``keras:MobileNetV2``), a
            model file, or the framework's own model object (``nn.Module``/``keras.Model``).
            Default: the recipe's ``target``.
        backend: ``torch`` or ``tensorflow``.
        data: a data set name (``mnist``, ``fashion_mnist``, ``synthetic:C,H,W:K``); default:
            the recipe's ``target ... on DATA``.
        train, test: the framework's own data objects instead of ``data`` (DataLoaders,
            ``tf.data.Dataset``).
        checkpoint: weights to start from (read only, never modified).
        out: the run folder to write (replaced only when the run succeeds); None writes nothing.
        seed: seeds model initialisation, data order and random pruning.
        threads: threads for latency measurements.
        train_threads: threads for training, evaluation and calibration; default: the CPUs this
            process may use (:func:`lwdsl.backend.threads.usable_cpus`: affinity and cgroup
            quota, not the machine's core count). Put back as they were after the run.
        quiet: no progress bars or messages.
        verbose: also say the model and data and where they came from, each step's arguments
            as resolved and the layers it matched, a line for every loop over data, and how long
            each phase took (:mod:`lwdsl.runner.verbose`); ignored when ``quiet``.
        overrides: ``--set NAME=VALUE`` values for the recipe's variables.
        baseline_epochs: epochs of the baseline trained when no checkpoint is given.
        latency: measure latency after every step (off in quick tests).
        track: ``mlflow`` logs the run to MLflow (:mod:`lwdsl.runner.track`).
        resume: continue an interrupted run of the same recipe, model, data and seed from its
            last completed step (``<out>.resume/``, :mod:`lwdsl.runner.resume`).
        device: where training, evaluation and calibration run: ``auto`` (a GPU when one is
            present, else the CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps``; named in the report
            and lock file with the device's model.
        models: your own framework model objects, by the name a recipe gives them
            (``distill student=small`` with ``models={"small": my_module}``); deep-copied,
            never modified.
        world: this process's place among several ranks (:class:`lwdsl.runner.ranks.WorldEnv`);
            default: read from a launcher's environment (``WORLD_SIZE``, ``RANK``, ...), none
            when there is none. Every rank runs the whole run; only rank 0 writes, prints and
            returns the report (the others' :class:`RunResult` has an empty report and no
            folder).

    Returns:
        A :class:`RunResult` with the compressed model and the report (``report["steps"]``).

    Raises:
        RecipeError: the recipe is invalid, or the backend lacks a step (before any work).
        RunError: the run failed (missing data, NaN loss, ...).

    Example:
        >>> result = lwdsl.run("prune l1 0.5 | finetune epochs=1", "lenet300", data="mnist")  # doctest: +SKIP
    """
    out = check_out(out) if out is not None else None  # refuse a bad --out before any work
    from .ranks import world_from_env
    from .verbose import Phases, quiet_say

    env = world if world is not None else world_from_env()
    if env is not None and env.rank != 0:
        quiet = True  # rank 0 says what the run does
    say = (echo or print) if not quiet else quiet_say
    if env is not None and env.restarts > 0 and not resume and out is not None:  # the launcher restarted a failed group
        resume = True
        if env.rank == 0:  # said even when quiet: the run lost time and went on
            (echo or print)(f"restart {env.restarts} by the launcher ({env.launcher}): resuming from the last point")
    tell = echo or say  # what must be seen even when quiet (where a failed run's report went)
    phases = Phases() if verbose and not quiet else None  # --verbose: the details, and the time of each phase
    from ..backend.threads import check_device, quiet_openmp

    waiting = quiet_openmp()  # before the backend loads torch and its OpenMP runtime
    be = get_backend(backend)

    device_info = dict(be.set_device(check_device(device)))
    if env is not None and env.world > 1:
        device_info = _rank_device(be, device, device_info, env)
    before = be.get_threads()
    wanted = train_threads or max(1, usable_cpus() // (env.local_world if env is not None else 1))
    in_effect = be.set_threads(wanted)  # before any model is built: TensorFlow fixes its pool then
    counts, note = {"training": in_effect, "latency": threads, "idle_threads": waiting}, None
    if in_effect != wanted:
        counts["training_asked"] = wanted
        note = f"the {be.name} backend trains with {in_effect} thread(s), not the {wanted} asked: its thread pool was fixed earlier in this process"
    from .track import open_tracker
    from ..backend.ranks import OneProcess

    ranks: Any = OneProcess()
    world_info: dict[str, Any] = {}
    try:
        if env is not None and env.world > 1:
            from .ranks import join_timeout_s, timeout_s, world_record

            ranks = be.join_ranks(env.rank, env.world, timeout_s(), join_s=join_timeout_s())
            counts["workers"] = env.world
            world_info = {"world": world_record(ranks, env, device_info)}
        tracker = open_tracker(track) if ranks.writes else None
    except BaseException:
        ranks.close()
        be.set_threads(before)
        raise
    try:
        if tracker is not None:  # opened before the model loads: a run failing there is tracked too
            plan = resolve_recipe(recipe, overrides)
            shown = model if isinstance(model, (str, Path)) else (type(model).__name__ if model is not None else
                                                                    (plan.target.model if plan.target else None))
            tracker.start(plan, backend=be.name, model=str(shown), data=data or (plan.target.data if plan.target else None), seed=seed)
            recipe, overrides = plan, None
        prep = _prepare(recipe, overrides, model, be, data, train, test, checkpoint, seed, models or {},
                        detail=say if phases else None, phases=phases, world=ranks.world)
        _check_workers(ranks, prep.dataset)
        from ..backend.precision import precision_info

        device_info.update(precision_info(prep.plan, be.device))
        try:
            staging, steps, handle, baseline_info, final = _execute(prep, out, seed, threads, quiet, baseline_epochs, latency, say, tell,
                                                             threads_note=note, resume=resume, ranks=ranks, phases=phases)
        except OSError as exc:  # an export, the staging folder: a place that cannot take a write
            if not is_write_error(exc):
                raise
            unchanged = f"{out} is as it was" if out is not None else ""
            raise write_error(exc, "the run", out if out is not None else Path.cwd(), then=unchanged) from None
        extra = {"tracking": {"mlflow_run_id": tracker.run_id, "tracking_uri": tracker.uri}} if tracker is not None else {}
        extra.update(world_info)
        if not ranks.writes:  # rank 0 writes the run folder and says what came out
            return RunResult(handle, {}, None, prep.backend)
        start = time.perf_counter()
        report, run_dir = _write(prep, handle, steps, out, staging, seed, baseline_info, say, counts, device_info, extra, final)
        if phases is not None:
            phases.add("write", time.perf_counter() - start)
        if out is not None:
            shutil.rmtree(Path(out).parent / f"{Path(out).name}.resume", ignore_errors=True)  # done: nothing to resume
        if tracker is not None:
            import json

            lock = json.loads((run_dir / "lwdsl.lock.json").read_text()) if run_dir is not None else None
            tracker.finish(report, run_dir, lock)
        if phases is not None:
            say(phases.line())
    except BaseException as exc:
        if tracker is not None:
            tracker.fail(exc)
        raise
    finally:
        ranks.close()
        be.set_threads(before)
    return RunResult(handle, report, run_dir, prep.backend)


def _rank_device(be: Backend, asked: str, info: dict[str, Any], env: Any) -> dict[str, Any]:
    """A rank's device: ``auto`` or ``cuda`` on a machine with GPUs is the GPU of its local
    rank (``cuda:LOCAL_RANK``); a device named with its number is taken as named."""
    if str(info["device"]).startswith("mps"):
        raise UsageError("several workers on Apple's MPS: torch.distributed has no collectives there",
                         hint="use --device cpu with --workers, or one worker on mps")
    if asked in ("auto", "cuda") and str(info["device"]).startswith("cuda"):
        return dict(be.set_device(f"cuda:{env.local_rank}"))
    return info


def _check_workers(ranks: Any, dataset: Dataset) -> None:
    """Refuse more ranks than training examples (exit 2), on every rank alike."""
    from ..semantics.shards import workers_problem

    why = workers_problem(ranks.world, len(dataset.train_x)) if ranks.world > 1 else None
    if why:
        raise UsageError(why, hint=f"give --workers {min(ranks.world, len(dataset.train_x))} or fewer, or more data")


def _prepare(
    recipe: Union[str, Path, Recipe],
    overrides: Optional[dict[str, str]],
    model: Any,
    be: Backend,
    data: Optional[str],
    train: Any,
    test: Any,
    checkpoint: Optional[Union[str, Path]],
    seed: int,
    models: Optional[dict[str, Any]] = None,
    adopt: bool = False,
    detail: Any = None,
    phases: Any = None,
    world: int = 1,
) -> _Prepared:
    """Compile, check every step against the backend, build the model and check every selector,
    then read the data: every mistake the recipe, model or data can show fails here, before
    any training. ``detail`` (``--verbose``) is told the model and the data, ``phases`` the
    time they took."""
    from ..language.validate import check_backend

    start = time.perf_counter()
    plan = resolve_recipe(recipe, overrides)
    refuse_space(plan)
    check_backend(plan, be)
    from ..backend.precision import check_precisions

    check_precisions(plan, be, world)  # fp16 on the CPU, bf16/fp16 on ranks: refused before any model is built
    model_ref = model if model is not None else (plan.target.model if plan.target else None)
    if model is None and is_code_ref(model_ref):
        raise UsageError(
            f"the recipe's target names code ({model_ref}): a recipe never runs code",
            hint=f"give it on the command line, where importing it is your act: --model {model_ref}",
        )
    if model_ref is None:
        raise UsageError("no model to compress", hint="give --model NAME (e.g. lenet5) or a `target MODEL on DATA` line")
    data_name = data or (plan.target.data if plan.target and plan.target.data else None)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and not ckpt.is_file():
        raise UsageError(f"checkpoint {ckpt} does not exist")
    # Model and selectors are checked before the data is read: mistakes fail in a second.
    dataset = _adopt_or_none(be, data_name, train, test)
    shape, classes = (dataset.input_shape, dataset.num_classes) if dataset else _data_shape(data_name)
    task = dataset.task if dataset else _data_task(data_name)
    be.set_seed(seed)
    built = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LoadWarning)
        handle: Any = be.wrap_model(model_ref, tuple(shape), classes) if adopt else load_model_ref(be, model_ref, tuple(shape), classes, ckpt)
    said = [str(w.message) for w in caught if issubclass(w.category, LoadWarning)]
    for w in caught:  # any other warning, shown as it would have been
        if not issubclass(w.category, LoadWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if detail is not None:
        from .verbose import model_line

        detail(model_line(_shown_model(model_ref), be, be.stats(handle), ckpt, time.perf_counter() - built))
    _check_smoothquant(plan, be, handle)  # the model's own structure: before the data is tried on it
    shown_data = str(data_name or (dataset.name if dataset else "the given data"))
    check_fit(be, handle, tuple(shape), classes, _shown_model(model_ref), shown_data, task=task)
    _check_selectors(plan, be, handle)
    from ..backend.removal import check_removals

    check_removals(plan, be, handle)
    _check_models(plan, be, tuple(shape), classes, models or {}, shown_data, task=task)
    _check_data_sets(plan, tuple(shape), str(data_name or "the given data"))
    _check_task(plan, task, shown_data)
    from ..data.builtin import load_data, same_data

    read = time.perf_counter()
    if dataset is None:
        dataset = load_data(str(data_name))
        if tuple(dataset.input_shape) != tuple(shape) or dataset.num_classes != classes:  # the files changed meanwhile
            raise UsageError(
                f"data {data_name} changed while it was read: {tuple(dataset.input_shape)} images in {dataset.num_classes} "
                f"classes, {tuple(shape)} in {classes} a moment before",
                hint="run again when nothing writes to the data",
            )
    others = {
        name: dataset if same_data(name, dataset.name) else load_data(name)
        for step in plan.steps
        for name in step.data_sets()
    }
    if detail is not None:
        from .verbose import data_line

        detail(data_line(dataset, time.perf_counter() - read))
        for name, other in others.items():
            if other is not dataset:
                detail(data_line(other, None))
    if phases is not None:
        phases.add("prepare", time.perf_counter() - start)
    return _Prepared(plan, be, model_ref, handle, dataset, ckpt, others, dict(models or {}), said)


def _execute(
    prep: _Prepared, out: Any, seed: int, threads: int, quiet: bool, baseline_epochs: int, latency: bool, say: Any, tell: Any = None,
    threads_note: Optional[str] = None, loop: Any = None, resume: bool = False, ranks: Any = None, phases: Any = None,
) -> tuple[Optional[Path], list[dict[str, Any]], Any, dict[str, Any], Optional[dict[str, Any]]]:
    """Baseline, then every step with its measurements, then finalize; on any failure the
    staging folder goes and a failed run's report so far is kept beside ``out``. Returns the
    staging folder, the steps, the finalized model, the baseline, and the canonical state taken
    just before finalize (what ``model.lwz`` holds: the masks still there decide the N:M layout
    of pruned, quantized layers, :mod:`lwdsl.semantics.state`; None when nothing is written).

    On several ranks (``ranks``) every rank trains, prunes and quantizes; after the starting
    model and after every step the ranks compare a digest of weights, masks and codes
    (:func:`lwdsl.backend.ranks.check_agree`); rank 0 alone measures, exports, keeps resume
    points and stages the run folder."""
    from ..backend.ranks import OneProcess, check_agree
    from .progress import progress_factory
    from .report import staging_dir
    from ..backend.precision import precision_warning
    from ..language.validate import step_text

    plan, be, handle = prep.plan, prep.backend, prep.handle
    ranks = ranks if ranks is not None else OneProcess()
    writes = ranks.writes
    progress = progress_factory(quiet, verbose=phases is not None)
    staging = staging_dir(Path(out)) if out is not None and writes else None
    if staging is not None and resume:  # an interrupted run's staging folder (a killed process leaves it): never read again
        for stale in staging.parent.glob(f".{Path(out).name}.staging-*"):
            if stale != staging and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
    ctx = StepContext(
        data=prep.dataset, seed=seed, index=-1, progress=progress, run_dir=staging, datasets=prep.datasets, models=prep.models,
        loop=loop, ranks=ranks if ranks.world > 1 else None,
    )

    def warn(message: str) -> None:  # into the step's report row (always), and said
        ctx.notes.setdefault("warnings", []).append(message)
        say(f"warning: {message}")

    ctx.warn = warn
    steps: list[dict[str, Any]] = []
    if threads_note:
        warn(threads_note)
    for said in prep.said:
        warn(said)
    try:
        baseline_info: dict[str, Any] = {"source": "checkpoint" if prep.checkpoint else "given"}
        start = time.perf_counter()
        if prep.checkpoint is None and isinstance(prep.model_ref, str) and not Path(prep.model_ref).exists():
            digest = code_digest(prep.model_ref) if is_code_ref(prep.model_ref) else None  # your file changed: another baseline
            baseline_info = _baseline(be, handle, prep.model_ref + (f"-{digest[:12]}" if digest else ""), ctx, baseline_epochs, say,
                                      writes)
        if phases is not None:
            phases.add("baseline", time.perf_counter() - start)
        if any(step.needs_original() for step in plan.steps):
            ctx.original = be.copy_model(handle)
        point = _resume_point(prep, out, seed, baseline_epochs) if out is not None and loop is None else None
        saved = point.read() if point is not None else None
        done, training = 0, None
        if saved is not None and not resume:
            say(f"starting over: {point.folder} holds this run after {saved['done']} step(s); --resume would continue from there")
        if saved is not None and resume:  # the model as it was after the saved step, the report rows so far
            state, masks = point.load(saved)
            be.load_state(handle, state)
            be.set_masks(handle, masks)
            be.set_handle_meta(handle, saved.get("meta", {}), prep.dataset)
            steps, done, baseline_info = list(saved["steps"]), int(saved["done"]), saved["baseline"]
            training = saved.get("training")
            within = (f" and epoch {training['epoch']} of {training['epochs']} of step {done + 1} (`{training['label']}`)"
                      if training else "")
            say(f"resuming after step {done} of {len(plan.steps)}{within} from {point.folder}")
        elif resume and point is not None:
            say(f"nothing to resume in {point.folder}: starting from the beginning")
        check_agree(ranks, "the model before the first step" if not done else f"the model resumed after step {done}",
                    lambda: {**_model_arrays(be, handle), "resumed after": np.array([done])},
                    hint="every worker must start from the same checkpoint, data and resume folder")
        if not done:
            if writes:  # rank 0 measures
                start = time.perf_counter()
                metrics = measure(be, handle, ctx, threads=threads, seconds=0.0, latency=latency)
                if phases is not None:
                    phases.add("measuring", time.perf_counter() - start)
                steps.append({"op": "baseline", "text": "baseline", "metrics": metrics, **ctx.notes})  # with its warnings
                say(_line(steps[-1]))
            if point is not None and writes and not point.save(be, handle, 0, steps, baseline_info):
                point = None  # the backend cannot give its masks: this run keeps no resume point
        for i, step in enumerate(plan.steps):
            if i < done:
                continue
            if step.op == "export" and not writes:  # rank 0 writes the files
                continue
            ctx.index, ctx.notes = i, {}
            opts = step.training_options()
            if opts is not None:  # the report names the precision of every step that trains
                ctx.notes["precision"] = opts.precision
                slow = precision_warning(opts.precision, be.device)
                if slow:
                    warn(slow)
            names = matched_layers(plan, i, step, be.layers(handle))
            label = f"step {i + 1}/{len(plan.steps)} `{step_text(plan, i)}`"
            if phases is not None:
                from .verbose import step_args_line

                say(step_args_line(label, step, names))
            start = time.perf_counter()
            if point is not None and step.op != "export":  # a point at the end of every epoch it trains
                from .resume import EpochPoints

                ctx.checkpoints = EpochPoints(point, i, training if training and int(training["step"]) == i else None, writes,
                                              ranks if ranks.world > 1 else None)
            try:
                handle = be.apply(handle, step, names, ctx)
            finally:
                ctx.checkpoints = None
            seconds = time.perf_counter() - start
            if step.op != "export":
                check_agree(ranks, f"step {i + 1} ({step.op})", lambda: _model_arrays(be, handle))
            if not writes:
                continue
            fraction = step.requested_sparsity()
            requested = None if fraction is None else {name: fraction for name in names}
            metrics = measure(be, handle, ctx, threads=threads, seconds=seconds, requested=requested, latency=latency)
            if phases is not None:
                measured = time.perf_counter() - start - seconds
                phases.add("steps", seconds)
                phases.add("measuring", measured)
                say(f"{label}: applied in {seconds:.2f} s, measured in {measured:.2f} s")
            steps.append({"op": step.op, "text": step_text(plan, i), "layers": names, "metrics": metrics, **ctx.notes})
            say(_line(steps[-1]))
            if point is not None and step.op != "export":  # exports run again on a resume (their files are in staging)
                point.save(be, handle, i + 1, steps, baseline_info)
        final = be.state(handle) if staging is not None else None  # masks still there: the N:M layout
        handle = be.finalize(handle)
    except BaseException as exc:
        progress.stop()
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if out is not None and writes and len(steps) > 0 and isinstance(exc, LwdslError):
            _write_failed(be, handle, plan, steps, Path(out), exc, tell or say)
        raise
    progress.stop()
    return staging, steps, handle, baseline_info, final


def _model_arrays(be: Backend, handle: Any) -> dict[str, Any]:
    """What the ranks compare after every step: the canonical weights (codes and scales of
    quantized layers included) and the masks."""
    arrays = dict(be.state(handle))
    try:
        arrays.update({f"mask:{name}": m for name, m in be.masks_of(handle).items()})
    except LwdslError:  # a backend that cannot give its masks: its weights hold the zeros
        pass
    return arrays


def _write(
    prep: _Prepared,
    handle: Any,
    steps: list[dict[str, Any]],
    out: Any,
    staging: Optional[Path],
    seed: int,
    baseline_info: dict[str, Any],
    say: Any,
    threads: Optional[dict[str, int]] = None,
    device: Optional[dict[str, str]] = None,
    extra: Optional[dict[str, Any]] = None,
    state: Optional[dict[str, Any]] = None,
) -> tuple[dict[str, Any], Optional[Path]]:
    """The report, the lock file and the run folder (swapped in atomically); ``state``: what
    ``model.lwz`` holds (:func:`_execute`'s, before finalize), else the model's state now."""
    from .report import build_report, write_run_dir

    be, plan, model_ref = prep.backend, prep.plan, prep.model_ref
    report = build_report(plan, be, model_ref, prep.dataset, seed, steps)
    if threads:
        report["threads"] = dict(threads)
    report["device"] = dict(device or {"device": be.device, "precision": "fp32"})
    report.update(extra or {})
    if out is None or staging is None:
        return report, None
    from .lockfile import lock_data

    lock = lock_data(
        plan,
        backend=be.name,
        framework_versions=be.versions(),
        model=str(model_ref) if isinstance(model_ref, (str, Path)) else type(model_ref).__name__,
        data=prep.dataset.name,
        data_sha256=prep.dataset.sha256,
        seed=seed,
        checkpoint=prep.checkpoint,
        baseline=baseline_info,
        other_data={name: ds.sha256 for name, ds in prep.datasets.items()},
        threads=threads,
        model_sha256=code_digest(model_ref) if is_code_ref(model_ref) else None,
        device=report["device"],
        world=report.get("world"),
        tokenizer_sha256=(prep.dataset.info.get("tokenizer") or {}).get("sha256"),
    )
    try:
        run_dir = write_run_dir(Path(out), staging, be, handle, plan, report, lock, state)
    except OSError as exc:  # a full disk: the run's results are lost, the old folder is not
        if not is_write_error(exc):
            raise
        needed = 2 * sum(int(getattr(a, "nbytes", 0)) for a in be.state(handle).values()) + (1 << 20)
        raise write_error(exc, "writing the run folder", Path(out), needed=needed, then=f"nothing was replaced: {out} is as it was") from None
    say(f"wrote {run_dir}")
    return report, run_dir


def _adopt_or_none(be: Backend, name: Optional[str], train: Any, test: Any) -> Optional[Dataset]:
    """The user's own data objects as a Dataset, or None when a data set name is used."""
    if train is not None or test is not None:
        if train is None or test is None:
            raise UsageError("give both train= and test= data, or a data set name")
        return be.adopt_data(train, test)
    return None


def _data_shape(name: Optional[str]) -> tuple[tuple[int, ...], int]:
    from ..data.builtin import data_shape

    if name is None:
        raise UsageError("no data set", hint="give --data NAME|PATH (mnist, fashion_mnist, synthetic:C,H,W:K, a folder, a .npz) or `target MODEL on DATA`")
    return data_shape(name)


def _data_task(name: Optional[str]) -> str:
    from ..data.builtin import data_task

    return data_task(name) if name else "classify"


def _check_models(plan: Recipe, be: Backend, shape: tuple[int, ...], classes: int, models: dict[str, Any], data: str = "",
                  task: str = "classify") -> None:
    """Every model a step names (``distill student=``) is one of ``models`` or one the backend
    builds and that takes the data (:func:`check_fit`): built once here and dropped, so a typo
    fails before any data is read or training spent (with the backend's did-you-mean)."""
    from ..language.validate import step_label

    for i, step in enumerate(plan.steps):
        for name in step.models_named():
            if name in models:
                continue
            try:
                check_fit(be, be.load_model(name, shape, classes), shape, classes, name, data or "the run's data", task=task)
            except LwdslError as exc:
                kind = UsageError if isinstance(exc, UsageError) else LwdslError
                raise kind(f"{step_label(plan, i)}: {exc.message}", hint=exc.hint) from None


def load_model_ref(be: Backend, ref: Any, shape: tuple[int, ...], classes: int, checkpoint: Optional[Path] = None) -> Any:
    """The backend's handle for ``ref``: a name, a file or an object as ``load_model`` takes it,
    or your code (``file.py:NAME``, ``package.module:NAME``: :mod:`lwdsl.runner.usermodel`)."""
    if is_code_ref(ref):
        ref = load_user_model(ref, shape, classes, be.is_model)
    return be.load_model(ref, shape, classes, checkpoint)


def _shown_model(model: Any) -> str:
    return str(model) if isinstance(model, (str, Path)) else f"your {type(model).__name__}"


def check_fit(be: Backend, handle: Any, shape: tuple[int, ...], classes: int, model: str, data: str, *, assumed: str = "",
              task: str = "classify") -> None:
    """Refuse a model that cannot take the data, before any training: one input of the data's
    shape (zeros), labelled with the last class, goes through ``be.evaluate``. A framework error
    there (input channels, image size, fewer outputs than classes) becomes a UsageError that
    says what to do.

    Args:
        shape, classes: (C, H, W) of the data's images and its number of classes.
        model, data: their names, for the message.
        assumed: why this data was taken when none was given (added to the message).

    Raises:
        UsageError: the model fails on the input (exit 2).
    """
    import numpy as np

    from .progress import progress_factory

    if task == "lm":  # one sequence of token 0, the last token of the vocabulary as every target
        x = np.zeros((1, *shape), dtype=np.int64)
        y = np.full((1, *shape), classes - 1, dtype=np.int64)
    else:  # one image of zeros, or one sequence of token 0 (token classification data: pydoc-code), labelled the last class
        x = np.zeros((1, *shape), dtype=np.int64 if len(shape) == 1 else np.float32)
        y = np.full(1, classes - 1, dtype=np.int64)
    ctx = StepContext(data=Dataset(data, x, y, x, y, classes, task=task), seed=0, index=-1, progress=progress_factory(True))
    try:
        be.evaluate(handle, ctx)
    except LwdslError:
        raise
    except Exception as exc:  # the framework's own words on what does not fit
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = (lines[0] if lines else type(exc).__name__)[:300]
        if task == "lm":
            raise UsageError(
                f"model {model} does not fit the data {data}{assumed}: a sequence of {shape[0]} token ids (vocabulary "
                f"{classes}) fails in the model: {reason}",
                hint="token sequences need a language model that takes token ids and gives a score per token: "
                "--model tiny-llama (or a Hugging Face causal LM folder)",
            ) from None
        if len(shape) == 1:
            raise UsageError(
                f"model {model} does not fit the data {data}{assumed}: a sequence of {shape[0]} token ids labelled one of "
                f"{classes} classes fails in the model: {reason}",
                hint="labelled token sequences need a sequence classifier that takes token ids: --model tiny-bert",
            ) from None
        c, *hw = shape
        size = "x".join(map(str, hw))
        raise UsageError(
            f"model {model} does not fit the data {data}{assumed}: an input of its shape {tuple(shape)} (C,H,W) "
            f"fails in the model: {reason}",
            hint=(
                "give the data the model is for: --data DATA (torchvision and Keras classifiers take 3 channels, "
                "e.g. --data synthetic:3,32,32:10) or a `target MODEL on DATA` line"
                if assumed
                else f"use a model made for {c}-channel {size} images with {classes} classes (lenet5, lenet300 and "
                "seedcnn take 1x28x28), data the model takes (torchvision and Keras classifiers take 3 channels, e.g. "
                "synthetic:3,32,32:10), or adapt the model's first layer and give it through the Python API "
                "(lwdsl.run(recipe, my_model, ...))"
            ),
        ) from None


def _check_data_sets(plan: Recipe, shape: tuple[int, ...], data_name: str) -> None:
    """Every other data set a step reads (a transfer set) must have the run's input shape:
    checked from the names alone, before any data is read."""
    from ..data.builtin import data_shape
    from ..language.validate import step_label

    for i, step in enumerate(plan.steps):
        for name in step.data_sets():
            other, _ = data_shape(name)
            if tuple(other) != shape:
                raise RunError(
                    f"{step_label(plan, i)}: data={name} has images of shape {tuple(other)} (C,H,W), "
                    f"the model takes the run's {shape} ({data_name})",
                    hint="a transfer set must have the run's image shape: use a data set of the same size and channels",
                )


def _check_task(plan: Recipe, task: str, data_name: str) -> None:
    """Steps that only mean something for images, refused for a language model (``task`` lm:
    token ids in, one distribution over the vocabulary per position out) before any training.
    A language model's ``quantize int8`` (mode=static or qat) is W8A8 simulated in the model
    (int8 weights, calibrated per-tensor int8 inputs of every quantized linear); on torch its int8
    file is ONNX (``export onnx``), on tensorflow there is none (``export tflite`` refused here,
    ``export onnx`` by tensorflow's support table, naming ``--backend torch``)."""
    if task != "lm":
        return
    from ..errors import RecipeError
    from ..language.validate import step_label

    full_int8 = None
    for i, step in enumerate(plan.steps):
        problem, hint = None, None
        if step.op == "quantize" and step.dtype == "int8" and step.mode == "dynamic" and not step.weights_only:
            problem = ("mode=dynamic quantizes activations inside an ONNX Runtime or LiteRT int8 model, whose input is "
                       "quantized too; a language model's input is token ids")
            hint = ("leave mode= out: a language model's `quantize int8` is W8A8 simulated in the model (activations "
                    "calibrated, mode=static); or quantize weights only: `quantize int8 method=gptq` or `quantize int4`")
        elif step.op == "quantize" and step.dtype == "int8" and step.mode in ("static", "qat") and not step.weights_only:
            full_int8 = i if full_int8 is None else full_int8
        elif step.op == "export" and step.format == "tflite":
            problem = f"export {step.format} of a language model is not supported yet"
            hint = ("export keras writes the model; an int8 ONNX Runtime file of a language model is `export onnx` "
                    "with --backend torch")
        elif step.op == "export" and step.format == "pt2e" and full_int8 is not None:
            problem = (f"export pt2e writes PT2E's x86 int8 form of an image model; {step_label(plan, full_int8)} of a "
                       "language model is W8A8, whose int8 file is ONNX")
            hint = "export onnx writes its int8 ONNX Runtime file (lwdsl's codes and input scales); export torch the model"
        elif getattr(step, "jitter", 0):
            problem = f"jitter={step.jitter} translates images; {data_name} is token sequences"
            hint = "leave jitter out for a language model"
        if problem is not None:
            raise RecipeError(f"{step_label(plan, i)}: {problem}", plan.location(i), hint=hint)


def _check_smoothquant(plan: Recipe, be: Backend, handle: Any) -> None:
    """A ``smoothquant`` step needs a model with norm -> linear pairs among the norms it selects
    (:func:`lwdsl.backend.smoothquant.pairs_refusal`), before any training."""
    steps = [i for i, step in enumerate(plan.steps) if step.op == "smoothquant"]
    if not steps:
        return
    from ..backend.smoothquant import pairs_refusal, smooth_pairs
    from ..errors import RecipeError
    from ..language.validate import step_label

    layers = be.layers(handle)
    for i in steps:  # a model with no pair at all is said first (its norms may be none for a selector to match)
        why = pairs_refusal(layers, matched_layers(plan, i, plan.steps[i], layers) if smooth_pairs(layers) else [])
        if why is not None:
            raise RecipeError(f"{step_label(plan, i)}: {why}", plan.location(i), found="no norm -> linear pair",
                              expected="a pre-norm transformer: *.input_layernorm -> *.self_attn.q/k/v_proj, "
                              "*.post_attention_layernorm -> *.mlp.gate/up_proj",
                              hint="drop smoothquant (quantize int8 alone still runs), or use a Llama-style model")


def _check_selectors(plan: Recipe, be: Backend, handle: Any) -> None:
    """Every selector must match before any step runs (layers of later steps may change after
    a structural removal, but names and kinds stay, so this catches typos up front)."""
    layers = be.layers(handle)
    for i, step in enumerate(plan.steps):
        matched_layers(plan, i, step, layers)


def _line(entry: dict[str, Any]) -> str:
    m = entry["metrics"]
    sparsity = 1 - m["nonzero_params"] / m["params"] if m["params"] else 0.0
    lat = f"{m['latency_ms_b1']:.3f} ms" if m.get("latency_ms_b1") is not None else "-"
    quality = f"perplexity {m['perplexity']:.2f}  " if m.get("perplexity") is not None else ""
    return (
        f"{entry['text']}: {quality}accuracy {100 * m['accuracy']:.2f}%  params {m['nonzero_params']:,}/{m['params']:,} "
        f"nonzero ({100 * sparsity:.1f}% sparse)  size {m['size_bytes']:,} B (gzip {m['size_gzip_bytes']:,} B)  "
        f"latency b1 {lat}  {m['seconds']:.1f} s"
    )


def _resume_point(prep: _Prepared, out: Any, seed: int, baseline_epochs: int) -> Any:
    from .resume import ResumePoint, fingerprint

    ref = prep.model_ref
    model = str(ref) if isinstance(ref, (str, Path)) else type(ref).__name__
    if is_code_ref(ref):
        model += "@" + code_digest(ref)
    ckpt = str(prep.checkpoint.resolve()) if prep.checkpoint is not None else None
    return ResumePoint(Path(out), fingerprint(prep.plan, prep.backend.name, model, prep.dataset.name, prep.dataset.sha256, seed,
                                              ckpt, baseline_epochs))


def _write_failed(be: Backend, handle: Any, plan: Recipe, steps: list, out: Path, exc: Exception, say: Any) -> None:
    """Keep what a failed run had: its report so far and the last good model, beside ``out``."""
    from ..backend.weights import save_weights
    import json

    failed = out.parent / f"{out.name}.failed"
    shutil.rmtree(failed, ignore_errors=True)
    try:
        failed.mkdir(parents=True)
        save_weights(failed / "last-good.lwz", be.state(handle))
        (failed / "report.json").write_text(json.dumps({"error": str(getattr(exc, "message", exc)), "steps": steps}, indent=2))
    except OSError as err:  # a full disk: the run's own error is what matters; say this too
        shutil.rmtree(failed, ignore_errors=True)
        if not is_write_error(err):
            raise
        say(f"run failed; {write_error(err, 'keeping its report so far', failed).message} ({out} is unchanged)")
        return
    say(f"run failed; its report so far and the last good model are in {failed} ({out} is unchanged)")
