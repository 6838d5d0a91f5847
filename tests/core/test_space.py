"""Search spaces: `let NAME = choice(...)` / `range(...)` compile, round-trip, are refused when
they cannot be searched (located, exit 2), and are refused by `lwdsl run` until pinned."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import lwdsl
from lwdsl.cli.app import app
from lwdsl.errors import RecipeError, UsageError
from lwdsl.language.space import Choice, Range, pin_source
from lwdsl.runner.pipeline import refuse_space

SPACE = """\
# a space
let s = choice(70%, 80%, 90%)
let lr = range(0.001, 0.1, log)
let bits = choice(int8, int4)
let epochs = range(1, 4)

prune global l1 $s
finetune epochs=$epochs lr=$lr
quantize $bits weights_only
"""


def test_a_space_compiles_with_the_first_value_of_each_variable() -> None:
    r = lwdsl.parse(SPACE)
    assert r.space == {
        "s": Choice(values=("70%", "80%", "90%")),
        "lr": Range(low=0.001, high=0.1, log=True),
        "bits": Choice(values=("int8", "int4")),
        "epochs": Range(low=1, high=4, integer=True),
    }
    assert (r.steps[0].amount, r.steps[1].epochs, r.steps[1].lr, r.steps[2].dtype) == (0.7, 1, 0.001, "int8")


def test_a_space_round_trips_through_text_and_json() -> None:
    r = lwdsl.parse(SPACE)
    text = r.to_text()
    assert "let s = choice(70%, 80%, 90%)" in text and "prune global l1 $s" in text and "finetune epochs=$epochs lr=$lr" in text
    assert lwdsl.parse(text) == r
    assert lwdsl.Recipe.from_json(r.to_json()) == r


def test_set_pins_a_search_variable() -> None:
    r = lwdsl.parse(SPACE, overrides={"s": "85%", "bits": "int4"})
    assert set(r.space) == {"lr", "epochs"} and r.steps[0].amount == 0.85 and r.steps[2].dtype == "int4"
    pinned = lwdsl.parse(SPACE, overrides={"s": "80%", "lr": "0.01", "bits": "int8", "epochs": "2"})
    assert pinned.space == {}
    refuse_space(pinned)  # nothing open: runs


def test_run_refuses_a_space_naming_its_open_variables() -> None:
    with pytest.raises(UsageError) as caught:
        refuse_space(lwdsl.parse(SPACE, overrides={"lr": "0.01", "epochs": "2"}))
    assert "s = choice(70%, 80%, 90%), bits = choice(int8, int4) have no value yet" in caught.value.message
    assert "lwdsl search" in caught.value.hint and "--set s=70% --set bits=int8" in caught.value.hint


@pytest.mark.parametrize(
    "text, message, where",
    [
        ("let s = choice(70%)\nprune l1 $s", "a choice of one value is no choice", "1:9"),
        ("let s = choice(70%, 0.7)\nprune l1 $s", "`0.7` is in the choice twice", "1:21"),
        ("let s = range(0.9, 0.5)\nprune l1 $s", "a range from 0.9 to 0.5 is empty", "1:9"),
        ("let s = range(0.5, 0.5)\nprune l1 $s", "a range from 0.5 to 0.5 is empty", "1:9"),
        ("let lr = range(0, 0.1, log)\nfinetune epochs=1 lr=$lr", "a log range starts above 0", "1:16"),
        ("let lr = range(0.1, 1, lin)\nfinetune epochs=1 lr=$lr", "the third argument of a range is `log`", "1:24"),
        ("let s = range(a, 0.5)\nprune l1 $s", "the ends of a range are numbers", "1:15"),
        ("let s = chioce(1, 2)\nprune l1 $s", "unknown function `chioce`", "1:9"),
        ("let s = choice(70%, 80%)\nprune l1 0.2", "search variable `s` is never used", "1:1"),
        ("let s = choice(70%, 150%)\nprune l1 $s", "AMOUNT is a fraction in [0, 1)", "2:10"),
        ("let s = range(50%, 100%)\nprune l1 $s", "AMOUNT is a fraction in [0, 1)", "2:10"),
        ("let b = choice(int8, int5)\nquantize $b", "is not a valid argument of `quantize`", "2:10"),
        ("prune l1 choice(0.2, 0.3)", "are written as the value of a `let`", "1:16"),
    ],
)
def test_a_space_that_cannot_be_searched_is_refused_where_it_is(text: str, message: str, where: str) -> None:
    with pytest.raises(RecipeError) as caught:
        lwdsl.parse(text, file="space.lw")
    rendered = caught.value.render()
    assert message in rendered and rendered.startswith(f"space.lw:{where}: error: ")


def test_a_bad_value_says_which_choice_it_comes_from() -> None:
    with pytest.raises(RecipeError) as caught:
        lwdsl.parse("let s = choice(70%, 150%)\nprune l1 $s", file="space.lw")
    assert caught.value.hint == "$s comes from value 2 of choice(70%, 150%) (let s at space.lw:1:1)"


def test_even_a_pinned_search_variable_must_be_a_searchable_space() -> None:
    with pytest.raises(RecipeError, match="a choice of one value"):
        lwdsl.parse("let s = choice(70%)\nprune l1 $s", overrides={"s": "0.5"})


def test_a_search_variable_used_through_another_let_is_used() -> None:
    r = lwdsl.parse("let s = choice(70%, 80%)\nlet t = $s\nprune l1 $t")
    assert set(r.space) == {"s"} and r.steps[0].amount == 0.7


def test_range_values_are_rounded_and_written_as_the_ends_are() -> None:
    assert Range(low=0.001, high=0.1, log=True).value_text(0.0123456) == "0.0123"
    assert Range(low=0.5, high=0.95, percent=True).value_text(0.823456) == "82.35%"
    assert Range(low=0.5, high=0.95).value_text(0.823456) == "0.8235"
    assert Range(low=1, high=4, integer=True).value_text(2.6) == "3"
    assert Range(low=0.5, high=0.9).value_text(0.90004) == "0.9"


def test_pin_source_writes_values_into_the_text_keeping_the_rest() -> None:
    text = pin_source(SPACE, "x.lw", {"s": "80%", "lr": "0.0123"}, {"s": "from choice(70%, 80%, 90%)"})
    assert "let s = 80%  # from choice(70%, 80%, 90%)\n" in text and "let lr = 0.0123\n" in text
    assert text.startswith("# a space\n") and "let bits = choice(int8, int4)" in text
    r = lwdsl.parse(text)
    assert set(r.space) == {"bits", "epochs"} and r.steps[0].amount == 0.8 and r.steps[1].lr == 0.0123


def test_check_prints_the_space_and_refuses_a_bad_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("space.lw").write_text(SPACE)
    Path("bad.lw").write_text("let s = choice(80%)\nprune l1 $s\n")
    runner = CliRunner()
    good = runner.invoke(app, ["check", "space.lw"])
    assert good.exit_code == 0, good.output
    assert good.output.splitlines()[0] == (
        "ok: space.lw (3 steps; a search space: s = choice(70%, 80%, 90%), lr = range(0.001, 0.1, log), "
        "bits = choice(int8, int4), epochs = range(1, 4))"
    )
    bad = runner.invoke(app, ["check", "bad.lw"])
    assert bad.exit_code == 2 and bad.stderr.startswith("bad.lw:1:9: error: let s: a choice of one value is no choice")
    explained = runner.invoke(app, ["explain", "space.lw"])
    assert explained.exit_code == 0 and "variable s = choice(70%, 80%, 90%) (searched" in explained.output
    assert "1. prune global l1 $s" in explained.output
