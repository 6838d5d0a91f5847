"""What ``lwdsl search`` writes and prints: the search folder, ``best.lw``, the trial table, the
front, and the progress line (the flow is :mod:`lwdsl.runner.search`).

The search folder OUT holds ``search.json`` (what makes it this search: the recipe and its
digest, ``--set``, objectives, constraint, seed, model, data, backend), ``search.db`` (the
study), ``trials/NNN/`` (each trial's run folder), and, rewritten after every trial,
``best.lw``, ``trials.md``, ``trials.json`` (and ``front.png`` for two
objectives). Files are replaced atomically.

``best.lw`` is the recipe as its author wrote it (comments, ``$NAME`` uses, header), with the
chosen value written into each search variable's ``let`` (and each ``--set``), laid out by the
project's formatter, under ``#`` comments with the measured figures and the command that
reproduces them. When that text would not compile to the trial's plan from OUT (a ``use`` of
another file, a relative ``teacher=`` path), it is the plan's canonical text instead.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from ..errors import RecipeError, UsageError
from ..language.plan import Recipe
from .search_settings import OBJECTIVES, SearchSettings, Trial

__all__ = [
    "check_search_out",
    "write_identity",
    "trial_plan",
    "choose",
    "write_outputs",
    "best_text",
    "progress_line",
    "constraint_words",
]

IDENTITY = "search.json"
#: What a search folder may hold (beside ``search.db``'s journal files).
SEARCH_FILES = {IDENTITY, "search.db", "best.lw", "trials.md", "trials.json", "front.png", "trials", "tracking.json"}


def check_search_out(out: Path, identity: dict[str, Any]) -> Path:
    """The absolute search folder: new, empty, or one holding a search of this same command
    (which then resumes). Anything else is a UsageError naming the difference."""
    path = Path(os.path.abspath(out))
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise UsageError(f"--out {out}: it is {'a symbolic link' if path.is_symlink() else 'a file'}, not a folder",
                         hint="give a new folder for the search, e.g. --out runs/search1")
    if path == Path.cwd() or Path.cwd().is_relative_to(path):
        raise UsageError(f"--out {out}: it is the current folder or one above it", hint="e.g. --out runs/search1")
    if path.is_dir():
        entries = sorted(os.listdir(path))
        if entries:
            theirs = _read_identity(path)
            if theirs is None:
                others = [e for e in entries if e not in SEARCH_FILES and not e.startswith("search.db")]
                raise UsageError(
                    f"--out {out}: it holds files lwdsl search did not write ({', '.join((others or entries)[:3])})",
                    hint="give a new or empty folder for the search",
                )
            differ = [k for k in identity if theirs.get(k) != identity[k]]
            if differ:
                words = "; ".join(f"{k}: {theirs.get(k)!r} there, {identity[k]!r} now" for k in differ[:4])
                raise UsageError(
                    f"--out {out} holds another search ({words})",
                    hint="run the same command to resume that search, or give another --out for this one",
                )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _read_identity(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads((path / IDENTITY).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("lwdsl_search") == 1 else None


def write_identity(out: Path, identity: dict[str, Any], study: str) -> None:
    if _read_identity(out) is None:
        _write(out / IDENTITY, json.dumps({"lwdsl_search": 1, "study": study, **identity}, indent=2) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically (a reader or an interruption never sees half a file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)  # as open() would have made it, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- the recipe of a trial ------------------------------------------------------------------


def _pinned(settings: SearchSettings, values: dict[str, str], notes: bool = False) -> tuple[str, dict[str, str]]:
    """The recipe's own text with ``values`` (and ``--set``) written into its lets, and the
    values of variables defined in files it uses (given as overrides instead)."""
    from ..language import syntax as s
    from ..language.compiler import read_text
    from ..language.parser import parse_document
    from ..language.space import pin_source

    text = read_text(settings.recipe, root=settings.root)
    lets = {st.name: st for st in parse_document(text, str(settings.recipe)).statements if isinstance(st, s.Let)}
    chosen = {**settings.sets, **values}
    here = {k: v for k, v in chosen.items() if k in lets}
    words = {}
    if notes:
        for name in values:
            if name in lets and isinstance(lets[name].value, s.Call):
                call = lets[name].value
                words[name] = "from " + text[call.span.start : call.span.end]
    return pin_source(text, str(settings.recipe), here, words), {k: v for k, v in chosen.items() if k not in lets}


def trial_plan(settings: SearchSettings, values: dict[str, str]) -> Recipe:
    """The plan a trial runs: the recipe with ``values`` written in (its ``source``, which the
    run folder keeps as ``recipe.lw``, is that text), compiled where the recipe is."""
    from ..language.compiler import parse

    text, rest = _pinned(settings, values)
    return parse(text, file=str(settings.recipe), overrides=rest, root=settings.root)


# --- the choice -----------------------------------------------------------------------------


def _signed(settings: SearchSettings, trial: Trial) -> tuple[float, ...]:
    return tuple(
        v if OBJECTIVES[n].direction == "minimize" else -v for n, v in zip(settings.objectives, trial.objectives or ())
    )


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def choose(settings: SearchSettings, trials: list[Trial]) -> tuple[Optional[Trial], list[Trial]]:
    """The best trial (and, for two objectives, the Pareto front of the feasible trials).

    Best: among the trials that meet ``--max-drop``, the best first objective (ties: higher
    accuracy, then the earlier trial). When none meets it: the one that misses it by least.
    """
    complete = [t for t in trials if t.state == "complete" and t.same_as is None]
    if not complete:
        return None, []
    feasible = [t for t in complete if t.feasible]
    if not feasible:
        return min(complete, key=lambda t: (t.violation or 0.0, _signed(settings, t), t.number)), []
    best = min(feasible, key=lambda t: (_signed(settings, t)[0], -t.figures["accuracy_after"], t.number))
    if len(settings.objectives) < 2:
        return best, []
    def beaten(t: Trial) -> bool:  # by another trial, or tied with an earlier one
        me = _signed(settings, t)
        return any(_dominates(_signed(settings, o), me) or (_signed(settings, o) == me and o.number < t.number) for o in feasible)

    front = [t for t in feasible if not beaten(t)]
    front.sort(key=lambda t: (_signed(settings, t), t.number))
    return best, front


# --- words ----------------------------------------------------------------------------------


def constraint_words(settings: SearchSettings, trial: Optional[Trial] = None) -> str:
    """``--max-drop 0.5`` in words, and whether ``trial`` meets it and by how much."""
    if settings.max_drop is None:
        return "no constraint (--max-drop not given)"
    rule = f"--max-drop {settings.max_drop:g}: at most {settings.max_drop:g} points of test accuracy lost, absolute, against the baseline"
    if trial is None or trial.violation is None:
        return rule
    lost = trial.figures["drop_points"]
    if trial.violation <= 0:
        return f"{rule}: met ({_points(-lost)} points)"
    return f"{rule}: MISSED by {trial.violation:.2f} points ({lost:.2f} points lost)"


def _points(change: float) -> str:
    return f"{round(change, 2) + 0.0:+.2f}"  # + 0.0: never "-0.00"


def _objective_words(settings: SearchSettings) -> str:
    words = [f"{n} ({OBJECTIVES[n].words}, {OBJECTIVES[n].direction}d)" for n in settings.objectives]
    return " and ".join(words) + (": a Pareto front" if len(words) > 1 else "")


def _figure_words(settings: SearchSettings, trial: Trial, baseline: dict[str, Any]) -> list[str]:
    f = trial.figures
    lines = [
        f"accuracy {100 * f['accuracy_before']:.2f}% -> {100 * f['accuracy_after']:.2f}% "
        f"({_points(-f['drop_points'])} points against the baseline)",
        constraint_words(settings, trial),
        f"size {f['size_gzip_bytes']:,} B gzip ({f['baseline_size_gzip_bytes'] / max(f['size_gzip_bytes'], 1):.1f}x smaller than "
        f"the baseline's {f['baseline_size_gzip_bytes']:,} B), {f['nonzero_params']:,} of {f['params']:,} parameters non-zero",
    ]
    if f.get("latency_ms_b1") is not None:
        lines.append(f"latency {f['latency_ms_b1']:.3f} ms at batch 1 (baseline {f['baseline_latency_ms_b1']:.3f} ms)")
    if f.get("macs") is not None:
        lines.append(f"{f['macs']:,} multiply-accumulates per input (zero weights skipped; baseline {f.get('baseline_macs', 0):,})")
    return lines


def best_text(settings: SearchSettings, space: Recipe, best: Trial, trials: list[Trial], out: Path) -> str:
    """``best.lw``: the recipe with the best trial's values written in, under its figures."""
    from ..language.compiler import parse
    from ..language.formatter import format_source

    done = sum(1 for t in trials if t.finished)
    values = ", ".join(f"{k} = {v} (from {space.space[k].text()})" for k, v in best.values.items())
    header = [
        f"lwdsl search: the best of {done} trials: trial #{best.number}; objective {_objective_words(settings)}",
        f"values: {values}",
        *_figure_words(settings, best, {}),
        f"searched: lwdsl search {settings.recipe} {settings.search_options()}",
        f"the same figures again: lwdsl run best.lw {settings.run_options()}",
    ]
    if not best.feasible:
        header.insert(0, "NO TRIAL MET THE CONSTRAINT: this is the one that missed it by least")
    comments = "".join(f"# {line}\n" for line in header)
    text, rest = _pinned(settings, best.values, notes=True)
    try:
        same = not rest and parse(text, file=str(out / "best.lw")) == trial_plan(settings, best.values)
    except RecipeError:
        same = False
    if not same:  # the author's text does not stand alone in OUT: the plan's own text does
        comments += "# (the plan, written out in full: the recipe's text uses files or paths next to it)\n"
        text = trial_plan(settings, best.values).to_text()
    return format_source(comments + "\n" + text, str(out / "best.lw"))


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def trials_markdown(settings: SearchSettings, space: Recipe, trials: list[Trial], best: Optional[Trial], front: list[Trial], baseline: dict[str, Any]) -> str:
    names = list(space.space)
    obj = [OBJECTIVES[n] for n in settings.objectives]
    lines = [
        f"# lwdsl search: {settings.recipe}",
        "",
        f"- space: {space.space_words()}",
        f"- objective: {_objective_words(settings)}",
        f"- constraint: {constraint_words(settings)}",
        f"- baseline: test accuracy {100 * baseline.get('accuracy', 0):.2f}%, {baseline.get('size_gzip_bytes', 0):,} B gzip"
        if baseline else "- baseline: see any trial's report",
        f"- trials: {sum(1 for t in trials if t.finished)} finished "
        f"({sum(1 for t in trials if t.state == 'complete')} complete, {sum(1 for t in trials if t.state == 'failed')} failed), "
        f"{sum(1 for t in trials if t.state == 'interrupted')} interrupted",
        f"- best: trial #{best.number}" + ("" if best.feasible else " (it misses the constraint: no trial met it)") if best else "- best: none yet",
        "",
        "| # | " + " | ".join(names) + " | accuracy | change (points) | meets | " + " | ".join(o.name for o in obj if o.name != "accuracy") + " | seconds | run |",
        "|" + "---|" * (len(names) + 5 + sum(1 for o in obj if o.name != "accuracy") + 1),
    ]
    marks = {t.number for t in front}
    for t in trials:
        mark = " **best**" if best is not None and t.number == best.number else (" front" if t.number in marks else "")
        vals = " | ".join(_cell(t.values.get(n, "")) for n in names)
        if t.state != "complete":
            why = t.error or t.state
            if t.same_as is not None:
                why = f"same values as #{t.same_as}: {why}"
            lines.append(f"| {t.number}{mark} | {vals} | {_cell(why)} | | | " + " | ".join("" for o in obj if o.name != "accuracy") + " | |  |")
            continue
        f = t.figures
        meets = "-" if t.violation is None else "yes" if t.feasible else f"no (by {t.violation:.2f})"
        cells = " | ".join(o.show(f.get(o.key)) for o in obj if o.name != "accuracy")
        run = f"same values as #{t.same_as}" if t.same_as is not None else (os.path.relpath(t.run_dir, settings.out) if t.run_dir else "")
        lines.append(
            f"| {t.number}{mark} | {vals} | {100 * f['accuracy_after']:.2f}% | {_points(-f['drop_points'])} | {meets} | {cells} | "
            f"{t.seconds if t.seconds is not None else ''} | {run} |"
        )
    if front:
        lines += ["", f"Pareto front ({len(front)} trials): " + ", ".join(f"#{t.number}" for t in front)]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, settings: SearchSettings, space: Recipe, trials: list[Trial], baseline: dict[str, Any]) -> None:
    """Write ``trials.json``, ``trials.md``, ``best.lw`` (and the front) again, atomically."""
    best, front = choose(settings, trials)
    data = {
        "recipe": str(settings.recipe),
        "space": {k: v.text() for k, v in space.space.items()},
        "objectives": list(settings.objectives),
        "max_drop_points": settings.max_drop,
        "constraint": constraint_words(settings),
        "baseline": baseline,
        "best": best.number if best else None,
        "best_meets_constraint": best.feasible if best else None,
        "front": [t.number for t in front],
        "trials": [asdict(t) for t in trials],
    }
    _write(out / "trials.json", json.dumps(data, indent=2) + "\n")
    _write(out / "trials.md", trials_markdown(settings, space, trials, best, front, baseline))
    if best is not None:
        _write(out / "best.lw", best_text(settings, space, best, trials, out))
    if len(settings.objectives) > 1:
        _front_plot(out, settings, trials, front)


