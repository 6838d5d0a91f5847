"""Properties over random plans and random text: round trips, fmt, and errors that are only ever
RecipeErrors."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lwdsl
from lwdsl.errors import RecipeError
from lwdsl.language.formatter import format_source
from lwdsl.language.parser import comments
from lwdsl.language.plan import Recipe

from .strategies import recipes

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
SEEDS = [p.read_text() for p in sorted((ROOT / "recipes").glob("*.lw")) if "use " not in p.read_text()]
SEEDS += [
    'lwdsl 1\nrecipe "x"\ntarget "m" on d\nlet a = [1, 2:4, x->y]\n\nprune l1 $a on conv except "f*" expect>=2\n',
    "distill T=2 alpha=0.5 teacher=[a.pt, b.pt] features=[c1->c1] | quantize int8 weights_only | export onnx",
]


@SETTINGS
@given(recipes())
def test_text_round_trip(recipe: Recipe) -> None:
    assert lwdsl.parse(recipe.to_text()) == recipe


@SETTINGS
@given(recipes())
def test_json_round_trip(recipe: Recipe) -> None:
    assert Recipe.from_json(recipe.to_json()) == recipe


@st.composite
def messy_text(draw) -> str:
    """A valid recipe written untidily: steps joined by `|`, comments, blank lines, indents."""
    lines = [line for line in draw(recipes()).to_text().split("\n") if line]
    text = ""
    for i, line in enumerate(lines):
        text += draw(st.sampled_from(["", "  ", "\t"])) + line
        if i == len(lines) - 1:
            break
        sep = draw(st.sampled_from(["\n", " | ", "|", " |\n  ", "\n| ", "\n\n"]))
        if sep.startswith(("\n", " |\n")) and draw(st.integers(0, 3)) == 0:
            sep = sep.replace("\n", "   # note | x\n", 1)
        if sep.endswith("\n") and draw(st.integers(0, 3)) == 0:
            sep += "# own line\n"
        text += sep
    return text + draw(st.sampled_from(["", "\n", "\n\n# end\n"]))


@SETTINGS
@given(messy_text())
def test_fmt_is_idempotent_and_keeps_the_plan_and_the_comments(text: str) -> None:
    once = format_source(text)
    assert format_source(once) == once
    assert lwdsl.parse(once) == lwdsl.parse(text)
    assert [c.value for c in comments(once)] == [c.value.rstrip() for c in comments(text)]


_NOISE = st.sampled_from(list('|=,[]"\'$%:#->\n 0123456789.e+-abcxyz_') + ["on ", "except ", "let ", "use ", "lwdsl "])


@st.composite
def mutated_text(draw) -> str:
    text = draw(st.sampled_from(SEEDS) | recipes().map(Recipe.to_text))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        noise = draw(_NOISE)
        if kind == "insert":
            text = text[:at] + noise + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 5)) :]
        else:
            text = text[:at] + noise + text[at + 1 :]
    return text


@SETTINGS
@given(mutated_text() | st.text(max_size=60))
def test_any_text_gives_a_recipe_or_a_recipe_error(text: str) -> None:
    for attempt in (lwdsl.parse, format_source):
        try:
            attempt(text)
        except RecipeError as exc:
            assert exc.render()
