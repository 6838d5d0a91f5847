"""What a step may use besides its spec: data, seeds, progress, the original model, outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..data.dataset import Dataset

__all__ = ["StepContext", "ProgressFactory"]

ProgressFactory = Callable[[int, str], Any]


def _silent(message: str) -> None:
    return None


@dataclass
class StepContext:
    """The context of one step, built by the runner and passed to every handler.

    Attributes:
        data: the run's data set (training, calibration and test images as numpy).
        seed: the run seed (data order, initialisation).
        index: the step's position in the recipe (0-based; -1 for the baseline).
        progress: ``progress(total, description)`` returns an object with ``update(n)`` and
            ``close()``; every loop over data (training, calibration, evaluation) reports
            through it.
        original: the backend's handle of the model as it was before the first step (a copy,
            kept only when a step's spec says it needs it: self-distillation's teacher).
        run_dir: the (staging) run folder artifacts are written into; None writes nothing.
        warn: says something the user must not miss (a layer an engine leaves in float).
        notes: what handlers report back for the step's row of the report (artifacts, ...).
        models: the user's own framework model objects, by the name a recipe gives them
            (``lwdsl.run(models=...)``; ``distill student=NAME`` looks here first).
        datasets: the other data sets steps read, by the name the recipe gives (a transfer
            set, ``distill data=NAME``), loaded and shape-checked by the runner before training.
        backend: the backend running the step (set by :meth:`Backend.apply`): a handler
            written once in the core loads teachers and students through it.
        loop: the user's own training loop making the optimizer steps (``lwdsl.attach``,
            :class:`lwdsl.backend.loop.UserLoop`), or None when lwdsl trains.
        ranks: the processes training shares (:class:`lwdsl.backend.ranks.Ranks`; None: one
            process, as always): training steps take this rank's shards of every global batch
            (:mod:`lwdsl.semantics.shards`) and sum gradients over the ranks.
        checkpoints: where training keeps a checkpoint at the end of every epoch and finds the
            one to resume from (:class:`lwdsl.runner.resume.EpochPoints`, set by the runner for
            the step it applies); None keeps none.
    """

    data: Dataset
    seed: int
    index: int
    progress: ProgressFactory
    original: Any = None
    run_dir: Optional[Path] = None
    warn: Callable[[str], None] = _silent
    notes: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, Dataset] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    backend: Any = None
    loop: Any = None
    ranks: Any = None
    checkpoints: Any = None
    extra: dict[str, Any] = field(default_factory=dict)  # tests' own bookkeeping only

    def step_seed(self) -> int:
        """The seed of this step: the run seed mixed with the step index (for random pruning)."""
        return (self.seed * 1_000_003 + self.index) % (2**32)

    def train_examples(self, batch: int) -> int:
        """How many training examples an epoch has, as schedules count them: the data set's, or
        in a user's loop its steps per epoch times ``batch``."""
        return len(self.data.train_x) if self.loop is None else self.loop.steps_per_epoch * int(batch)

    def output_path(self, name: str) -> Path:
        """Where an artifact called ``name`` goes: inside the run folder, or, when the run writes
        no folder (the Python API without ``out``), the current folder, where an existing file
        is never replaced.

        Raises:
            UsageError: no run folder, and ``name`` exists in the current folder.
        """
        if self.run_dir is not None:
            return Path(self.run_dir) / name
        path = Path.cwd() / name
        if path.exists():
            from ..errors import UsageError

            raise UsageError(f"{path} exists: without a run folder, an export never replaces a file", hint="give out=FOLDER, or another PATH")
        return path
