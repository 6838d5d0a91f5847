"""Resume points: a run that is interrupted (an error, Ctrl-C, a killed process, a lost machine)
continues from its last completed step with ``lwdsl run ... --resume``.

After the baseline and after every step that is not an ``export``, the run writes beside its
run folder, in ``<out>.resume/``: the model's state (weights, codes, scales: ``model-K.lwz``),
its masks (``masks-K.npz``: a pruned weight is not just a zero, later training must keep it
there), what else the backend's handle needs (JSON), the report rows so far, and a fingerprint
of what made the run (recipe text, backend, model, data digest, seed, checkpoint, baseline
epochs). ``progress.json``, written last and atomically, names the files of the last complete
point, so a process killed while writing leaves the previous point whole.

A resumed run builds the same starting model (the cached baseline), puts the saved state and
masks into it, keeps the saved report rows and runs the steps after K (every ``export`` again:
their files went with the interrupted run's staging folder). Every step seeds itself from the
run seed and its index, and data order comes from the seed and the epoch, so on the CPU the
result is the one an uninterrupted run gives, bit for bit. The point goes when the run succeeds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..backend.weights import atomic_path, load_weights, save_weights
from ..errors import UsageError

__all__ = ["ResumePoint", "fingerprint"]


def fingerprint(plan: Any, backend: str, model: str, data: str, data_sha256: str, seed: int, checkpoint: Optional[str],
                baseline_epochs: int) -> dict[str, Any]:
    """What must be the same for a run to continue another's work."""
    text = plan.source or plan.to_text()
    return {
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
        with atomic_path(self.folder / "progress.json") as tmp:
            Path(tmp).write_text(json.dumps(progress, default=_jsonable), encoding="utf-8")
        for old in self.folder.iterdir():  # earlier points, now that progress.json names this one
            if old.name not in (model, masks, "progress.json"):
                old.unlink(missing_ok=True)
        return True

    def clear(self) -> None:
        """The run succeeded: its point goes."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
