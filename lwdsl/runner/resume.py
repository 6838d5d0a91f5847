"""Resume points: a run that is interrupted (an error, Ctrl-C, a killed process, a lost machine)
continues from its last completed step with ``lwdsl run ... --resume``.

After the baseline and after every step that is not an ``export``, the run writes beside its
run folder, in ``<out>.resume/``: the model's state (weights, codes, scales: ``model-K.lwz``),
its masks (``masks-K.npz``: a pruned weight is not just a zero, later training must keep it
there), what else the backend's handle needs (JSON), the report rows so far, and a fingerprint
of what made the run (recipe text, backend, model, data digest, seed, checkpoint, baseline
epochs). ``progress.json``, written last and atomically, names the files of the last complete
point, so a process killed while writing leaves the previous point whole.

Inside a step that trains, the run also keeps a point at the end of every epoch
(:class:`EpochPoints`, through :func:`lwdsl.backend.fit.fit`): ``train-K-F-E.npz`` holds what the
trainer gives (:meth:`lwdsl.backend.fit.Trainer.checkpoint`: weights, masks, optimizer state,
random generator, quantized masters, loss scale) and the losses so far, and ``progress.json``
then names it under ``training`` (step K, its F-th training, epoch E done, optimizer steps done),
beside the point of step K - 1 it continues.

A resumed run builds the same starting model (the cached baseline), puts the saved state and
masks into it, keeps the saved report rows and runs the steps after K (every ``export`` again:
their files went with the interrupted run's staging folder). A step with an epoch point runs
again from its start up to its training, which then takes the saved state and continues with
the next epoch. Every step seeds itself from the run seed and its index, and data order comes
from the seed and the epoch, so on the CPU the result is the one an uninterrupted run gives,
bit for bit. The point goes when the run succeeds.

The point is the same whatever the number of workers that made it (the ranks hold the same
weights, masks and optimizer state; rank 0 writes it), so a run may resume on another number
of workers; it then ends within the conformance limits of a run on that many
(docs/semantics.md, "Several workers"). Every rank reads the point: on several machines
``--out`` must be on a file system they share.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..backend.weights import atomic_path, load_weights, save_weights
from ..errors import UsageError

__all__ = ["ResumePoint", "EpochPoints", "SavedTraining", "fingerprint"]


#: The layout of a resume point's files (the handle's record, a trainer's state): a point of
#: another layout is refused by name, never half read. 2: the one quantization record
#: (``QuantState.meta``) and the core's trainer checkpoint names (``lwdsl/backend/trainer.py``).
FORMAT = 2


def fingerprint(plan: Any, backend: str, model: str, data: str, data_sha256: str, seed: int, checkpoint: Optional[str],
                baseline_epochs: int) -> dict[str, Any]:
    """What must be the same for a run to continue another's work."""
    text = plan.source or plan.to_text()
    return {
        "format": FORMAT,
        "recipe_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "backend": backend,
        "model": model,
        "data": data,
        "data_sha256": data_sha256,
        "seed": seed,
        "checkpoint": checkpoint,
        "baseline_epochs": baseline_epochs,
    }


