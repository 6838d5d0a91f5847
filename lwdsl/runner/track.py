"""Experiment tracking: ``lwdsl run ... --track mlflow``.

One MLflow run per lwdsl run, opened before the model loads (so a run that fails on its model or
data is there too, FAILED with its error): the resolved plan as parameters (``step1.prune.amount``
...), the seed, backend, model and data; every step's metrics with the step's index as MLflow's
step (accuracy, loss, non-zero weights, gzip size, latency); the run folder's files (report,
plots, ``model.lwz``, exports, lock file) as artifacts; the lock file's hashes as tags. The
report records the MLflow run id. Where: ``MLFLOW_TRACKING_URI`` when set (a shared server),
else a SQLite store in the current folder (``sqlite:///mlflow.db``, artifacts in ``./mlruns``),
MLflow's own recommended local store. MLflow is an optional extra: ``pip install 'lwdsl[track]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from ..errors import UsageError

__all__ = ["Tracker", "TRACKERS", "open_tracker", "mlflow_module"]

TRACKERS = ("mlflow",)
DEFAULT_URI = "sqlite:///mlflow.db"
_METRICS = ("accuracy", "loss", "params", "nonzero_params", "size_bytes", "size_gzip_bytes", "latency_ms_b1", "latency_ms_b64", "seconds")


def mlflow_module(name: Optional[str]) -> Any:
    """The ``mlflow`` module for ``--track NAME``, or None without ``--track``; a UsageError for
    an unknown tracker or a missing install (exit 2, before any work)."""
    if name is None:
        return None
    if name not in TRACKERS:
        raise UsageError(f"--track {name}: not a tracker lwdsl knows", hint=f"give one of: {', '.join(TRACKERS)}")
    try:
        import mlflow
    except ImportError:
        raise UsageError("--track mlflow needs MLflow, which is not installed",
                         hint="pip install 'lwdsl[track]' (or: pip install mlflow)") from None
    return mlflow


def open_tracker(name: Optional[str]) -> Optional["Tracker"]:
    """The tracker ``--track`` names, or None; a UsageError for an unknown one or a missing install."""
    mlflow = mlflow_module(name)
    return None if mlflow is None else Tracker(mlflow)


def _params(plan: Any) -> dict[str, str]:
    out = {}
    for i, step in enumerate(plan.steps, 1):
        for key, value in step.model_dump(mode="json").items():
            if key in ("op",):
                continue
            out[f"step{i}.{step.op}.{key}"] = str(value)[:500]
        out.setdefault(f"step{i}.op", step.op)
    return out


class Tracker:
    """One MLflow run (see the module's docstring)."""

    def __init__(self, mlflow: Any) -> None:
        self.mlflow = mlflow
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
        self.run_id: Optional[str] = None

    def start(self, plan: Any, *, backend: str, model: str, data: Optional[str], seed: int) -> None:
        self.mlflow.set_tracking_uri(self.uri)
        run = self.mlflow.start_run(run_name=plan.name or None)
        self.run_id = run.info.run_id
        self.mlflow.log_params({"backend": backend, "model": model, "data": str(data), "seed": seed, **_params(plan)})

    def finish(self, report: dict[str, Any], run_dir: Optional[Path], lock: Optional[dict[str, Any]] = None) -> None:
        for i, step in enumerate(report["steps"]):
            metrics = {k: float(v) for k, v in step["metrics"].items() if k in _METRICS and isinstance(v, (int, float))}
            self.mlflow.log_metrics(metrics, step=i)
        self.mlflow.log_metrics({f"summary.{k}": float(v) for k, v in report.get("summary", {}).items() if isinstance(v, (int, float))})
        if lock:
            self.mlflow.set_tags({k: str(lock[k]) for k in ("recipe_sha256", "data_sha256", "model_sha256", "checkpoint_sha256") if lock.get(k)})
        if run_dir is not None:
            self.mlflow.log_artifacts(str(run_dir))
        self.mlflow.end_run(status="FINISHED")

    def fail(self, exc: BaseException) -> None:
        if self.run_id is None:
            return
        message = str(getattr(exc, "message", exc)) or type(exc).__name__
        try:
            self.mlflow.set_tag("error", message[:5000])
        finally:
            self.mlflow.end_run(status="KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