def _front_plot(out: Path, settings: SearchSettings, trials: list[Trial], front: list[Trial]) -> None:
    """``front.png``: every complete trial by the two objectives, the front joined (skipped
    without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    a, b = (OBJECTIVES[n] for n in settings.objectives)
    done = [t for t in trials if t.state == "complete" and t.same_as is None]
    fig, ax = plt.subplots(figsize=(6, 4))
    for feasible, style in ((True, "o"), (False, "x")):
        pts = [t for t in done if t.feasible == feasible]
        ax.scatter([t.objectives[0] for t in pts], [t.objectives[1] for t in pts], marker=style,
                   label="meets the constraint" if feasible else "misses it", alpha=0.7)
    if front:
        ax.plot([t.objectives[0] for t in front], [t.objectives[1] for t in front], "-", color="black", label="front")
    ax.set_xlabel(f"{a.name} ({a.words})")
    ax.set_ylabel(f"{b.name} ({b.words})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=".front.", suffix=".png", dir=out)
    os.close(fd)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, out / "front.png")


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def progress_line(settings: SearchSettings, trials: list[Trial], number: int, left: Optional[float]) -> str:
    """One line per trial: trial k of N, its values and figures, the best so far, time left."""
    t = next(t for t in trials if t.number == number)
    k = sum(1 for x in trials if x.finished and x.number <= number)
    values = ", ".join(f"{n}={v}" for n, v in t.values.items())
    if t.state == "complete":
        f = t.figures
        meets = "" if t.violation is None else ("meets --max-drop" if t.violation <= 0 else f"misses --max-drop by {t.violation:.2f}")
        what = f"accuracy {100 * f['accuracy_after']:.2f}% ({_points(-f['drop_points'])} points{', ' + meets if meets else ''}), " + ", ".join(
            f"{o.name} {o.show(f.get(o.key))}" for o in (OBJECTIVES[n] for n in settings.objectives) if o.name != "accuracy"
        )
        if t.same_as is not None:
            what += f" (same values as #{t.same_as}: not run again)"
    else:
        what = f"{t.state}: {t.error or ''}".rstrip(": ")
    best, _ = choose(settings, trials)
    if best is None:
        so_far = "no trial complete yet"
    else:
        o = OBJECTIVES[settings.objectives[0]]
        so_far = f"#{best.number} {o.name} {o.show(best.figures.get(o.key))}" + ("" if best.feasible else " (misses the constraint)")
    return f"trial {k} of {settings.trials} (#{number}): {values} -> {what}; best so far {so_far}; about {_duration(left)} left"
