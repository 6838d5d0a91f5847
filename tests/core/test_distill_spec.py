"""``distill data=NAME`` (a transfer set) in the language: the form it adds, and the mistakes the
recipe alone shows, refused at ``lwdsl check`` (exit 2) with the step, the argument and a fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import lwdsl
from lwdsl.cli.app import app
from lwdsl.errors import RecipeError
from lwdsl.language.specs.distill import RELATION_MAX_BATCH


def test_transfer_set_is_a_form_and_names_its_data_set():
    step = lwdsl.parse('distill data=fashion_mnist alpha=1 T=4 student=seedcnn_student').steps[0]
    assert step.forms() == ("soft", "student", "transfer")
    assert step.data_sets() == ("fashion_mnist",)
    assert lwdsl.parse("distill T=2").steps[0].data_sets() == ()
    assert lwdsl.parse('distill data="synthetic:1,28,28:3" alpha=1').steps[0].data_sets() == ("synthetic:1,28,28:3",)


def test_unknown_transfer_set_says_did_you_mean():
    with pytest.raises(RecipeError) as exc:
        lwdsl.parse("distill data=fashon_mnist alpha=1")
    text = exc.value.render()
    assert exc.value.exit_code == 2
    assert "step 1 `distill data=fashon_mnist alpha=1`: data=fashon_mnist: unknown data set" in text
    assert "did you mean 'fashion_mnist'?" in text


def test_transfer_set_with_alpha_below_one_is_refused():
    with pytest.raises(RecipeError, match=r"data=fashion_mnist is a transfer set.*alpha must be 1, got alpha=0.5"):
        lwdsl.parse("distill data=fashion_mnist")
    with pytest.raises(RecipeError, match="alpha must be 1, got alpha=0.9"):
        lwdsl.parse("distill data=mnist alpha=0.9")


def test_check_exits_2_on_a_bad_transfer_set(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("bad.lw").write_text("distill data=fashion_mnst alpha=1\n")
    Path("good.lw").write_text("distill data=fashion_mnist alpha=1 student=seedcnn_student\n")
    result = CliRunner().invoke(app, ["check", "bad.lw"])
    assert result.exit_code == 2 and "did you mean 'fashion_mnist'?" in result.stderr and "Traceback" not in result.output
    for backend in ("torch", "tensorflow"):
        assert CliRunner().invoke(app, ["check", "good.lw", "--backend", backend]).exit_code == 0


# --- issue 27: options whose memory grows faster than linearly are bounded -----------------------


@pytest.mark.parametrize("relation", sorted(RELATION_MAX_BATCH))
def test_relation_losses_bound_the_batch(relation: str) -> None:
    limit = RELATION_MAX_BATCH[relation]
    assert lwdsl.parse(f"distill relation={relation} batch={limit}").steps[0].batch == limit
    with pytest.raises(RecipeError) as err:
        lwdsl.parse(f"distill relation={relation} batch={limit + 1}", file="t.lw")
    shown = err.value.render()
    assert f"at most batch={limit}" in shown and "t.lw:1:" in shown and f"from 1 to {limit}" in shown
    assert lwdsl.parse("distill batch=2048").steps[0].batch == 2048  # no relation: linear in the batch
