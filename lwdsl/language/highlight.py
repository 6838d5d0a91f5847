"""Highlighting of recipes, derived from the one grammar and the ops table so it cannot drift.

:func:`token_rules` reads the terminals of ``grammar/recipe.lark`` (through Lark) and the op and
option names of :mod:`lwdsl.language.specs`, and gives ordered (name, regex, scope) rules. Two
highlighters are built from them:

- :class:`RecipeLexer`, a Pygments lexer (entry point ``pygments.lexers``: ``lwdsl``), so
  Sphinx/MkDocs and ``rich`` highlight ``.lw`` files;
- :func:`textmate_grammar`, the TextMate grammar of the VS Code extension in ``editors/vscode/``
  (written by ``python -m lwdsl.language.highlight editors/vscode``; a test checks the folder's
  copy is what this module gives).
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["token_rules", "textmate_grammar", "vscode_files", "RecipeLexer", "lexer"]

#: The keywords of the grammar's header lines and selectors.
KEYWORDS = ("LWDSL", "RECIPE", "TARGET", "LET", "USE", "ON", "EXCEPT")


@functools.lru_cache(maxsize=1)
def _terminals() -> dict[str, str]:
    """Terminal name -> its regex, from the grammar itself."""
    from lark import Lark

    text = (Path(__file__).parent / "grammar" / "recipe.lark").read_text()
    parser = Lark(text, parser="lalr")
    return {t.name: t.pattern.to_regexp() for t in parser.terminals}


@functools.lru_cache(maxsize=1)
def token_rules() -> list[tuple[str, str, str]]:
    """Ordered (name, regex, TextMate scope) rules: the first that matches at a place wins."""
    from .fields import options
    from .specs import OPS

    t = _terminals()
    ops = sorted(OPS, key=lambda w: (-len(w), w))
    opts = sorted({o for spec in OPS.values() for o in options(spec)}, key=lambda w: (-len(w), w))
    word_end = r"(?![A-Za-z0-9_.:/])"
    keywords = "|".join(re.escape(t[k].replace("\\", "")) if k in t else k.lower() for k in KEYWORDS)
    return [
        ("comment", t["COMMENT"], "comment.line.number-sign.lwdsl"),
        ("string", t["STRING"], "string.quoted.double.lwdsl"),
        ("keyword", rf"\b(?:{keywords}){word_end}", "keyword.control.lwdsl"),
        ("constant", rf"\b(?:true|false){word_end}", "constant.language.boolean.lwdsl"),
        ("op", rf"\b(?:{'|'.join(ops)}){word_end}", "entity.name.function.op.lwdsl"),
        ("option", rf"\b(?:{'|'.join(opts)})(?=\s*(?:=|>=))", "variable.parameter.option.lwdsl"),
        ("variable", t["VAR"], "variable.other.lwdsl"),
        ("number", "(?:" + "|".join(f"(?:{t[n]})" for n in ("RATIO", "PERCENT", "FLOAT", "INT")) + ")" + word_end,
         "constant.numeric.lwdsl"),
        ("operator", r"->|>=|=|\||,", "keyword.operator.lwdsl"),
        ("bracket", r"[\[\]()]", "punctuation.bracket.lwdsl"),
        ("word", t["WORD"], "variable.other.word.lwdsl"),
    ]


def textmate_grammar() -> dict[str, Any]:
    """The TextMate grammar (``source.lwdsl``) of the VS Code extension."""
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
        "name": "lwdsl recipe",
        "scopeName": "source.lwdsl",
        "fileTypes": ["lw"],
        "patterns": [{"name": scope, "match": regex} for _, regex, scope in token_rules()],
    }


def vscode_files() -> dict[str, str]:
    """Every generated file of ``editors/vscode/``, by path: package.json, the language
    configuration, the grammar and a snippet per op."""
    from .specs import OPS

    package = {
        "name": "lwdsl-recipes",
        "displayName": "lwdsl recipes",
        "description": "Syntax highlighting and snippets for lwdsl compression recipes (.lw)",
        "version": "0.1.0",
        "publisher": "lwdsl",
        "license": "MIT",
        "engines": {"vscode": "^1.60.0"},
        "categories": ["Programming Languages", "Snippets"],
        "contributes": {
            "languages": [{"id": "lwdsl", "aliases": ["lwdsl recipe", "lwdsl"], "extensions": [".lw"],
                           "configuration": "./language-configuration.json"}],
            "grammars": [{"language": "lwdsl", "scopeName": "source.lwdsl", "path": "./syntaxes/lwdsl.tmLanguage.json"}],
            "snippets": [{"language": "lwdsl", "path": "./snippets/lwdsl.json"}],
        },
    }
    config = {"comments": {"lineComment": "#"}, "brackets": [["[", "]"], ["(", ")"]],
              "autoClosingPairs": [{"open": "[", "close": "]"}, {"open": "(", "close": ")"}, {"open": "\"", "close": "\""}],
              "surroundingPairs": [["[", "]"], ["(", ")"], ["\"", "\""]]}
    snippets = {}
    for name, spec in OPS.items():
        example = _example(spec)
        snippets[name] = {"prefix": name, "body": [example or name], "description": getattr(spec, "summary", name)}
    dump = functools.partial(json.dumps, indent=2, sort_keys=False)
    return {
        "package.json": dump(package) + "\n",
        "language-configuration.json": dump(config) + "\n",
        "syntaxes/lwdsl.tmLanguage.json": dump(textmate_grammar()) + "\n",
        "snippets/lwdsl.json": dump(snippets) + "\n",
    }


def _example(spec: Any) -> str:
    doc = spec.__doc__ or ""
    found = re.search(r"``((?:prune|regularize|finetune|smoothquant|quantize|distill|export)\b[^`]*)``", doc)
    return found.group(1) if found else ""


def _pygments_lexer() -> Any:
    from pygments.lexer import RegexLexer
    from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text

    kinds = {"comment": Comment.Single, "string": String.Double, "keyword": Keyword, "constant": Keyword.Constant,
             "op": Name.Function, "option": Name.Attribute, "variable": Name.Variable, "number": Number,
             "operator": Operator, "bracket": Punctuation, "word": Name}

    class RecipeLexer(RegexLexer):
        """Pygments lexer for lwdsl recipes (``.lw``), built from the grammar's terminals."""

        name = "lwdsl"
        aliases = ["lwdsl", "lw"]
        filenames = ["*.lw"]
        tokens = {"root": [(r"\s+", Text.Whitespace), *((regex, kinds[kind]) for kind, regex, _ in token_rules())]}

    return RecipeLexer


def __getattr__(name: str) -> Any:
    if name in ("RecipeLexer", "lexer"):  # Pygments' entry point loads the class: built on first use
        return _pygments_lexer()
    raise AttributeError(name)


def main(folder: str) -> None:
    """Write the VS Code extension's generated files into ``folder``."""
    for rel, text in vscode_files().items():
        path = Path(folder) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "editors/vscode")
