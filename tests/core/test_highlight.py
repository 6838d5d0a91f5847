"""Highlighting derived from the grammar: the Pygments lexer and the VS Code extension's TextMate
grammar give every token of every shipped recipe a kind, and the editor folder is generated."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lwdsl.language.highlight import textmate_grammar, token_rules, vscode_files

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").rglob("*.lw"))


def _textmate_scopes(line: str) -> list[tuple[str, str]]:
    """(text, scope) of a line, matched as an editor does: the first rule that matches at each
    place (TextMate regexes are Oniguruma; these use only what Python's ``re`` reads the same)."""
    rules = [(re.compile(p["match"]), p["name"]) for p in textmate_grammar()["patterns"]]
    out, i = [], 0
    while i < len(line):
        if line[i].isspace():
            i += 1
            continue
        for regex, scope in rules:
            m = regex.match(line, i)
            if m and m.end() > i:
                out.append((m.group(), scope))
                i = m.end()
                break
        else:
            raise AssertionError(f"no scope for {line[i:]!r}")
    return out


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_token_of_every_shipped_recipe_gets_a_scope_and_a_pygments_kind(path):
    from pygments import lex
    from pygments.token import Error

    from lwdsl.language.highlight import RecipeLexer

    text = path.read_text()
    for line in text.splitlines():
        _textmate_scopes(line)
    assert not [v for t, v in lex(text, RecipeLexer()) if t in Error]


def test_each_kind_of_token_gets_its_scope():
    got = dict((text, scope.split(".")[0] + "." + scope.split(".")[1]) for text, scope in
               _textmate_scopes('prune global l1 20% on conv except "fc*" schedule=gradual epochs=$E  # note'))
    assert got["prune"] == "entity.name" and got["on"] == "keyword.control" and got["except"] == "keyword.control"
    assert got["20%"] == "constant.numeric" and got['"fc*"'] == "string.quoted" and got["schedule"] == "variable.parameter"
    assert got["$E"] == "variable.other" and got["# note"] == "comment.line" and got["="] == "keyword.operator"
    pairs = _textmate_scopes("distill features=[conv1->conv2] nm=2:4 lr=1e-3")
    assert ("->", "keyword.operator.lwdsl") in pairs and ("2:4", "constant.numeric.lwdsl") in pairs
    assert ("1e-3", "constant.numeric.lwdsl") in pairs and ("features", "variable.parameter.option.lwdsl") in pairs


def test_the_vscode_folder_is_what_the_grammar_gives():
    for rel, text in vscode_files().items():
        assert (ROOT / "editors" / "vscode" / rel).read_text() == text, f"{rel}: run python -m lwdsl.language.highlight editors/vscode"
    package = json.loads((ROOT / "editors" / "vscode" / "package.json").read_text())
    assert package["contributes"]["grammars"][0]["scopeName"] == textmate_grammar()["scopeName"]
    snippets = json.loads((ROOT / "editors" / "vscode" / "snippets" / "lwdsl.json").read_text())
    from lwdsl import parse

    for name, snippet in snippets.items():
        assert parse(snippet["body"][0]).steps[0].op == name  # each op's snippet is a recipe that parses


def test_pygments_finds_the_lexer_by_its_entry_point():
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename

    assert get_lexer_by_name("lwdsl").name == "lwdsl"
    assert get_lexer_for_filename("x.lw").name == "lwdsl"
    assert [r[0] for r in token_rules()][:2] == ["comment", "string"]
