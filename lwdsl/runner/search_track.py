"""Experiment tracking of a search: ``lwdsl search ... --track mlflow``.

One parent MLflow run for the search, opened before the baseline (a search failing there is
tracked too, FAILED with its error), and one nested run per trial:

- the parent: the search's settings as parameters (objectives, ``--max-drop``, seed, model,
  data, backend, each ``--set`` and each search variable's range: what makes two searches the
  same search, so a resumed search logs the same values), ``lwdsl.kind=search`` and the study's
  name as tags; at the end the baseline's and the best trial's figures as metrics, the best
  trial's number as a tag, and ``best.lw``, ``trials.md``, ``trials.json`` (and ``front.png``)
  as artifacts. FINISHED when the search ends (``lwdsl.constraint_met=false`` when no trial met
  ``--max-drop``), FAILED with the error when no trial finished or the baseline failed, KILLED
  on Ctrl-C.
- a trial (``trial-NNN``, a child through ``mlflow.parentRunId``): its values as parameters,
  its figures (accuracy before and after, points lost, sizes, parameters, latency, MACs,
  seconds) as metrics, ``lwdsl.trial``, ``lwdsl.run_dir`` and, for a failed one, ``error`` as
  tags; status FINISHED, FAILED (values that fail) or KILLED (interrupted). The best trial
  carries ``lwdsl.best=true``, and the Pareto front ``lwdsl.pareto_front=true``.

Trials are logged as they finish (by the main process, after each of its own trials, with
any a ``--workers`` helper finished meanwhile), and once more at the end. The parent's id is
kept in ``OUT/tracking.json``: running the same command again resumes the search and its
parent run, and a trial already logged is not logged twice (the children say which).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

from .track import DEFAULT_URI, mlflow_module

__all__ = ["SearchTracker", "open_search_tracker", "TRACKING_FILE"]

#: The file in the search folder that names the parent run (for a resumed search).
TRACKING_FILE = "tracking.json"
_STATUS = {"complete": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def open_search_tracker(name: Optional[str]) -> Optional["SearchTracker"]:
    """The tracker ``--track`` names, or None; a UsageError (before any work) for an unknown
    tracker or a missing install."""
    mlflow = mlflow_module(name)
    return None if mlflow is None else SearchTracker(mlflow)


def _params(settings: Any, space: Any) -> dict[str, str]:
    params = {
        "recipe": str(settings.recipe), "objectives": ",".join(settings.objectives), "max_drop": str(settings.max_drop),
        "seed": str(settings.seed), "model": str(settings.model), "data": str(settings.data), "backend": settings.backend,
        "baseline_epochs": str(settings.baseline_epochs), "checkpoint": str(settings.checkpoint),
    }
    params.update({f"set.{k}": str(v) for k, v in sorted(settings.sets.items())})
    params.update({f"space.{k}": var.text() for k, var in space.space.items()})
    return {k: v[:500] for k, v in params.items()}


def _numbers(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


class SearchTracker:
    """The parent run of one search and a nested run per trial (see the module's docstring)."""

    def __init__(self, mlflow: Any) -> None:
        self.mlflow = mlflow
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
        self.run_id: Optional[str] = None
        self.experiment_id: Optional[str] = None
        self.logged: dict[int, str] = {}  # trial number -> its run id
        self.client: Any = None

    # --- the parent ---------------------------------------------------------------------------

    def start(self, settings: Any, space: Any, out: Path, study_name: str) -> None:
        """Open (or, for a resumed search, reopen) the parent run, before the baseline."""
        self.mlflow.set_tracking_uri(self.uri)
        self.client = self.mlflow.MlflowClient(self.uri)
        earlier = self._earlier_run(out)
        nested = self.mlflow.active_run() is not None  # lwdsl.search called inside a run of the caller's
        if earlier is not None:
            run = self.mlflow.start_run(run_id=earlier, nested=nested)
        else:
            run = self.mlflow.start_run(run_name=f"search {Path(settings.recipe).stem}", nested=nested)
        self.run_id, self.experiment_id = run.info.run_id, run.info.experiment_id
        _write_json(out / TRACKING_FILE, {"mlflow_run_id": self.run_id, "tracking_uri": self.uri})
        if earlier is None:
            self.mlflow.log_params(_params(settings, space))
            self.mlflow.set_tags({"lwdsl.kind": "search", "lwdsl.study": study_name})
        self.logged = {number: run_id for number, run_id, _ in self._children_tags()}

    def _earlier_run(self, out: Path) -> Optional[str]:
        """The parent run of this search folder in this store, when there is one to resume."""
        try:
            data = json.loads((out / TRACKING_FILE).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("tracking_uri") != self.uri or not data.get("mlflow_run_id"):
            return None
        try:
            self.client.get_run(data["mlflow_run_id"])
        except Exception:  # deleted, or another store behind the same URI: a new parent run
            return None
        return str(data["mlflow_run_id"])

    def _children_tags(self) -> list[tuple[int, str, dict[str, str]]]:
        """(trial number, run id, tags) of every trial logged under the parent."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{self.run_id}'", max_results=50_000,
        )
        return [(int(r.data.tags["lwdsl.trial"]), r.info.run_id, r.data.tags) for r in runs if "lwdsl.trial" in r.data.tags]

    # --- the trials ---------------------------------------------------------------------------

    def sync(self, trials: list[Any]) -> None:
        """Log every trial that is over (finished, failed or interrupted) and not logged yet."""
        for t in trials:
            if t.state in _STATUS and t.number not in self.logged:
                self.logged[t.number] = self._log_trial(t)

    def _log_trial(self, t: Any) -> str:
        from mlflow.entities import Metric, Param, RunTag

        tags = {"mlflow.parentRunId": self.run_id, "lwdsl.trial": str(t.number), "lwdsl.state": t.state}
        if t.run_dir:
            tags["lwdsl.run_dir"] = t.run_dir
        if t.same_as is not None:
            tags["lwdsl.same_as"] = str(t.same_as)
        if t.error:
            tags["error"] = t.error[:5000]
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=f"trial-{t.number:03d}")
        now = int(time.time() * 1000)
        metrics = _numbers(t.figures)
        if t.seconds is not None:
            metrics["seconds"] = float(t.seconds)
        if t.violation is not None:
            metrics["max_drop_violation"] = float(t.violation)
        self.client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)[:500]) for k, v in t.values.items()],
        )
        self.client.set_terminated(run.info.run_id, status=_STATUS[t.state])
        return run.info.run_id

    # --- the end ------------------------------------------------------------------------------

    def finish(self, outcome: Any) -> None:
        """Every trial logged, the best (and the front) tagged, the figures and outputs on the
        parent, which ends FINISHED."""
        self.sync(outcome.trials)
        best = outcome.best
        wanted = {"lwdsl.best": {best.number} if best is not None else set(), "lwdsl.pareto_front": {t.number for t in outcome.front}}
        for number, run_id, tags in self._children_tags():
            for key, numbers in wanted.items():
                if number in numbers and tags.get(key) != "true":
                    self.client.set_tag(run_id, key, "true")
                elif number not in numbers and key in tags:  # a resumed search may have a new best
                    self.client.delete_tag(run_id, key)
        summary = _numbers(outcome.baseline, "baseline.")
        if best is not None:
            summary.update(_numbers(best.figures, "best."))
        summary["trials_finished"] = float(sum(1 for t in outcome.trials if t.finished))
        self.mlflow.log_metrics(summary)
        tags = {"lwdsl.stopped": outcome.stopped, "lwdsl.constraint_met": str(bool(best and best.feasible)).lower()}
        if best is not None:
            tags["lwdsl.best_trial"] = str(best.number)
        self.mlflow.set_tags(tags)
        for name in ("best.lw", "trials.md", "trials.json", "front.png"):
            if (outcome.out / name).is_file():
                self.mlflow.log_artifact(str(outcome.out / name))
        self.mlflow.end_run(status="FINISHED")

    def fail(self, exc: BaseException, trials: Optional[list[Any]] = None) -> None:
        """The parent FAILED with the error (KILLED on Ctrl-C), with the trials that are over."""
        if self.run_id is None:
            return
        try:
            if trials:
                self.sync(trials)
            message = str(getattr(exc, "message", exc)) or type(exc).__name__
            self.mlflow.set_tag("error", message[:5000])
        finally:
            self.mlflow.end_run(status="KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
