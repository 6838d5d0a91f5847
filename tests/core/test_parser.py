"""Text -> syntax tree, and syntax errors in human words."""

from __future__ import annotations

import re

import pytest

import lwdsl
from lwdsl.language import syntax as s
from lwdsl.errors import RecipeError
from lwdsl.limits import MAX_RECIPE_TOKENS
from lwdsl.language.parser import comments, parse_document, parse_value


def steps(text: str) -> list[s.Step]:
    return [st for st in parse_document(text).statements if isinstance(st, s.Step)]


@pytest.mark.parametrize(
    "text, value",
    [
        ("5", 5),
        ("-1", -1),
        ("0.5", 0.5),
        (".5", 0.5),
        ("1e-4", 1e-4),
        ("2.5E+3", 2500.0),
        ("20%", 0.2),
        ("7.5%", 0.075),
        ("true", True),
        ("false", False),
        ("l1", "l1"),
        ("a.pt", "a.pt"),
        ("torchvision:resnet18", "torchvision:resnet18"),
        ("models/x-1.pt", "models/x-1.pt"),
        ('"a \\"b\\" \\\\ \\n"', 'a "b" \\ \n'),
    ],
)
def test_scalars(text: str, value) -> None:
    node = parse_value(text, "<test>")
    assert isinstance(node, s.Scalar)
    assert node.value == value and type(node.value) is type(value)
    assert node.raw == text


def test_compound_values() -> None:
    ratio = parse_value("2:4", "<t>")
    assert isinstance(ratio, s.Ratio) and (ratio.n, ratio.m) == (2, 4)
    assert parse_value("$amount", "<t>") == s.Var("amount", parse_value("$amount", "<t>").span)
    pair = parse_value('conv1->"fc 1"', "<t>")
    assert isinstance(pair, s.Pair) and (pair.teacher.value, pair.student.value) == ("conv1", "fc 1")
    lst = parse_value("[a, 1, [2:4], x->y]", "<t>")
    assert isinstance(lst, s.ListValue) and len(lst.items) == 4
    assert parse_value("[]", "<t>").items == ()


@pytest.mark.parametrize(
    "text",
    [
        "prune l1 0.2 | quantize int8 | finetune",
        "prune l1 0.2\nquantize int8\nfinetune",
        "prune l1 0.2\n| quantize int8\n| finetune",
        "prune l1 0.2 |\n  quantize int8 |\n\n  finetune\n",
        "\n\n# c\nprune l1 0.2 # c | x\n\n\nquantize int8|finetune # end",
    ],
)
def test_separators_and_comments(text: str) -> None:
    assert [st.op for st in steps(text)] == ["prune", "quantize", "finetune"]


def test_arguments_keep_their_order_and_kind() -> None:
    (step,) = steps('prune global 20% amount = 0.2 on conv, "fc*" except linear expect>=2 weights_only')
    kinds = [type(a).__name__ for a in step.args]
    assert kinds == ["Scalar", "Scalar", "Option", "Clause", "Clause", "Option", "Scalar"]
    on, excl = step.args[3], step.args[4]
    assert on.keyword == "on" and [p.quoted for p in on.patterns] == [False, True]
    assert excl.keyword == "except"
    assert step.args[5].at_least and step.args[5].key == "expect"


def test_header_statements() -> None:
    doc = parse_document('lwdsl 1\nrecipe "x"\ntarget "a:b" on mnist\ntarget m\nlet a = 1\nuse "b.lw"\n')
    version, name, target, bare_target, let, use = doc.statements
    assert version.number == 1 and name.value.value == "x"
    assert (target.model.value, target.data.value) == ("a:b", "mnist") and bare_target.data is None
    assert (let.name, let.value.value) == ("a", 1) and use.path.value == "b.lw"


def test_keywords_are_words_where_no_keyword_fits() -> None:
    (let,) = parse_document("let on = 1").statements
    assert let.name == "on"


def test_spans_locate_nodes() -> None:
    doc = parse_document("# c\nprune  l1 0.2\n  | quantize int8")
    prune, quantize = doc.statements
    assert (prune.span.line, prune.span.col, prune.args[1].span.col) == (2, 1, 11)
    assert (quantize.span.line, quantize.span.col) == (3, 5)
    assert doc.snippet(prune.span) == "prune l1 0.2"
    loc = doc.location(prune.args[1].span)
    assert (str(loc), loc.source_line, loc.width) == ("<string>:2:11", "prune  l1 0.2", 3)


def test_comments_are_listed_with_positions() -> None:
    found = list(comments('# a\nprune l1 0.2 on "x#y"  # b\n'))
    assert [(c.value, c.line) for c in found] == [("# a", 1), ("# b", 2)]


