"""The settings of ``lwdsl search`` and the record of a trial: what the flow
(:mod:`lwdsl.runner.search`) and its outputs (:mod:`lwdsl.runner.search_output`) share.

The objectives are a table (:data:`OBJECTIVES`): a new one is a row, naming the figure of a
trial it reads and whether it is minimised.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import UsageError

__all__ = ["NO_FEASIBLE_EXIT", "OBJECTIVES", "Objective", "SearchSettings", "Trial", "check_settings"]

#: The exit code of a search in which no trial met the constraints (its best-so-far is written).
NO_FEASIBLE_EXIT = 3
#: Trials of random values before the sampler models the results (Optuna's default).
STARTUP_TRIALS = 10
#: The population of NSGA-II (two objectives): small, for budgets of tens of trials.
POPULATION = 10
STUDY_PREFIX = "lwdsl-search-"


@dataclass(frozen=True)
class Objective:
    """One thing a search can minimise (or, for ``accuracy``, maximise) over the final model."""

    name: str
    key: str  # in a trial's figures
    direction: str  # "minimize" or "maximize"
    words: str
    needs_latency: bool = False
    only_in_front: bool = False

    def show(self, value: Optional[float]) -> str:
        if value is None:
            return "-"
        if self.key == "accuracy_after":
            return f"{100 * value:.2f}%"
        if self.key == "latency_ms_b1":
            return f"{value:.3f} ms"
        return f"{int(value):,}" + (" B" if self.key == "size_gzip_bytes" else "")


#: The objectives, one row each.
OBJECTIVES = {
    "size": Objective("size", "size_gzip_bytes", "minimize", "bytes of the compact weights file, gzip -9"),
    "params": Objective("params", "nonzero_params", "minimize", "non-zero parameters"),
    "latency": Objective("latency", "latency_ms_b1", "minimize", "milliseconds per input at batch 1", needs_latency=True),
    "macs": Objective("macs", "macs", "minimize", "multiply-accumulates of one input, zero weights skipped"),
    "accuracy": Objective("accuracy", "accuracy_after", "maximize", "test accuracy", only_in_front=True),
}


@dataclass(frozen=True)
class SearchSettings:
    """What ``lwdsl search`` was asked: the space, the budget, the goal and how each trial runs."""

    recipe: Path
    out: Path
    trials: int
    objectives: tuple[str, ...] = ("size",)
    max_drop: Optional[float] = None
    seconds: Optional[float] = None
    seed: int = 0
    storage: Optional[str] = None
    workers: int = 1
    sets: dict[str, str] = field(default_factory=dict)
    root: Optional[Path] = None
    model: Optional[str] = None
    data: Optional[str] = None
    backend: str = "torch"
    checkpoint: Optional[Path] = None
    baseline_epochs: int = 3
    threads: int = 1
    train_threads: Optional[int] = None
    device: str = "auto"

    def identity(self) -> dict[str, Any]:
        """What makes two searches the same search (resumable into one study): not the budget."""
        return {
            "recipe": os.path.abspath(self.recipe),
            "recipe_sha256": hashlib.sha256(Path(self.recipe).read_bytes()).hexdigest(),
            "sets": dict(sorted(self.sets.items())),
            "objectives": list(self.objectives),
            "max_drop": self.max_drop,
            "seed": self.seed,
            "model": self.model,
            "data": self.data,
            "backend": self.backend,
            "checkpoint": os.path.abspath(self.checkpoint) if self.checkpoint else None,
            "baseline_epochs": self.baseline_epochs,
        }

    def study_name(self) -> str:
        """The study's name in the database: the same on every machine that runs this search
        (the recipe and checkpoint by content, not by where they are), so that ``--storage``
        shares it; another search gets another name."""
        portable = {k: v for k, v in self.identity().items() if k not in ("recipe", "checkpoint")}
        if self.checkpoint is not None:
            portable["checkpoint_sha256"] = hashlib.sha256(Path(self.checkpoint).read_bytes()).hexdigest()
        digest = hashlib.sha256(json.dumps(portable, sort_keys=True).encode()).hexdigest()
        return STUDY_PREFIX + digest[:12]

    def run_options(self) -> str:
        """The options a run of the found recipe needs to start from the same place."""
        parts = []
        for flag, value in (("--model", self.model), ("--data", self.data), ("--checkpoint", self.checkpoint)):
            if value is not None:
                parts.append(f"{flag} {value}")
        parts += [f"--backend {self.backend}", f"--seed {self.seed}"]
        if self.checkpoint is None:
            parts.append(f"--baseline-epochs {self.baseline_epochs}")
        if self.train_threads is not None:  # the float sums of training depend on the threads that split them
            parts.append(f"--train-threads {self.train_threads}")
        return " ".join(parts)

    def search_options(self) -> str:
        """The options of this search, as its command line gives them (the budget aside)."""
        parts = [f"--objective {','.join(self.objectives)}"]
        if self.max_drop is not None:
            parts.append(f"--max-drop {self.max_drop:g}")
        parts += [f"--set {k}={v}" for k, v in self.sets.items()]
        return " ".join(parts + [self.run_options()])


@dataclass
class Trial:
    """One trial as the outputs show it (from the study: the database is the record)."""

    number: int
    state: str  # complete, failed, interrupted, running
    values: dict[str, str]
    figures: dict[str, Any] = field(default_factory=dict)
    objectives: Optional[list[float]] = None
    violation: Optional[float] = None  # points of accuracy lost beyond --max-drop (<= 0: met)
    seconds: Optional[float] = None
    run_dir: Optional[str] = None
    error: Optional[str] = None
    same_as: Optional[int] = None

    @property
    def finished(self) -> bool:
        return self.state in ("complete", "failed")

    @property
    def feasible(self) -> bool:
        return self.state == "complete" and (self.violation is None or self.violation <= 0)


def check_settings(settings: SearchSettings) -> None:
    """Refuse bad objectives and constraints before any work (UsageError, exit 2)."""
    names = settings.objectives
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        from ..errors import did_you_mean

        near = did_you_mean(unknown[0], OBJECTIVES)
        raise UsageError(
            f"--objective {unknown[0]}: unknown (known: {', '.join(OBJECTIVES)})",
            hint=f"did you mean {near}?" if near else "e.g. --objective size, or two for a Pareto front: --objective size,accuracy",
        )
    if not 1 <= len(names) <= 2 or len(set(names)) != len(names):
        raise UsageError(
            f"--objective {','.join(names)}: give one objective, or two different ones for a Pareto front",
            hint="e.g. --objective size, or --objective size,accuracy",
        )
    if len(names) == 1 and OBJECTIVES[names[0]].only_in_front:
        raise UsageError(
            "--objective accuracy alone would undo the compression: it is the second objective of a front",
            hint="e.g. --objective size,accuracy (a Pareto front), or --objective size --max-drop 0.5",
        )
    if settings.max_drop is not None and (not math.isfinite(settings.max_drop) or settings.max_drop < 0):
        raise UsageError(
            f"--max-drop {settings.max_drop}: points of accuracy that may be lost, a number >= 0",
            hint="e.g. --max-drop 0.5 (at most half a point below the baseline's accuracy), --max-drop 0 (none lost)",
        )
