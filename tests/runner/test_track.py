"""``--track mlflow``: a run in a real local MLflow store, with its parameters, metrics per step,
artifacts and status; a failed run is FAILED."""

from __future__ import annotations

import json

import pytest

import lwdsl
from lwdsl.errors import LwdslError, UsageError

mlflow = pytest.importorskip("mlflow")
DATA = "synthetic:1,12,12:4"


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # the artifacts of the default experiment go under ./mlruns
    mlflow.set_tracking_uri(uri)
    yield uri
    if mlflow.active_run() is not None:
        mlflow.end_run()


def _runs():
    return mlflow.search_runs(experiment_ids=["0"], output_format="list")


def test_a_run_is_tracked_with_its_plan_metrics_per_step_artifacts_and_status(store, tmp_path):
    result = lwdsl.run("prune l1 0.5 | finetune epochs=1 lr=0.05", "lenet300", data=DATA, quiet=True, latency=False,
                       baseline_epochs=1, out=tmp_path / "run", track="mlflow")
    [run] = _runs()
    assert run.info.status == "FINISHED" and run.info.run_id == result.report["tracking"]["mlflow_run_id"]
    assert json.loads((tmp_path / "run" / "report.json").read_text())["tracking"]["mlflow_run_id"] == run.info.run_id
    params = run.data.params
    assert params["step1.prune.amount"] == "0.5" and params["step2.finetune.epochs"] == "1" and params["model"] == "lenet300"
    client = mlflow.tracking.MlflowClient()
    history = client.get_metric_history(run.info.run_id, "accuracy")
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [s["metrics"]["accuracy"] for s in result.report["steps"]]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.json", "model.lwz", "lwdsl.lock.json", "recipe.lw"} <= artifacts
    lock = json.loads((tmp_path / "run" / "lwdsl.lock.json").read_text())
    assert run.data.tags["recipe_sha256"] == lock["recipe_sha256"]


def test_a_run_that_fails_is_failed_with_its_error(store, tmp_path):
    with pytest.raises(LwdslError):
        lwdsl.run("prune l1 0.5 on \"nothing*\"", "lenet300", data=DATA, quiet=True, latency=False, baseline_epochs=1,
                  out=tmp_path / "run", track="mlflow")
    [run] = _runs()
    assert run.info.status == "FAILED" and "nothing*" in run.data.tags["error"]


def test_an_unknown_tracker_is_refused_before_any_work(store, tmp_path):
    with pytest.raises(UsageError, match="--track wandb: not a tracker lwdsl knows"):
        lwdsl.run("prune l1 0.5", "lenet300", data=DATA, quiet=True, out=tmp_path / "run", track="wandb")
    assert _runs() == [] and not (tmp_path / "run").exists()
