"""``lwdsl search --track mlflow``: one parent run for the search and a nested run per trial in a
real local MLflow store (their values, figures and status, a failed trial FAILED, the best
tagged); a resumed search goes on in the same parent run; a search that fails is FAILED."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lwdsl.cli.app import app
from lwdsl.errors import RunError
from lwdsl.runner import pipeline
from lwdsl.runner.search import search

from .test_search import DATA, fake, settings  # noqa: F401  (fake: the fixture)

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("optuna")

SPACE = 'let s = choice(20%, 50%, 95%)\nprune l1 $s on "fc1"\n'


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()


def _runs() -> tuple[list, list]:
    runs = mlflow.search_runs(experiment_ids=["0"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


@pytest.fixture
def failing_95(monkeypatch):
    """Trials with s=95% fail (as values that diverge would): a RunError from the run."""
    real = pipeline.run

    def run(plan, *args, **kw):
        if getattr(plan, "steps", None) and plan.steps[0].amount == pytest.approx(0.95):
            raise RunError("the loss diverged on purpose at 95%")
        return real(plan, *args, **kw)

    monkeypatch.setattr(pipeline, "run", run)


def test_a_search_is_a_parent_run_with_a_nested_run_per_trial(fake, store, failing_95):  # noqa: F811
    Path("space.lw").write_text(SPACE)
    result = search(settings(trials=10, max_drop=50.0), echo=lambda _: None, track="mlflow")
    assert result.stopped == "every point of the space is tried"
    [parent], children = _runs()
    assert parent.info.status == "FINISHED" and parent.data.tags["lwdsl.kind"] == "search"
    assert parent.data.params["space.s"] == "choice(20%, 50%, 95%)" and parent.data.params["objectives"] == "size"
    assert json.loads(Path("out/tracking.json").read_text())["mlflow_run_id"] == parent.info.run_id
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}

    trials = {t["number"]: t for t in json.loads(Path("out/trials.json").read_text())["trials"]}
    by_number = {int(c.data.tags["lwdsl.trial"]): c for c in children}
    assert sorted(by_number) == sorted(trials)  # one nested run a trial, none twice
    for number, child in by_number.items():
        trial = trials[number]
        assert child.info.run_name == f"trial-{number:03d}" and child.data.params == trial["values"]
        if trial["state"] == "complete":
            assert child.info.status == "FINISHED"
            assert child.data.metrics["size_gzip_bytes"] == trial["figures"]["size_gzip_bytes"]
            assert child.data.metrics["accuracy_after"] == trial["figures"]["accuracy_after"]
        else:
            assert trial["values"] == {"s": "95%"} and child.info.status == "FAILED"
            assert "diverged on purpose" in child.data.tags["error"]
    assert any(c.info.status == "FAILED" for c in children) and any(c.info.status == "FINISHED" for c in children)

    best = [n for n, c in by_number.items() if c.data.tags.get("lwdsl.best") == "true"]
    assert best == [result.best.number] and parent.data.tags["lwdsl.best_trial"] == str(result.best.number)
    assert parent.data.metrics["best.size_gzip_bytes"] == result.best.figures["size_gzip_bytes"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id)}
    assert {"best.lw", "trials.md", "trials.json"} <= artifacts

    search(settings(trials=10, max_drop=50.0), echo=lambda _: None, track="mlflow")  # resumed: nothing left to try
    [again], children_again = _runs()
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert sorted(c.info.run_id for c in children_again) == sorted(c.info.run_id for c in children)


def test_a_search_in_which_no_trial_finishes_is_failed(fake, store):  # noqa: F811
    Path("space.lw").write_text('let s = choice(20%, 50%, 80%)\nprune l1 $s on "fc1"\nfinetune epochs=1\n')
    fake.fail_on = "finetune"
    with pytest.raises(RunError, match="no trial of the search finished"):
        search(settings(trials=2), echo=lambda _: None, track="mlflow")
    [parent], children = _runs()
    assert parent.info.status == "FAILED" and "no trial of the search finished" in parent.data.tags["error"]
    assert len(children) == 2 and {c.info.status for c in children} == {"FAILED"}
    assert all("failed on purpose" in c.data.tags["error"] for c in children)


def test_the_cli_tracks_a_search_and_refuses_an_unknown_tracker_before_any_work(fake, store):  # noqa: F811
    Path("space.lw").write_text(SPACE)
    args = ["search", "space.lw", "--trials", "2", "--model", "linear2", "--data", DATA, "--backend", "fake"]
    bad = CliRunner().invoke(app, [*args, "--out", "o1", "--track", "wandb"])
    assert bad.exit_code == 2 and "--track wandb: not a tracker lwdsl knows" in bad.stderr
    assert not Path("o1").exists() and not fake.calls and _runs() == ([], [])
    ok = CliRunner().invoke(app, [*args, "--out", "o2", "--track", "mlflow", "--max-drop", "50"])
    assert ok.exit_code == 0, ok.output
    [parent], children = _runs()
    assert parent.info.status == "FINISHED" and len(children) == 2



def test_ctrl_c_leaves_the_parent_killed_with_the_trials_that_finished(fake, store, monkeypatch):  # noqa: F811
    real, calls = pipeline.run, []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) == 3:  # the baseline, one trial, then Ctrl-C in the second
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(pipeline, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        search(settings(trials=3), echo=lambda _: None, track="mlflow")
    [parent], children = _runs()
    assert parent.info.status == "KILLED"
    assert sorted((c.data.tags["lwdsl.trial"], c.info.status) for c in children) == [("0", "FINISHED"), ("1", "KILLED")]