@pytest.mark.parametrize(
    "text, label, where",
    [
        ("prune amount=", "missing value after `=`", "1:14"),
        ("prune l1\nquantize int8 calibrate=\n", "missing value after `=`", "2:25"),
        ("let x =", "missing value after `=`", "1:8"),
        ('prune l1 0.2 on "conv*', "unclosed string", "1:17"),
        ("export onnx 'm.onnx'", "double quotes", "1:13"),
        ("distill teacher=[a, b", "unclosed list", "1:22"),
        ("distill T=2 alpha=0.5 teacher=[a, [b]", "unclosed list", "1:38"),
        ("distill teacher=[a,]", "a `,` with nothing after it", "1:20"),
        ("prune on conv,", "a `,` with nothing after it", "1:15"),
        ("prune l1, 0.2", "stray `,`", "1:9"),
        ("finetune\nprune l1 0.2, quantize int8", "stray `,`", "2:13"),
        ("prune l1 0.2 |", "`|` with no step after it", "1:15"),
        ("prune l1 0.2 | | quantize int8", "`|` with no step after it", "1:16"),
        ("prune l1 0.2 on", "need a layer kind or a quoted glob", "1:16"),
        ("use base.lw", "`use` takes a quoted path", "1:5"),
        ("let x 5", "`let` is written `let NAME = VALUE`", "1:7"),
        ("prune =3", "`=` needs an option name before it", "1:7"),
        ("prune l1 0.2 @", "unexpected `@`", "1:14"),
    ],
)
def test_syntax_errors(text: str, label: str, where: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_document(text, "t.lw")
    err = info.value
    assert label in err.message
    assert str(err.location) == f"t.lw:{where}"
    assert err.found and err.expected
    rendered = err.render()
    assert "^" in rendered and "found:" in rendered and "expected:" in rendered
    assert not re.search(r"__ANON|\b_NL\b|\bWORD\b|\bLSQB\b|\$END", rendered)


def test_expected_values_are_said_in_words() -> None:
    with pytest.raises(RecipeError) as info:
        parse_document("prune amount=", "t.lw")
    assert info.value.expected == ['a value (number, word, "string", [list] or $variable)']
    assert info.value.found == "the end of the recipe"


# --- issue 27: a recipe just under the size limit is checked in one linear pass -------------------


def _megabyte(line: str) -> str:
    """``line`` repeated to just under MAX_RECIPE_BYTES."""
    from lwdsl.limits import MAX_RECIPE_BYTES

    return (line + "\n") * ((MAX_RECIPE_BYTES - 64) // (len(line) + 1))


@pytest.mark.slow
@pytest.mark.parametrize(
    "line",
    [
        "prune l1 0.2 on conv",  # many steps
        "# a comment, on a line of its own, " + "x" * 40,  # many comments
        "",  # blank lines, then one step
    ],
)
def test_a_recipe_of_a_megabyte_is_checked(line: str) -> None:
    """Completes, or is refused for its token count before parsing (no assertion on time:
    bench/check_bench.py prints the figures)."""
    text = _megabyte(line) + "finetune epochs=1\n"
    if text.count("prune") * 5 > MAX_RECIPE_TOKENS:
        with pytest.raises(RecipeError, match="too many for a recipe"):
            lwdsl.parse(text, file="big.lw")
        return
    recipe = lwdsl.parse(text, file="big.lw")
    assert recipe.steps[-1].op == "finetune"
    assert len(recipe.steps) == (text.count("prune") + 1)


@pytest.mark.slow
def test_a_long_list_and_long_lines_are_checked() -> None:
    items = ",".join(["a"] * 15_000)  # 30,000 tokens, and 2,000 steps of 5: under MAX_RECIPE_TOKENS
    recipe = lwdsl.parse(f"distill teacher=[{items}]\n" + " | ".join(["finetune epochs=1"] * 2_000), file="big.lw")
    assert len(recipe.steps) == 2_001 and len(recipe.steps[0].teacher) == 15_000


def test_the_parser_tables_are_cached_read_back_and_rebuilt_when_damaged(tmp_path, monkeypatch) -> None:
    from pathlib import Path

    from lark import Lark

    from lwdsl.language import parser

    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path))
    built = parser._lark.__wrapped__()  # no tables yet: built, then written
    [tables] = (tmp_path / "parser").glob("recipe-*.tables")

    class NoBuild(Lark):
        def __init__(self, *args, **kwargs):
            raise AssertionError("the tables were built again instead of read")

    monkeypatch.setattr(parser, "Lark", NoBuild)
    loaded = parser._lark.__wrapped__()
    for path in sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.lw")):
        text = path.read_text()
        assert loaded.parse(text, start="start") == built.parse(text, start="start"), path.name
    assert [t.type for t in loaded.lex("prune l1 0.5  # why\n", dont_ignore=True)][-2:] == ["COMMENT", "_NL"]

    monkeypatch.setattr(parser, "Lark", Lark)
    tables.write_bytes(b"damaged")
    assert parser._lark.__wrapped__().parse("finetune", start="start") == built.parse("finetune", start="start")
    assert tables.read_bytes() != b"damaged"  # replaced

    (tmp_path / "blocked").write_text("a file where the cache folder would go")
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "blocked"))
    assert parser._lark.__wrapped__().parse("finetune", start="start")  # no cache to write: no error


def test_lark_failing_inside_its_own_example_matcher_still_gives_a_located_error():
    """Found by the property test: on this text Lark's match_examples raised a TypeError
    ('%d format: ... not ParserState'); the error is the usual located one, no crash."""
    from lwdsl import parse
    from lwdsl.errors import RecipeError

    text = 'lwdsl 1\nrecipe "r"\ntarget seedcnn on mnist\n\nprune global l1 80%\ndistill[ epochs=1 T=4 alpha=0.7\n'
    with pytest.raises(RecipeError) as err:
        parse(text)
    assert err.value.location.line == 6