class ResumePoint:
    """The resume point of the run folder ``out`` (``<out>.resume/``)."""

    def __init__(self, out: Path, print_: dict[str, Any]) -> None:
        out = Path(out)
        self.folder = out.parent / f"{out.name}.resume"
        self.print = print_
        self.last: Optional[dict[str, Any]] = None  # the progress.json last read or written

    def read(self) -> Optional[dict[str, Any]]:
        """The last complete point, or None when there is none.

        Raises:
            UsageError: the point was made by another recipe, model, data, seed or backend
                (the differences named), or its files are damaged.
        """
        path = self.folder / "progress.json"
        if not path.is_file():
            return None
        try:
            progress = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path} cannot be read ({exc})", hint=f"delete {self.folder} to start over") from None
        differ = [k for k in sorted(set(self.print) | set(progress.get("fingerprint", {})))
                  if progress.get("fingerprint", {}).get(k) != self.print.get(k)]
        if differ:
            raise UsageError(
                f"{self.folder} was left by a run with another {', '.join(differ)}: it cannot be continued by this one",
                hint=f"run it as it was, or delete {self.folder} to start over (without --resume)",
            )
        self.last = progress
        return progress

    def load(self, progress: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(the model's state, its masks) of a point :meth:`read` gave."""
        state, _ = load_weights(self.folder / progress["model"])
        try:
            with np.load(self.folder / progress["masks"], allow_pickle=False) as z:
                masks = {k: np.asarray(z[k], dtype=bool) for k in z.files}
        except (OSError, ValueError) as exc:
            raise UsageError(f"{self.folder / progress['masks']} is damaged ({exc})", hint=f"delete {self.folder} to start over") from None
        return state, masks

    def save(self, be: Any, handle: Any, done: int, steps: list[dict[str, Any]], baseline: dict[str, Any]) -> bool:
        """The point after ``done`` steps of the recipe (0: after the baseline); False when the
        backend cannot give its masks (a backend without resume support: no point is kept)."""
        from ..errors import LwdslError

        try:
            keep = be.masks_of(handle)
        except LwdslError:
            self.clear()
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        model, masks = f"model-{done}.lwz", f"masks-{done}.npz"
        save_weights(self.folder / model, be.state(handle))
        with atomic_path(self.folder / masks) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **keep)
        progress = {"fingerprint": self.print, "done": done, "model": model, "masks": masks, "meta": be.handle_meta(handle),
                    "steps": steps, "baseline": baseline}
        self._commit(progress, (model, masks))
        return True

    def save_training(self, step: int, fit: int, label: str, epoch: int, epochs: int, t: int, losses: list[float],
                      state: dict[str, np.ndarray]) -> bool:
        """The point after ``epoch`` epochs of the ``fit``-th training (from 0) of step ``step``
        (0-based), which continues the point after ``step`` steps; False when there is none
        to continue (the backend keeps no points)."""
        last = self.last
        if last is None or int(last["done"]) != step:
            return False
        name = f"train-{step}-{fit}-{epoch}.npz"
        arrays = {f"s:{k}": np.asarray(v) for k, v in state.items()}
        arrays["losses"] = np.asarray(losses, dtype=np.float64)
        with atomic_path(self.folder / name) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        progress = {k: v for k, v in last.items() if k != "training"}
        progress["training"] = {"step": step, "fit": fit, "label": label, "epoch": epoch, "epochs": epochs, "t": t, "file": name}
        self._commit(progress, (last["model"], last["masks"], name))
        return True

    def load_training(self, training: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[float]]:
        """(the trainer's state, the losses so far) of the epoch point ``training`` names."""
        path = self.folder / training["file"]
        try:
            with np.load(path, allow_pickle=False) as z:
                state = {k[2:]: np.asarray(z[k]) for k in z.files if k.startswith("s:")}
                losses = [float(v) for v in z["losses"]]
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(f"{path} is damaged ({exc})", hint=f"delete {self.folder} to start over") from None
        return state, losses

    def _commit(self, progress: dict[str, Any], keep: tuple[str, ...]) -> None:
        """Write ``progress.json`` (atomically, last), then drop the files it no longer names."""
        with atomic_path(self.folder / "progress.json") as tmp:
            Path(tmp).write_text(json.dumps(progress, default=_jsonable), encoding="utf-8")
        self.last = progress
        for old in self.folder.iterdir():  # earlier points, now that progress.json names this one
            if old.name not in (*keep, "progress.json"):
                old.unlink(missing_ok=True)

    def clear(self) -> None:
        """The run succeeded: its point goes."""
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class SavedTraining:
    """An epoch point, as :func:`lwdsl.backend.fit.fit` resumes from it."""

    epoch: int  # epochs done
    t: int  # optimizer steps done
    losses: list[float]
    state: dict[str, np.ndarray]


class EpochPoints:
    """The epoch points of one step that trains (``ctx.checkpoints`` while the runner applies
    step ``step``): :meth:`begin` when a training starts, :meth:`epoch_done` after each epoch.

    A step may train more than once (``prune amount=auto`` trains at every level it tries):
    trainings are counted from 0 in the order they start; the one an interrupted run was in
    resumes, those before it run again whole, and no point is written until it is reached.
    Only the writing rank (``writes``) writes; every rank reads, and the ranks check that they
    resume the same epoch (one all-reduce of a digest).
    """

    def __init__(self, point: ResumePoint, step: int, pending: Optional[dict[str, Any]], writes: bool, ranks: Any = None) -> None:
        self.point, self.step, self.pending, self.writes, self.ranks = point, step, pending, writes, ranks
        self.fits, self.label, self.epochs, self.resumed = 0, "", 0, None
        self.off = False

    def begin(self, label: str, epochs: int, per_epoch: int) -> Optional[SavedTraining]:
        """A training of this step starts: the state to resume it from, or None (from the start)."""
        fit, self.fits = self.fits, self.fits + 1
        self.label, self.epochs = label, epochs
        found: Optional[SavedTraining] = None
        p = self.pending
        if p is not None and int(p["fit"]) == fit:
            self.pending = None
            if p.get("label") != label or int(p.get("epochs", -1)) != epochs or int(p["t"]) != int(p["epoch"]) * per_epoch:
                raise UsageError(
                    f"{self.point.folder} holds training `{p.get('label')}` of step {self.step + 1} after {p['epoch']} epoch(s), "
                    f"and this run's step {self.step + 1} trains `{label}` for {epochs} epoch(s)",
                    hint=f"delete {self.point.folder} to start over (without --resume)",
                )
            state, losses = self.point.load_training(p)
            found = SavedTraining(int(p["epoch"]), int(p["t"]), losses, state)
            self.resumed = found.epoch
        if self.ranks is not None and self.ranks.processes > 1:
            from ..backend.ranks import check_agree

            check_agree(self.ranks, f"step {self.step + 1} ({label}) resumed after epoch {found.epoch if found else 0}",
                        lambda: {"fit": np.array([fit]), "epoch": np.array([found.epoch if found else 0]),
                                 **({} if found is None else found.state)},
                        hint="every worker must read the same resume folder (on several machines, --out on a shared file system)")
        return found

    def epoch_done(self, epoch: int, t: int, losses: list[float], state: Any) -> None:
        """``epoch`` epochs of the current training are done (``state()`` gives the trainer's
        state): the point, unless a later training of this step is still to be reached."""
        if not self.writes or self.off or self.pending is not None:
            return
        try:
            arrays = state()
        except NotImplementedError:  # a backend whose trainer keeps no state: points after steps only
            self.off = True
            return
        if not self.point.save_training(self.step, self.fits - 1, self.label, epoch, self.epochs, t, losses, arrays):
            self.off = True


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
