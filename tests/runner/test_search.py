"""`lwdsl search`: the flow and its promises, on the numpy backend (no framework): values from
the space, best.lw that `run` reproduces, the same trials for the same seed, resume after an
interruption, the infeasible case's exit code and words, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lwdsl
from lwdsl.backend import registry as backend_mod
from lwdsl.cli.app import app
from lwdsl.errors import UsageError
from lwdsl.runner import pipeline
from lwdsl.runner.search import search
from lwdsl.runner.search_settings import NO_FEASIBLE_EXIT, SearchSettings

from .fake_backend import FakeBackend

pytest.importorskip("optuna")

DATA = "synthetic:1,6,6:3"
SPACE = """\
# two search variables
let s = choice(20%, 50%, 80%, 95%)
let t = range(10%, 60%)

prune l1 $s on "fc1"
prune l1 $t on "fc2"
"""


class GradedBackend(FakeBackend):
    """The numpy backend whose test accuracy falls by half a point per percent of fc1 pruned:
    a baseline of 100%, and a known drop for every amount."""

    def evaluate(self, model, ctx):
        w = model.state["fc1.weight"]
        return 1.0 - 0.5 * float((w == 0).mean()), 0.1


@pytest.fixture
def fake(monkeypatch, tmp_path):
    be = GradedBackend()
    monkeypatch.setitem(backend_mod._instances, "fake", be)
    monkeypatch.setitem(backend_mod.BACKENDS, "fake", ("tests.runner.fake_backend", "FakeBackend", "fake"))
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    Path("space.lw").write_text(SPACE)
    return be


def settings(out: str = "out", **kw) -> SearchSettings:
    kw.setdefault("trials", 4)
    return SearchSettings(recipe=Path("space.lw"), out=Path(out), model="linear2", data=DATA, backend="fake", **kw)


def values(out: str) -> list[dict[str, str]]:
    return [t["values"] for t in json.loads(Path(out, "trials.json").read_text())["trials"] if t["state"] == "complete"]


def test_a_search_writes_the_best_recipe_which_a_run_reproduces(fake):
    result = search(settings(max_drop=30.0, trials=5), echo=lambda _: None)
    assert result.exit_code == 0 and len([t for t in result.trials if t.finished]) == 5
    space = lwdsl.load("space.lw").space
    for t in result.trials:  # every value comes from the space
        assert t.values["s"] in space["s"].values
        assert 0.10 <= lwdsl.parse(f"let x = {t.values['t']}\nprune l1 $x").steps[0].amount <= 0.60
    best = result.best
    assert best.feasible and best.figures["drop_points"] <= 30.0
    feasible = [t for t in result.trials if t.feasible]
    assert best.figures["size_gzip_bytes"] == min(t.figures["size_gzip_bytes"] for t in feasible)

    text = Path("out/best.lw").read_text()
    assert f"let s = {best.values['s']}  # from choice(20%, 50%, 80%, 95%)" in text
    assert f"let t = {best.values['t']}  # from range(10%, 60%)" in text
    assert f"trial #{best.number}" in text and "--max-drop 30: at most 30 points" in text and "absolute, against the baseline" in text
    assert "prune l1 $s on \"fc1\"" in text  # the author's text, values written into the lets
    plan = lwdsl.load("out/best.lw")
    assert plan.space == {} and plan.steps[0].amount == pytest.approx(float(best.values["s"].rstrip("%")) / 100)

    again = pipeline.run(plan, "linear2", backend="fake", data=DATA, quiet=True, out=Path("again"))
    final = again.report["steps"][-1]["metrics"]
    assert final["size_gzip_bytes"] == best.figures["size_gzip_bytes"]
    assert final["accuracy"] == best.figures["accuracy_after"]
    trial_dir = Path(best.run_dir)
    assert trial_dir.parent == Path("out/trials").resolve() and (trial_dir / "report.json").is_file()
    assert "choice" not in (trial_dir / "recipe.lw").read_text()  # each run folder holds the recipe it ran

    table = Path("out/trials.md").read_text()
    assert "| # | s | t | accuracy |" in table and f"| {best.number} **best** |" in table
    data = json.loads(Path("out/trials.json").read_text())
    assert data["best"] == best.number and data["max_drop_points"] == 30.0 and len(data["trials"]) == 5


def test_best_lw_says_the_training_threads_its_trials_ran_with(fake):
    """--workers N runs each trial on a share of the CPUs, and a float sum split over other
    threads rounds otherwise (a torch LeNet-5 trial: 98.88% on 1 thread, 98.83% on 2): best.lw's
    command for the same figures again names the trials' thread count, and only when it was set."""
    search(settings("one", train_threads=1), echo=lambda _: None)
    line = next(x for x in Path("one/best.lw").read_text().splitlines() if x.startswith("# the same figures again:"))
    assert line.endswith("--train-threads 1"), line
    search(settings("default"), echo=lambda _: None)
    line = next(x for x in Path("default/best.lw").read_text().splitlines() if x.startswith("# the same figures again:"))
    assert "--train-threads" not in line, line


