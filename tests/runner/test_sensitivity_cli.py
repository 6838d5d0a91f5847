"""``lwdsl sensitivity``: its arguments (every mistake exits 2 with one located line, no
traceback) and a tiny run on every backend (lenet300 on synthetic data, a few probes)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lwdsl.cli.app import app
from lwdsl.cli.sensitivity_cmd import parse_amounts, parse_forms
from lwdsl.errors import UsageError

runner = CliRunner()
DATA = ["--data", "synthetic:1,28,28:10"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["lenet300", *DATA, "--amounts", "10,5"], "must ascend"),
        (["lenet300", *DATA, "--amounts", "10,abc"], "`abc` is not a number"),
        (["lenet300", *DATA, "--amounts", "100"], "outside (0%, 100%)"),
        (["lenet300", *DATA, "--bits", "int3"], "did you mean `int8`"),
        (["lenet300", *DATA, "--split", "tset"], "did you mean `test`"),
        (["lenet300", *DATA, "--on", "lineer"], "did you mean `linear`"),
        (["lenet300", *DATA, "--bits", "none", "--amounts", ""], "not a number"),
        (["lenet300"], "no data set"),
        (["lenet300", "--data", "mnst"], "did you mean 'mnist'"),
        (["lenet300", *DATA, "--backend", "torhc"], "did you mean 'torch'"),
        (["lenet300", *DATA, "--set", "a=1"], "--set applies to a recipe"),
    ],
)
def test_bad_arguments_exit_2_with_one_message(args, words, tmp_path):
    result = runner.invoke(app, ["sensitivity", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output


def test_a_recipe_without_target_is_refused(tmp_path):
    recipe = tmp_path / "r.lw"
    recipe.write_text("prune auto 50%\n")
    result = runner.invoke(app, ["sensitivity", str(recipe)])
    assert result.exit_code == 2 and "no `target MODEL on DATA` line" in result.output


def test_a_bad_recipe_is_located(tmp_path):
    recipe = tmp_path / "r.lw"
    recipe.write_text("target lenet300 on mnist\nprune auto 99%\n")
    result = runner.invoke(app, ["sensitivity", str(recipe)])
    assert result.exit_code == 2 and "r.lw:2:12: error" in result.output


def test_parse_amounts_and_forms():
    assert parse_amounts("10, 20%, 0.5") == (0.1, 0.2, 0.5)
    assert parse_forms("int8,int2") == ("int8", "int2") and parse_forms("none") == ()
    with pytest.raises(UsageError, match="twice"):
        parse_forms("int8,int8")


def test_a_tiny_run_writes_table_json_and_plot(backend_name, tmp_path, monkeypatch):
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sens"
    result = runner.invoke(app, ["sensitivity", "lenet300", *DATA, "--backend", backend_name, "--baseline-epochs", "1",
                                 "--samples", "64", "--amounts", "50,90", "--bits", "int4,int2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "sensitivity.json").read_text())
    assert data["backend"] == backend_name and data["samples"] == 64 and data["split"] == "test"
    assert [r["layer"] for r in data["layers"]] == ["fc1", "fc2", "fc3"]
    assert [p["amount"] for p in data["layers"][0]["prune"]] == [0.5, 0.9]
    assert [b["form"] for b in data["layers"][0]["bits"]] == ["int4", "int2"]
    table = (out / "sensitivity.md").read_text()
    assert "accuracy (%) with the layer pruned" in table and max(len(line) for line in table.splitlines()) <= 80
    assert (out / "sensitivity.png").stat().st_size > 0 or "no plot" in result.output
