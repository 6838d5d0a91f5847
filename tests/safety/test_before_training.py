"""Everything that can be known before training is refused before training, and ``explain
--model`` gives the same verdict: a model that does not take the data (a 3-channel stem on
1-channel images), a structured removal that would empty a dependency group, a removal the
graph rules out. No baseline is trained for a run that is refused (the runs below would train
one first, on today's main, and fail minutes later)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lwdsl.cli.app import app

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
pytestmark = needs_torch

FIT = "does not fit the data"


@pytest.fixture
def work(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80"})


def _refused(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    for word in words:
        assert word in result.output, result.output


def _trained_nothing(work: Path) -> None:
    assert not (work / "cache" / "baselines").exists(), "a baseline was trained before the refusal"  # (the parser's tables may be cached)
    assert not [p for p in work.iterdir() if p.name.startswith(("out", ".out"))]


def test_a_model_that_does_not_take_the_images_is_refused_before_training(work: Path) -> None:
    (work / "r.lw").write_text("prune l1 0.5\n")
    result = invoke("run", "r.lw", "--model", "torchvision:resnet18", "--data", "synthetic:1,32,32:10", "--out", "out")
    _refused(result, f"model torchvision:resnet18 {FIT} synthetic:1,32,32:10", "(1, 32, 32)", "to have 3 channels", "hint:")
    assert "lenet5" in result.output and "synthetic:3,32,32:10" in result.output  # what to do instead
    _trained_nothing(work)


def test_explain_model_says_the_same_when_the_data_is_known(work: Path) -> None:
    (work / "t.lw").write_text('target "torchvision:resnet18" on "synthetic:1,32,32:10"\nprune l1 0.5\n')
    _refused(invoke("explain", "t.lw", "--model", "torchvision:resnet18"), FIT, "to have 3 channels")
    (work / "r.lw").write_text("prune l1 0.5\n")
    _refused(invoke("explain", "r.lw", "--model", "torchvision:resnet18", "--data", "synthetic:1,32,32:10"), FIT)
    fits = invoke("explain", "r.lw", "--model", "torchvision:resnet18", "--data", "synthetic:3,32,32:10")
    assert fits.exit_code == 0 and "matches 21 layers" in fits.output
    assert invoke("explain", "r.lw", "--model", "torchvision:resnet18").exit_code == 0  # layers alone need no data


def test_explain_model_without_a_target_on_a_removal_is_an_error_not_a_crash(work: Path) -> None:
    (work / "r.lw").write_text("prune l2 30% structured=filters remove=true on conv\n")
    result = invoke("explain", "r.lw", "--model", "torchvision:resnet18")
    _refused(result, FIT, "assumed: the recipe has no `target ... on DATA` and no --data was given", "--data")
    ok = invoke("explain", "r.lw", "--model", "torchvision:resnet18", "--data", "synthetic:3,32,32:10")
    assert ok.exit_code == 0 and "removes channels of 12 dependency groups" in ok.output, ok.output


def test_a_removal_that_empties_a_group_is_refused_before_training_and_by_explain(work: Path) -> None:
    (work / "r.lw").write_text("prune l2 99% structured=filters remove=true on conv\n")
    why = "cannot remove filters of layer 'conv1': AMOUNT 99% removes all 20 of its filters"
    result = invoke("run", "r.lw", "--model", "lenet5", "--data", "synthetic:1,28,28:10", "--out", "out")
    _refused(result, "r.lw:1:1: error: step 1 `prune l2 99% structured=filters remove=true on conv`", why, "at most 95%")
    _trained_nothing(work)
    explained = invoke("explain", "r.lw", "--model", "lenet5")
    assert explained.exit_code == 0 and "refused: " + why.replace(" its filters", "") in " ".join(explained.output.split())


def test_a_second_removal_sees_the_groups_the_first_one_left(work: Path) -> None:
    (work / "r.lw").write_text("prune l2 50% structured=filters remove=true on conv\nprune l2 95% structured=filters remove=true on conv\n")
    explained = invoke("explain", "r.lw", "--model", "lenet5")
    assert "channels kept: conv1 20->10, conv2 50->25" in explained.output, explained.output
    assert "refused: cannot remove filters of layer 'conv1': AMOUNT 95% removes all 10 of its filters" in " ".join(explained.output.split())
    result = invoke("run", "r.lw", "--model", "lenet5", "--data", "synthetic:1,28,28:10", "--out", "out")
    _refused(result, "step 2 `prune l2 95%", "removes all 10 of its filters")
    _trained_nothing(work)


def test_a_removal_the_graph_rules_out_is_refused_before_training(work: Path) -> None:
    (work / "r.lw").write_text('prune l2 50% structured=filters remove=true on "layer*.conv2"\n')
    result = invoke("run", "r.lw", "--model", "resnet8", "--data", "synthetic:1,28,28:10", "--out", "out")
    _refused(result, "cannot remove filters of layer 'layer1.conv2'", "residual addition")
    _trained_nothing(work)


def test_explain_checks_a_language_model_against_its_token_data(work: Path) -> None:
    """`explain --model` checks the fit with the data's task: a causal LM on `pydoc` (token
    sequences to predict) is listed, not refused as a sequence classifier would be."""
    (work / "r.lw").write_text("quantize int8\n")
    fits = invoke("explain", "r.lw", "--model", "tiny-gpt2", "--data", "pydoc")
    assert fits.exit_code == 0, fits.output
    assert "lm_head" in fits.output and FIT not in fits.output
