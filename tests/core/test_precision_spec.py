"""``precision=`` in the language: on every step that trains, refused where nothing trains, a
misspelt value gets a suggestion and exit code 2 on the command line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lwdsl import parse
from lwdsl.cli.app import app
from lwdsl.errors import RecipeError


@pytest.mark.parametrize("text, want", [
    ("finetune precision=bf16", "bf16"),
    ("regularize l1=1e-4 precision=fp16", "fp16"),
    ("distill T=2 alpha=0.5 precision=bf16", "bf16"),
    ("prune l1 0.5 schedule=gradual epochs=2 precision=bf16", "bf16"),
    ("quantize int8 mode=qat precision=bf16", "bf16"),
    ("quantize int4 mode=qat", "fp32"),
    ("finetune epochs=1", "fp32"),
])
def test_every_training_step_has_a_precision(text, want):
    assert parse(text).steps[0].training_options().precision == want


@pytest.mark.parametrize("text, message", [
    ("quantize int8 precision=bf16", "precision= applies only to a quantize that trains"),
    ("quantize int4 precision=bf16", "precision= applies only to a quantize that trains"),
    ("prune l1 0.5 precision=bf16", "precision only apply with schedule=gradual"),
    ("finetune precision=half", "`precision` must be fp32, bf16, or fp16"),
])
def test_precision_where_nothing_trains_or_a_bad_value_is_refused(text, message):
    with pytest.raises(RecipeError, match=message):
        parse(text)


def test_a_misspelt_precision_gets_a_suggestion_and_exit_2(tmp_path):
    (tmp_path / "r.lw").write_text("finetune epochs=1 precision=bf61\n")
    result = CliRunner().invoke(app, ["check", str(tmp_path / "r.lw")])
    assert result.exit_code == 2
    assert "`precision` must be fp32, bf16, or fp16" in result.output and "did you mean `bf16`?" in result.output
    assert "Traceback" not in result.output
