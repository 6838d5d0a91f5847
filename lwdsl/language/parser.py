"""Recipe text -> syntax tree (:mod:`lwdsl.language.syntax`), and the one place syntax errors are raised.

The grammar (``grammar/recipe.lark``) is loaded lazily, once, into an LALR parser; its tables
are kept in the user's cache (``$LWDSL_CACHE`` or ``~/.cache/lwdsl``, ``parser/``), keyed by the
grammar's text and the Lark and Python versions, so a start-up reads them instead of building
them (``lwdsl check`` runs on every commit). The
transformer only builds nodes; meaning comes later, in :mod:`lwdsl.language.compiler`. Every Lark error
is turned into a :class:`~lwdsl.errors.RecipeError` by :func:`_syntax_error`, in human words:
where, what was found, what was expected, and a label for common mistakes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Iterator, Optional

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from . import syntax as s
from ..errors import Location, RecipeError
from ..limits import MAX_NESTING, MAX_RECIPE_BYTES, MAX_RECIPE_TOKENS, size_words
from .syntax import location_in

__all__ = ["parse_document", "parse_value", "comments", "check_size"]


_OPTIONS = {"parser": "lalr", "maybe_placeholders": True, "start": ["start", "value"]}


@functools.cache
def _lark() -> Lark:
    grammar = files("lwdsl.language.grammar").joinpath("recipe.lark").read_text(encoding="utf-8")
    cached = _tables_path(grammar)
    if cached is not None and cached.is_file():
        try:
            with open(cached, "rb") as f:
                return Lark.load(f)
        except Exception:  # damaged or from another Lark: built again below, and replaced
            pass
    parser = Lark(grammar, **_OPTIONS)
    if cached is not None:
        _save_tables(parser, cached)
    return parser


def _tables_path(grammar: str) -> Optional[Path]:
    """Where the parser tables of ``grammar`` are kept (the same root as the baselines' cache)."""
    import lark

    root = os.environ.get("LWDSL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lwdsl"
    key = hashlib.sha256(f"{grammar}\0{sorted(_OPTIONS.items())}".encode()).hexdigest()[:16]
    return Path(root) / "parser" / f"recipe-{key}-lark{lark.__version__}-py{sys.version_info[0]}{sys.version_info[1]}.tables"


def _save_tables(parser: Lark, path: Path) -> None:
    """Write the tables atomically (a second ``lwdsl check`` at the same moment reads a whole
    file or none); a cache that cannot be written is no error: the next start builds them."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tables-")
        try:
            with os.fdopen(fd, "wb") as f:
                parser.save(f)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def parse_document(text: str, file: str = "<string>") -> s.Document:
    """Parse a whole recipe file into a :class:`~lwdsl.language.syntax.Document`.

    Raises:
        RecipeError: the text is not valid recipe syntax.
    """
    return s.Document(statements=_Builder(text, file).build(_parse(text, file, "start")), file=file, text=text)


def parse_value(text: str, file: str) -> s.Value:
    """Parse one value (a ``--set NAME=VALUE`` from the command line), located in ``file``."""
    return _Builder(text, file).build(_parse(text, file, "value"))


def comments(text: str) -> Iterator[Token]:
    """The ``# comment`` tokens of a text that parses (for the formatter)."""
    return (tok for tok in _lark().lex(text, dont_ignore=True) if tok.type == "COMMENT")


def check_size(text: str, file: str) -> None:
    """Refuse a recipe text (``.lw`` or JSON) of more than MAX_RECIPE_BYTES."""
    size = len(text) if len(text) > MAX_RECIPE_BYTES else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_RECIPE_BYTES:
        raise RecipeError(
            f"{file} is too large for a recipe: {size_words(size)} (at most {size_words(MAX_RECIPE_BYTES)})",
            Location(file),
            hint="split it into files joined with `use`, or check that this is the right file",
        )


#: What the grammar reads as one token, roughly (a count, not a lexer): a quoted string, a run
#: of word characters, or one sign; comments are matched to be skipped.
_TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"?|[\w.%$*?+\-/]+|[^\s#]')


def check_tokens(text: str, file: str) -> None:
    """Refuse a recipe of more than MAX_RECIPE_TOKENS tokens before the parser reads it, at the
    first token past the limit (counted in one regular-expression pass, linear in the text)."""
    count = 0
    for match in _TOKEN.finditer(text):
        if match.group().startswith("#"):
            continue
        count += 1
        if count > MAX_RECIPE_TOKENS:
            line = text.count("\n", 0, match.start()) + 1
            col = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
            raise RecipeError(
                f"{file} has more than {MAX_RECIPE_TOKENS:,} words, numbers and signs (comments not counted): "
                "too many for a recipe",
                location_in(text, file, line, col),
                hint="split it into files joined with `use`, or check that this is the right file",
            )


def _parse(text: str, file: str, start: str):
    check_size(text, file)
    check_tokens(text, file)
    try:
        tree = _lark().parse(text, start=start)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, file, start) from None
    return tree


#: Digits a number may have (Python refuses to convert integers of more than 4300).
_MAX_NUMBER_CHARS = 100
_NUMBERS = frozenset({"INT", "FLOAT", "PERCENT", "RATIO"})


def _token_span(token: Token) -> s.Span:
    return s.Span(token.line, token.column, token.end_line, token.end_column, token.start_pos, token.end_pos)


def _cover(first, last) -> s.Span:
    """The span from the start of ``first`` to the end of ``last`` (tokens or syntax nodes)."""
    a = first.span if hasattr(first, "span") else _token_span(first)
    b = last.span if hasattr(last, "span") else _token_span(last)
    return s.Span(a.line, a.col, b.end_line, b.end_col, a.start, b.end)


#: The escapes a quoted string may hold, and what each stands for. Any other backslash is an
#: error (``"conv\d"`` would otherwise lose its backslash, or mean something else later).
ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
_ESCAPE = re.compile(r"\\(.)")


def _check_escapes(token: Token, text: str, file: str) -> None:
    """Refuse a backslash in a quoted string that starts none of :data:`ESCAPES`."""
    for match in _ESCAPE.finditer(token):
        if match[1] not in ESCAPES:
            raise RecipeError(
                f"unknown escape `{match[0]}` in a quoted string",
                location_in(text, file, token.line, token.column + match.start(), 2),
                found=match[0],
                expected="one of the escapes " + ", ".join(f"\\{c}" for c in ESCAPES) + " (a backslash is written \\\\)",
                hint=f'to keep the backslash, double it: "\\\\{match[1]}"',
            )


def _quoted(token: Token) -> s.Scalar:
    inner = _ESCAPE.sub(lambda m: ESCAPES[m[1]], token[1:-1]) if "\\" in token else token[1:-1]
    return s.Scalar(inner, str(token), _token_span(token), quoted=True)


class _Builder:
    """Parse tree -> syntax nodes: one method per rule (or alias), called with its built
    children, bottom up. Positions come from the tokens (keywords and brackets are kept in the
    tree for that): Lark's position propagation is not used.

    The walk is this class's own, not a Lark ``Transformer``: it is a third of the cost on a
    large recipe (no wrapper per call, tokens not visited one by one), and the checks that must
    come before a token is converted are made here, in the same pass (Lark would wrap them in
    a ``VisitError``): numbers too long to convert, unknown escapes in strings, and lists
    nested too deeply (refused on the way down, before anything recurses deeper).
    """

    def __init__(self, text: str, file: str) -> None:
        self.text, self.file = text, file

    def build(self, tree: Tree, depth: int = 0):
        if tree.data == "list":
            depth += 1
            if depth > MAX_NESTING:
                bracket = tree.children[0]  # the `[` token
                raise RecipeError(
                    f"lists are nested too deeply: more than {MAX_NESTING} levels of `[`",
                    location_in(self.text, self.file, bracket.line, bracket.column),
                    found="`[` at nesting level " + str(depth),
                    expected=f"at most {MAX_NESTING} lists inside each other",
                )
        children = []
        for child in tree.children:
            if isinstance(child, Tree):
                child = self.build(child, depth)
            elif isinstance(child, Token):
                self._check_token(child)
            children.append(child)
        return getattr(self, tree.data)(*children)

    def _check_token(self, token: Token) -> None:
        if token.type == "STRING":
            if "\\" in token:
                _check_escapes(token, self.text, self.file)
        elif token.type in _NUMBERS and len(token) > _MAX_NUMBER_CHARS:
            raise RecipeError(
                f"a number of {len(token)} characters is too long",
                location_in(self.text, self.file, token.line, token.column, min(len(token), 20)),
                found=f"{token[:20]}...",
                expected=f"a number of at most {_MAX_NUMBER_CHARS} characters",
            )

    def start(self, *statements):
        return statements

    def version(self, keyword, number):
        return s.Version(int(number), _cover(keyword, number))

    def name(self, keyword, value):
        return s.Name(value, _cover(keyword, value))

    def target(self, keyword, model, on, data):
        return s.Target(model, data, _cover(keyword, data if data is not None else model))

    def let(self, keyword, name, value):
        return s.Let(str(name), value, _cover(keyword, value))

    def use(self, keyword, path):
        return s.Use(_quoted(path), _cover(keyword, path))

    def call(self, name, open_, *values_and_close):
        values = values_and_close[:-1]
        return s.Call(str(name), _token_span(name), values, _cover(name, values_and_close[-1]))

    def step(self, op, *args):
        return s.Step(str(op), _token_span(op), args, _cover(op, args[-1] if args else op))

    def option(self, key, value):
        return s.Option(str(key), value, _cover(key, value))

    def at_least(self, key, value):
        return s.Option(str(key), value, _cover(key, value), at_least=True)

    def on_clause(self, keyword, *patterns):
        return s.Clause("on", patterns, _cover(keyword, patterns[-1]))

    def except_clause(self, keyword, *patterns):
        return s.Clause("except", patterns, _cover(keyword, patterns[-1]))

    def integer(self, token):
        return s.Scalar(int(token), str(token), _token_span(token))

    def decimal(self, token):
        return s.Scalar(float(token), str(token), _token_span(token))

    def percent(self, token):
        return s.Scalar(float(token[:-1]) / 100, str(token), _token_span(token))

    def ratio(self, token):
        n, m = token.split(":")
        return s.Ratio(int(n), int(m), str(token), _token_span(token))

    def true(self, token):
        return s.Scalar(True, "true", _token_span(token))

    def false(self, token):
        return s.Scalar(False, "false", _token_span(token))

    def word(self, token):
        return s.Scalar(str(token), str(token), _token_span(token))

    def string(self, token):
        return _quoted(token)

    def variable(self, token):
        return s.Var(token[1:], _token_span(token))

    def pair(self, teacher, student):
        return s.Pair(teacher, student, _cover(teacher, student))

    def list(self, open_, *items_and_close):
        return s.ListValue(items_and_close[:-1], _cover(open_, items_and_close[-1]))


# --- syntax errors --------------------------------------------------------------------------

#: Terminal names in human words (anonymous keywords and punctuation are shown as written).
_TERMINALS = {
    "WORD": "a word",
    "VAR": "a $variable",
    "STRING": 'a "quoted string"',
    "RATIO": "an N:M ratio",
    "PERCENT": "a percentage",
    "FLOAT": "a number",
    "INT": "a number",
    "_NL": "a new line",
    "_PIPE": "`|`",
    "$END": "the end of the recipe",
}
_VALUE_START = {"INT", "FLOAT", "PERCENT", "RATIO", "WORD", "STRING", "VAR", "LSQB", "TRUE", "FALSE"}
_HEADER_START = {"LWDSL", "RECIPE", "TARGET", "LET", "USE"}
_STEP_END = {"_NL", "_PIPE", "$END"}
#: Groups of terminals said in a few words, when all of a group's core is expected.
_GROUPS = (
    ({"INT", "FLOAT", "WORD", "STRING", "LSQB"}, _VALUE_START, 'a value (number, word, "string", [list] or $variable)'),
    (_HEADER_START | {"WORD"}, _HEADER_START | {"WORD"}, "a step (an operation name such as prune)"),
    ({"_NL", "_PIPE"}, _STEP_END, "the end of the step (a new line or `|`)"),
)

#: Common mistakes, each with bad texts that fail in the same parser state (see match_examples).
_EXAMPLES = {
    "missing value after `=`": [
        "prune amount=",
        "prune amount=\n",
        "prune amount= | quantize int8",
        "prune amount= on conv",
        "prune expect>=",
        "let x =",
        "let x =\n",
    ],
    "unclosed list: `]` is missing": ["distill teacher=[a", "distill teacher=[a, b", "distill teacher=[a, b\n"],
    "a `,` with nothing after it": [
        "distill teacher=[a,]",
        "distill teacher=[a,\n",
        "prune on conv,",
        "prune on conv,\n",
        "prune on conv, | quantize int8",
    ],
    "stray `,`: separate arguments with spaces and steps with `|`": [
        "prune l1, 0.2",
        "prune l1 0.2, quantize int8",
        "distill T=2, alpha=0.5",
        "prune l1 0.2 on conv linear, x",
    ],
    "`|` with no step after it": ["prune l1 0.2 |", "prune l1 0.2 |\n", "prune l1 0.2 | | quantize int8"],
    "`on` and `except` need a layer kind or a quoted glob": [
        "prune l1 0.2 on",
        "prune l1 0.2 on\n",
        "prune l1 0.2 on | quantize int8",
        "prune l1 0.2 except",
        "prune l1 0.2 on 3",
    ],
    "`use` takes a quoted path": ["use base.lw", "use"],
    "`let` is written `let NAME = VALUE`": ["let 5", "let x 5", "let x", "let"],
    "`=` needs an option name before it": ["prune =3", "prune 0.2 =3"],
    "`choice(...)` and `range(...)` are written as the value of a `let`, then used as $NAME": [
        "prune l1 choice(",
        "prune l1 choice(0.2, 0.3)",
        "prune amount=choice(0.2, 0.3)",
    ],
    "`choice(...)`/`range(...)` takes values separated by commas, on one line, then `)`": [
        "let x = choice(",
        "let x = choice()",
        "let x = choice(1",
        "let x = choice(1,",
        "let x = choice(1 2)",
        "let x = choice(1,\n",
    ],
}


def _variants(bad: str) -> list[str]:
    """``bad`` as written, after an argument and as a later statement: the parser's stack is
    deeper there, and match_examples compares whole states."""
    op, _, rest = bad.partition(" ")
    texts = [bad] if op in ("let", "use") else [bad, f"{op} x {rest}"]
    return [prefix + text for text in texts for prefix in ("", "x\n", "x | ")]


@functools.cache
def _examples() -> dict[str, list[str]]:
    return {label: [v for bad in bad_texts for v in _variants(bad)] for label, bad_texts in _EXAMPLES.items()}


def _expected_words(names: set[str]) -> list[str]:
    names = {n for n in names if n != "COMMENT"}
    words = []
    for core, members, words_for_group in _GROUPS:
        if core <= names:
            words.append(words_for_group)
            names -= members
    for name in sorted(names, key=lambda n: (n in _STEP_END, n)):
        if name in _TERMINALS:
            word = _TERMINALS[name]
        else:
            word = f"`{_lark().get_terminal(name).pattern.value}`"
        if word not in words:
            words.append(word)
    return words


def _found(token: Token, start: str) -> str:
    if token.type == "$END":
        return "the end of the recipe" if start == "start" else "the end of the value"
    return "the end of the line" if token.type == "_NL" else f"`{token}`"


def _syntax_error(exc: UnexpectedInput, text: str, file: str, start: str) -> RecipeError:
    """The RecipeError for a Lark error: located, in words, with a label when one fits."""
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        if token.type == "$END":  # just after the last thing written
            before = text[: token.end_pos].rstrip()
            line, col, width = before.count("\n") + 1, len(before) - before.rfind("\n"), 1
        else:
            line, col, width = token.line, token.column, 1 if token.type == "_NL" else len(token)
        found = _found(token, start)
        expected = _expected_words(set(exc.accepts or exc.expected)) or ["one value"]
        label = None
        if start == "start":  # the examples are recipes
            try:
                label = exc.match_examples(lambda t: _lark().parse(t, start=start), _examples(), use_accepts=True)
            except Exception:  # Lark's own matcher can fail on odd input (a TypeError formatting a token): no label, same error
                label = None
    else:
        line, col, width = exc.line, exc.column, 1
        char = text[exc.pos_in_stream] if isinstance(exc, UnexpectedCharacters) else ""
        found = f"`{char}`"
        expected = _expected_words(set(getattr(exc, "allowed", None) or ()))
        label = {
            '"': 'unclosed string: the closing `"` is missing on this line',
            "'": 'strings are written in double quotes: "like this"',
        }.get(char)
    message = f"syntax error: {label or 'unexpected ' + found.removeprefix('the ')}"
    return RecipeError(
        message,
        location_in(text, file, line, col, width),
        expected=expected or None,
        found=found,
    )