def test_the_same_seed_gives_the_same_trials_and_the_same_best_recipe(fake):
    search(settings("a", seed=3), echo=lambda _: None)
    search(settings("b", seed=3), echo=lambda _: None)
    search(settings("c", seed=4), echo=lambda _: None)
    assert values("a") == values("b") != values("c")
    assert Path("a/best.lw").read_text() == Path("b/best.lw").read_text()


def test_the_same_command_resumes_and_adds_trials(fake):
    search(settings("once", trials=4), echo=lambda _: None)
    search(settings("twice", trials=2), echo=lambda _: None)
    assert len(values("twice")) == 2
    first = values("twice")
    result = search(settings("twice", trials=4), echo=lambda _: None)
    assert len([t for t in result.trials if t.finished]) == 4
    assert values("twice")[:2] == first and values("twice") == values("once")
    search(settings("twice", trials=4), echo=lambda _: None)  # nothing left to do
    assert len(values("twice")) == 4


def test_ctrl_c_loses_only_the_running_trial(fake, monkeypatch):
    real_run, calls = pipeline.run, []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) == 4:  # the baseline, two trials, then Ctrl-C in the third
            raise KeyboardInterrupt
        return real_run(*args, **kw)

    monkeypatch.setattr(pipeline, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        search(settings("out", trials=4), echo=lambda _: None)
    data = json.loads(Path("out/trials.json").read_text())
    assert [t["state"] for t in data["trials"]] == ["complete", "complete", "interrupted"]
    assert Path("out/best.lw").is_file()  # the best of what finished
    monkeypatch.setattr(pipeline, "run", real_run)
    search(settings("out", trials=4), echo=lambda _: None)
    search(settings("whole", trials=4), echo=lambda _: None)
    assert values("out") == values("whole")  # the interrupted trial ran again, with the same values


def test_no_trial_meets_the_constraint_best_so_far_and_its_miss(fake):
    result = search(settings(max_drop=1.0, trials=3), echo=lambda _: None)
    assert result.exit_code == NO_FEASIBLE_EXIT and not result.best.feasible
    least = min(t.violation for t in result.trials if t.state == "complete")
    assert result.best.violation == least > 0
    text = Path("out/best.lw").read_text()
    assert "NO TRIAL MET THE CONSTRAINT" in text and f"MISSED by {least:.2f} points" in text
    assert "misses the constraint" in Path("out/trials.md").read_text()


def test_cli_exit_code_3_when_no_trial_meets_max_drop(fake):
    args = ["search", "space.lw", "--trials", "2", "--model", "linear2", "--data", DATA, "--backend", "fake", "--max-drop", "1", "--out", "cli"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == NO_FEASIBLE_EXIT, result.output
    assert "no trial met the constraint: --max-drop 1" in result.stderr and "MISSED by" in result.stderr
    assert "trial 1 of 2 (#0)" in result.stderr and "best so far" in result.stderr and "left" in result.stderr
    assert result.stdout.startswith("best: trial #") and Path("cli/best.lw").is_file()
    ok = CliRunner().invoke(app, args[:-4] + ["--max-drop", "50", "--out", "cli2"])
    assert ok.exit_code == 0, ok.output


def test_a_space_of_whole_values_stops_when_every_point_is_tried(fake):
    Path("space.lw").write_text('let s = choice(20%, 50%)\nprune l1 $s on "fc1"\n')
    result = search(settings(trials=10), echo=lambda _: None)
    assert result.stopped == "every point of the space is tried"
    assert sorted(t.values["s"] for t in result.trials if t.same_as is None) == ["20%", "50%"]


def test_set_pins_a_variable_of_the_search_and_best_lw_keeps_it(fake):
    result = search(settings(trials=3, sets={"t": "30%"}), echo=lambda _: None)
    assert all(set(t.values) == {"s"} for t in result.trials)
    assert "let t = 30%\n" in Path("out/best.lw").read_text()
    assert lwdsl.load("out/best.lw").steps[1].amount == pytest.approx(0.3)


def test_refusals_before_any_work(fake):
    Path("plain.lw").write_text("prune l1 50%\n")
    with pytest.raises(UsageError, match="nothing to search"):
        search(SearchSettings(recipe=Path("plain.lw"), out=Path("o"), trials=2, model="linear2", data=DATA, backend="fake"))
    with pytest.raises(UsageError, match="unknown"):
        search(settings(objectives=("sise",)))
    with pytest.raises(UsageError, match="second objective of a front"):
        search(settings(objectives=("accuracy",)))
    with pytest.raises(UsageError, match="--max-drop -1"):
        search(settings(max_drop=-1.0))
    Path("theirs").mkdir()
    Path("theirs/notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="did not write"):
        search(settings("theirs"))
    assert not fake.calls  # nothing was built or trained
    search(settings("mine", trials=1), echo=lambda _: None)
    with pytest.raises(UsageError, match="holds another search"):
        search(settings("mine", trials=1, seed=9), echo=lambda _: None)


def test_a_failing_trial_is_recorded_and_the_search_goes_on(fake):
    Path("space.lw").write_text('let s = choice(20%, 50%, 80%)\nprune l1 $s on "fc1"\nfinetune epochs=1\n')
    fake.fail_on = "finetune"
    with pytest.raises(lwdsl.RunError, match="no trial of the search finished"):
        search(settings(trials=2), echo=lambda _: None)
    data = json.loads(Path("out/trials.json").read_text())
    assert [t["state"] for t in data["trials"]] == ["failed", "failed"] and "failed on purpose" in data["trials"][0]["error"]


def test_two_objectives_give_a_pareto_front(fake):
    result = search(settings(objectives=("size", "accuracy"), trials=6), echo=lambda _: None)
    front = result.front
    assert front and result.best in front
    points = [(t.objectives[0], -t.objectives[1]) for t in front]
    for a in points:  # no front member beats another on both
        assert not any(b != a and b[0] <= a[0] and b[1] <= a[1] for b in points)
    assert "Pareto front" in Path("out/trials.md").read_text()


@pytest.mark.torch
def test_a_real_search_then_lwdsl_run_of_best_lw_gives_the_same_figures(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    Path("space.lw").write_text("let s = choice(50%, 80%)\nlet lr = range(0.001, 0.05, log)\n\nprune global l1 $s\nfinetune epochs=1 lr=$lr\n")
    common = ["--model", "lenet300", "--data", "synthetic:1,12,12:4", "--baseline-epochs", "1"]
    found = CliRunner().invoke(app, ["search", "space.lw", "--trials", "3", "--objective", "size", "--max-drop", "50", "--out", "s", *common])
    assert found.exit_code == 0, found.output
    best = json.loads(Path("s/trials.json").read_text())
    chosen = next(t for t in best["trials"] if t["number"] == best["best"])
    again = CliRunner().invoke(app, ["run", "s/best.lw", "--out", "again", "-q", *common])
    assert again.exit_code == 0, again.output
    final = json.loads(Path("again/report.json").read_text())["steps"][-1]["metrics"]
    assert final["size_gzip_bytes"] == chosen["figures"]["size_gzip_bytes"]
    assert final["accuracy"] == chosen["figures"]["accuracy_after"]


def test_best_lw_stands_alone_when_the_recipe_uses_another_file(fake):
    Path("vars.lw").write_text("let s = choice(20%, 80%)\n")
    Path("space.lw").write_text('# mine\nuse "vars.lw"\nlet t = range(10%, 60%)\nprune l1 $s on "fc1"\nprune l1 $t on "fc2"\n')
    result = search(settings(trials=2), echo=lambda _: None)
    text = Path("out/best.lw").read_text()
    assert "use " not in text and "the plan, written out in full" in text
    plan = lwdsl.load("out/best.lw")
    assert plan.space == {} and plan.steps[0].amount == pytest.approx(float(result.best.values["s"].rstrip("%")) / 100)


def test_a_search_needs_a_lw_recipe_a_model_and_data(fake):
    Path("space.json").write_text("{}")
    with pytest.raises(UsageError, match="reads .lw recipes"):
        search(SearchSettings(recipe=Path("space.json"), out=Path("o"), trials=1, model="linear2", data=DATA, backend="fake"))
    with pytest.raises(UsageError, match="no model to compress"):
        search(SearchSettings(recipe=Path("space.lw"), out=Path("o"), trials=1, data=DATA, backend="fake"))
    assert not Path("o").exists()


def test_storage_shares_one_study_between_folders_and_places(fake, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    search(settings("here", trials=2, storage=url), echo=lambda _: None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Path(elsewhere / "space.lw").write_text(SPACE)  # the same recipe in another folder, as on another machine
    result = search(SearchSettings(recipe=elsewhere / "space.lw", out=Path("there"), trials=3, model="linear2", data=DATA,
                                   backend="fake", storage=url), echo=lambda _: None)
    assert len([t for t in result.trials if t.finished]) == 3  # two from "here", one more
    assert not Path("here/search.db").exists() and Path("there/best.lw").is_file()


def test_time_stops_the_search_between_trials(fake):
    result = search(settings(trials=1000, seconds=1.0), echo=lambda _: None)
    assert result.stopped == "--time 1 s spent" and 1 <= len([t for t in result.trials if t.finished]) < 1000
    assert all(t.state != "interrupted" for t in result.trials)  # the running trial finished


def test_quiet_says_only_the_result_and_verbose_says_each_trials_details(fake):
    args = ["search", "space.lw", "--trials", "2", "--model", "linear2", "--data", DATA, "--backend", "fake", "--max-drop", "50"]
    quiet = CliRunner().invoke(app, [*args, "--out", "q", "--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == "" and len(quiet.stdout.splitlines()) == 1 and quiet.stdout.startswith("best: trial #")
    assert "recipe in " in quiet.stdout and "/q/best.lw" in quiet.stdout

    loud = CliRunner().invoke(app, [*args, "--out", "v", "--verbose"])
    assert loud.exit_code == 0, loud.output
    err = loud.stderr
    assert err.startswith("search: space s=choice(20%, 50%, 80%, 95%), t=range(10%, 60%); objective size (minimised); --max-drop 50")
    assert "model: linear2 (fake backend, cpu)" in err and "data: synthetic:1,6,6:3: " in err  # the baseline's run
    for n in (0, 1):
        assert f"#{n}: values s=" in err and f"run folder {Path('v').resolve()}/trials/00{n}" in err
        assert f"#{n}: step 1/2 `prune l1 " in err and "prune scope=layer method=l1 amount=" in err
        assert any(line.startswith(f"#{n}: time: ") and "in all: prepare" in line for line in err.splitlines())
    assert "trial 1 of 2 (#0)" in err and "trial 2 of 2 (#1)" in err  # the usual line per trial, too
    plain = CliRunner().invoke(app, [*args, "--out", "p"])
    assert "#0: " not in plain.stderr and "baseline: test accuracy" in plain.stderr and "trial 1 of 2 (#0)" in plain.stderr
    assert CliRunner().invoke(app, [*args, "--out", "x", "-q", "-v"]).exit_code == 2
