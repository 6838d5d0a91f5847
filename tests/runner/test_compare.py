"""``lwdsl compare``: three run folders side by side, their recipe differences, and the plot."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import lwdsl
from lwdsl.cli.app import app

DATA = "synthetic:1,12,12:4"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    folders = []
    for name, recipe in (("p50", "prune l1 0.5"), ("p80", "prune l1 0.8 | finetune epochs=1"), ("q8", "prune l1 0.5 | quantize int8")):
        lwdsl.run(recipe, "lenet300", data=DATA, quiet=True, latency=False, baseline_epochs=1, out=root / name)
        folders.append(root / name)
    return folders


def test_three_runs_side_by_side_with_their_recipe_differences_and_a_plot(runs, tmp_path):
    result = CliRunner().invoke(app, ["compare", *map(str, runs), "--plot", str(tmp_path / "c.png"), "--json", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["run", "backend", "model"]
    for name in ("p50", "p80", "q8"):
        assert any(line.startswith(name) for line in lines)
    assert "recipe of p80 against p50:" in result.output and "recipe of q8 against p50:" in result.output
    assert "finetune" in result.output.split("recipe of p80 against p50:")[1].split("recipe of q8")[0]
    assert "warning" not in result.output  # same model, same data
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((tmp_path / "c.json").read_text())
    report = json.loads((runs[1] / "report.json").read_text())
    assert rows[1]["accuracy_after"] == report["summary"]["accuracy_after"]
    assert rows[1]["size_gzip_bytes"] == report["steps"][-1]["metrics"]["size_gzip_bytes"]


def test_runs_of_different_models_are_said_not_to_compare(runs, tmp_path):
    other = tmp_path / "mlp800"
    lwdsl.run("prune l1 0.5", "mlp800", data=DATA, quiet=True, latency=False, baseline_epochs=1, out=other)
    result = CliRunner().invoke(app, ["compare", str(runs[0]), str(other), "--plot", str(tmp_path / "c.png")])
    assert result.exit_code == 0
    assert "warning: the runs do not share a model (lenet300, mlp800)" in result.output


@pytest.mark.parametrize("args, words", [
    (["ONE"], "compare needs at least two run folders"),
    (["ONE", "MISSING"], "is not a folder"),
    (["ONE", "EMPTY"], "is not a run folder: it has no report.json"),
])
def test_what_is_not_two_run_folders_is_refused(runs, tmp_path, args, words):
    (tmp_path / "EMPTY").mkdir()
    names = {"ONE": str(runs[0]), "MISSING": str(tmp_path / "nope"), "EMPTY": str(tmp_path / "EMPTY")}
    result = CliRunner().invoke(app, ["compare", *[names[a] for a in args], "--plot", str(tmp_path / "c.png")])
    assert result.exit_code == 2 and words in result.output
    assert not (tmp_path / "c.png").exists()
