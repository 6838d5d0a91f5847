"""Recipe text and files -> a validated, framework-free :class:`~lwdsl.language.plan.Recipe`.

The compiler reads the header (``lwdsl N``, ``recipe``, ``target``, ``let``), follows ``use``
into other files, applies ``--set`` overrides to the variables, binds every step to its op
spec (:mod:`lwdsl.language.binding`) and runs the cross-step checks (:mod:`lwdsl.language.validate`).

Variables: ``let`` defines a name once (across all used files); a value may use variables
defined before it. ``--set NAME=VALUE`` replaces the value of a ``let`` and is an error for a
name no ``let`` defines. The steps of a used file come where its ``use`` line is; its
``recipe`` and ``target`` apply unless the including file has its own.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, Mapping, Optional

from . import syntax as s
from .binding import bind_step, vars_in
from ..errors import Location, RecipeError, did_you_mean
from ..limits import MAX_NESTING, MAX_RECIPE_BYTES, MAX_USE_DEPTH, MAX_VALUE_ITEMS, size_words
from .parser import parse_document, parse_value
from .plan import Recipe, Target, unsupported_version
from .specs import StepSpec
from .formatter import value_to_text
from .jsonplan import recipe_from_json
from .values import to_python

__all__ = ["parse", "load", "compile_document", "read_text"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse(
    text: str,
    *,
    file: str = "<string>",
    overrides: Optional[Mapping[str, str]] = None,
    root: Optional[str | os.PathLike[str]] = None,
) -> Recipe:
    """Compile recipe text into a validated :class:`~lwdsl.language.plan.Recipe`.

    Args:
        text: the recipe, e.g. ``"prune global l1 0.2 | quantize int8"``.
        file: the name errors show; ``use`` paths are relative to its folder.
        overrides: ``{NAME: VALUE}`` replacing ``let`` values, VALUE in recipe syntax.
        root: the folder ``use`` may read recipes from (default: the folder of ``file``, or
            the current folder for text that is not a file).

    Returns:
        The recipe, its steps located in ``text``.

    Raises:
        RecipeError: a syntax error, an unknown op or option, a bad value, an undefined
            variable, a ``use`` cycle, or steps that do not fit together.

    Example:
        >>> r = parse("let a = 20%\\nprune l1 $a | quantize int8", overrides={"a": "0.5"})
        >>> r.steps[0].amount, r.steps[1].dtype
        (0.5, 'int8')
    """
    return compile_document(parse_document(text, file), overrides=overrides, root=root)


def load(
    path: str | os.PathLike[str],
    *,
    overrides: Optional[Mapping[str, str]] = None,
    root: Optional[str | os.PathLike[str]] = None,
) -> Recipe:
    """Read and compile a recipe file: ``.lw`` text, or ``.json`` as written by ``to_json``.

    Args:
        path: the file; ``use`` paths in it are relative to its folder.
        overrides: ``{NAME: VALUE}`` replacing ``let`` values (``.lw`` only).
        root: the folder ``use`` may read recipes from (default: the folder of ``path``).

    Returns:
        The validated recipe, its steps located in the file(s) they were written in.

    Raises:
        RecipeError: the file cannot be read, or its recipe is wrong (see :func:`parse`).

    Example:
        >>> [step.op for step in load("recipes/seed-pipeline.lw").steps]  # doctest: +SKIP
        ['prune', 'quantize', 'distill']
    """
    text = read_text(path, root=root)
    if Path(path).suffix == ".json":
        if overrides:
            raise RecipeError(f"{path}: --set applies to .lw recipes, not to JSON plans", Location(str(path)))
        return recipe_from_json(text, file=str(path))
    return parse(text, file=str(path), overrides=overrides, root=root)


def read_text(
    path: str | os.PathLike[str],
    location: Optional[Location] = None,
    root: Optional[str | os.PathLike[str]] = None,
) -> str:
    """The UTF-8 text of a recipe file, or a RecipeError saying why it cannot be read.

    Only a regular file is opened (never a folder, device or pipe), and at most
    :data:`~lwdsl.limits.MAX_RECIPE_BYTES` + 1 bytes of it are read: a larger file is refused
    without being read in full. Line endings are normalised to ``\\n``.

    Symbolic links are followed, then checked, before anything is opened: the real file must
    be under the folder ``path`` was named from (or under ``root``), and have the suffix of the
    name it was given by (a ``.lw`` link to ``/etc/passwd`` or to a ``.env`` file is refused),
    so that an error never quotes a line of a file that is not a recipe.
    """

    def refuse(why: str) -> RecipeError:
        return RecipeError(
            f"cannot read {path}: {why}",
            location or Location(str(path)),
            found=str(path),
            expected="a readable recipe file (UTF-8 text)",
        )

    named = Path(path)
    try:
        real = named.resolve()
        folders = [named.parent.resolve()] + ([Path(root).resolve()] if root is not None else [])
    except (OSError, RuntimeError) as exc:  # a loop of links
        raise refuse(f"its symbolic links cannot be followed ({exc})") from None
    if not any(real.is_relative_to(folder) for folder in folders):
        where = " or ".join(str(folder) for folder in folders)
        raise refuse(f"it is a link to a file outside {where}, the folder it was named from")
    if real.suffix != named.suffix:
        raise refuse(f"it is a link to {real.name}, not a {named.suffix or 'recipe'} file")
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise refuse("it is a folder")
        if not stat.S_ISREG(info.st_mode):
            raise refuse("it is not a regular file (a device, pipe or socket)")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # replaced since the stat
                raise refuse("it is not a regular file (a device, pipe or socket)")
            data = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as exc:
        raise refuse((exc.strerror or str(exc)).lower()) from None
    if len(data) > MAX_RECIPE_BYTES:
        size = max(info.st_size, len(data))
        raise refuse(f"it is {size_words(size)}, more than a recipe may be ({size_words(MAX_RECIPE_BYTES)})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise refuse("not UTF-8 text") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def compile_document(
    doc: s.Document,
    *,
    overrides: Optional[Mapping[str, str]] = None,
    root: Optional[str | os.PathLike[str]] = None,
) -> Recipe:
    """Compile a parsed file (and the files it uses, from under ``root``) into a validated Recipe."""
    from .validate import validate_recipe

    recipe = _Compiler(overrides or {}, root).compile(doc)
    validate_recipe(recipe)
    for name, var in recipe.space.items():  # a search space: every value it can take must fit
        for index in range(1, len(var.candidates())):
            validate_recipe(_Compiler(overrides or {}, root, point={name: index}).compile(doc))
    return recipe


def _path_of(doc: s.Document) -> Optional[Path]:
    return None if doc.file.startswith("<") else Path(doc.file)


class _Compiler:
    def __init__(
        self,
        overrides: Mapping[str, str],
        root: Optional[str | os.PathLike[str]] = None,
        point: Optional[Mapping[str, int]] = None,
    ) -> None:
        self.root = Path(root).resolve() if root is not None else None
        self.point = dict(point or {})  # search variable -> which of its candidates to bind
        self.space: dict[str, Any] = {}  # search variable -> its Choice or Range
        self.searched: dict[str, tuple[s.Let, s.Document]] = {}  # every `let NAME = choice/range`, pinned or not
        self.used: set[str] = set()  # names used as $NAME anywhere
        self.bytes_read = 0  # of all files, the top one included, counting a file used twice twice
        self.overrides: dict[str, tuple[s.Value, s.Document]] = {}
        for name, text in overrides.items():
            doc = s.Document((), f"--set {name}", text)
            self.overrides[name] = (parse_value(text, doc.file), doc)
        self.variables: dict[str, Any] = {}
        self.defined: dict[str, s.Let] = {}
        self.origins: dict[str, tuple[str, str]] = {}  # variable -> (its value as text, where it is set)
        self.steps: list[tuple[s.Step, s.Document]] = []
        self.chain: list[tuple[Path, str]] = []  # files being read, for use cycles

    def compile(self, doc: s.Document) -> Recipe:
        path = _path_of(doc)
        if self.root is None:
            self.root = (path.parent if path is not None else Path.cwd()).resolve()
        if path is not None:
            self.chain.append((path.resolve(), doc.file))
        self.bytes_read = len(doc.text.encode("utf-8", "surrogatepass"))
        header = self.read(doc)
        for name in self.overrides:
            if name not in self.defined:
                raise RecipeError(
                    f"--set {name}: the recipe has no variable `{name}`",
                    Location(doc.file),
                    found=name,
                    expected=", ".join(sorted(self.defined)) or "a variable the recipe defines with `let`",
                    suggestion=did_you_mean(name, self.defined),
                )
        if not self.steps:
            from .validate import no_steps

            raise no_steps(doc.file, doc.text)
        for name, (let, where) in self.searched.items():
            if name not in self.used:
                raise where.error(
                    let.span,
                    f"search variable `{name}` is never used",
                    expected=f"${name} in a step (or in a later let that a step uses)",
                    hint=f"use ${name} where its value goes, or remove the let",
                )
        texts = tuple(_with_values(step, where, self.variables) for step, where in self.steps)
        folders: dict[str, Optional[str]] = {}
        written: list[dict[str, Any]] = [{} for _ in self.steps]
        steps = tuple(
            _paths_from(bind_step(step, where, f"step {i} `{text}`", self.variables, self.origins, out), where, folders)
            for i, ((step, where), text, out) in enumerate(zip(self.steps, texts, written), 1)
        )
        fields: dict[str, Any] = {**header, "steps": steps}
        if self.variables:
            fields["variables"] = {k: _plain(v) for k, v in self.variables.items()}
        if self.space:
            fields["space"] = dict(self.space)
        recipe = Recipe(**fields)
        recipe.with_source(doc.text, tuple(where.location(step.span) for step, where in self.steps), texts)
        if self.space:  # which fields each search variable fills, for Recipe.to_text
            recipe.with_space_uses(tuple(_space_uses(out, self.space) for out in written))
        return recipe

    def read(self, doc: s.Document) -> dict[str, Any]:
        """Read one file's statements; return its header (name, target, version)."""
        own: dict[str, Any] = {}
        used: dict[str, Any] = {}
        first_step: Optional[s.Step] = None
        for statement in doc.statements:
            self.used.update(var.name for var in _uses(statement))
            if isinstance(statement, s.Step):
                first_step = first_step or statement
                self.steps.append((statement, doc))
                continue
            if isinstance(statement, s.Use):
                used.update(self.include(statement, doc))
                continue
            keyword = doc.snippet(statement.span).split()[0]
            if first_step is not None:
                raise doc.error(
                    statement.span,
                    f"`{keyword}` comes after the steps",
                    expected=f"header lines ({keyword}, ...) before the first step",
                    hint=f"move it above line {first_step.span.line}",
                )
            if isinstance(statement, s.Let):
                self.define(statement, doc)
                continue
            key = {s.Version: "version", s.Name: "name", s.Target: "target"}[type(statement)]
            if key in own:
                raise doc.error(statement.span, f"`{keyword}` is given twice", expected=f"one `{keyword}` line")
            own[key] = self.header_value(statement, doc)
        used.pop("version", None)  # only the including file's version is the recipe's
        return {**used, **own}

    def header_value(self, statement: s.Statement, doc: s.Document) -> Any:
        if isinstance(statement, s.Version):
            words = unsupported_version(statement.number)
            if words:
                raise doc.error(statement.span, **words)
            return statement.number
        if isinstance(statement, s.Name):
            return self.text(statement.value, doc, "a recipe name")
        model = self.text(statement.model, doc, "a model name or path")
        data = self.text(statement.data, doc, "a data set name") if statement.data else None
        return Target(model=model, data=data)

    def text(self, value: s.Value, doc: s.Document, what: str) -> str:
        python = to_python(value, doc, self.variables)
        if not isinstance(python, str) or not python:
            raise doc.error(value.span, f"expected {what}", expected=f'{what}: a word or a non-empty "quoted string"')
        return python

    def define(self, let: s.Let, doc: s.Document) -> None:
        if not _IDENTIFIER.fullmatch(let.name):
            raise doc.error(
                let.span,
                f"`{let.name}` cannot name a variable",
                found=let.name,
                expected="letters, digits and _ (not starting with a digit)",
            )
        if let.name in self.defined:
            first = self.defined[let.name]
            raise doc.error(
                let.span,
                f"variable `{let.name}` is defined twice",
                expected=f"one `let {let.name}` (the first is at line {first.span.line})",
                hint=f"to change it for one run, use --set {let.name}=VALUE",
            )
        value, where = self.overrides.get(let.name, (let.value, doc))
        origin = f"--set {let.name}={where.text}" if where is not doc else f"let {let.name} at {doc.location(let.span)}"
        if isinstance(let.value, s.Call):
            value, origin = self.search_variable(let, doc, value, where, origin)
        python = to_python(value, where, self.variables, f"let {let.name}: ")
        problem = _too_big(python)
        if problem:
            raise where.error(
                value.span,
                f"let {let.name}: the value is too large: {problem}",
                expected=f"at most {MAX_NESTING} lists inside each other and {MAX_VALUE_ITEMS:,} values in all",
                hint="variables used inside lists are copied in full each time",
            )
        self.variables[let.name] = python
        self.defined[let.name] = let
        self.origins[let.name] = (_short(value_to_text(_plain(python))), origin)

    def search_variable(
        self, let: s.Let, doc: s.Document, value: s.Value, where: s.Document, origin: str
    ) -> tuple[s.Value, str]:
        """``let NAME = choice(...)``/``range(...)``: checked as a space even when ``--set``
        pins it; unpinned, it joins the recipe's space and the steps are bound with one of its
        values (the first, or the one ``point`` asks for). Returns the value and its origin."""
        from .space import space_var

        call = let.value
        assert isinstance(call, s.Call)
        var = space_var(let.name, call, doc, lambda arg: to_python(arg, doc, self.variables, f"let {let.name}: "))
        self.searched[let.name] = (let, doc)
        if where is not doc:  # pinned by --set
            return value, origin
        self.space[let.name] = var
        index = self.point.get(let.name, 0)  # the candidates are the call's arguments, in order
        shown = f"value {index + 1} of {var.text()} (let {let.name} at {doc.location(let.span)})"
        return call.args[index], shown

    def include(self, use: s.Use, doc: s.Document) -> dict[str, Any]:
        """Read the file ``use`` names: a ``.lw`` recipe under the root folder, nothing else.

        Checked before the file is opened: the suffix, that the real path (symbolic links
        followed) is inside the root, that it is a regular file, and that it does not close a
        circle; then the depth of ``use`` inside ``use`` and the bytes read in all. An error
        points at the ``use`` line and never shows the other file's content.
        """
        here = _path_of(doc)
        written = str(use.path.value)
        path = (here.parent if here else Path.cwd()) / written
        shown = os.path.normpath(os.path.join(os.path.dirname(doc.file), written)) if here else written
        root = self.root or Path.cwd().resolve()
        if not written.endswith(".lw") or "\0" in written:
            raise doc.error(
                use.path.span,
                f"`use` reads only recipe files: {shown} is not a .lw file",
                expected="a .lw recipe file, e.g. use \"base.lw\"",
            )
        resolved = path.resolve()
        if not resolved.is_relative_to(root):
            raise doc.error(
                use.path.span,
                f"cannot use {shown}: it is outside {root}, the folder recipes may be used from",
                expected=f"a .lw file under {root}",
                hint="move the file under the recipe's folder, or name a folder above both with --root DIR",
            )
        if resolved.suffix != ".lw" and path.exists():
            raise doc.error(
                use.path.span,
                f"`use` reads only recipe files: {shown} is a link to {resolved.name}, not a .lw file",
                expected="a .lw recipe file, e.g. use \"base.lw\"",
            )
        seen = [p for p, _ in self.chain]
        if resolved in seen:
            names = [name for _, name in self.chain[seen.index(resolved) :]] + [shown]
            raise doc.error(
                use.path.span,
                "`use` goes round in a circle",
                found=" -> ".join(names),
                expected="files that do not use each other in a circle",
            )
        if not path.is_file():
            why = "it is a folder" if path.is_dir() else "not a regular file" if path.exists() else "no such file"
            raise doc.error(
                use.path.span,
                f"cannot use {shown}: {why}",
                expected=f"a recipe file (a path relative to the folder of {doc.file})" if here else "a recipe file",
            )
        if len(self.chain) >= MAX_USE_DEPTH:
            raise doc.error(
                use.path.span,
                f"cannot use {shown}: `use` is nested more than {MAX_USE_DEPTH} files deep",
                found=" -> ".join(name for _, name in self.chain[-3:]) + f" -> {shown}",
                expected=f"at most {MAX_USE_DEPTH} files, each used by the one before",
            )
        text = read_text(path, doc.location(use.path.span), root)
        self.bytes_read += len(text.encode("utf-8", "surrogatepass"))
        if self.bytes_read > MAX_RECIPE_BYTES:
            raise doc.error(
                use.path.span,
                f"cannot use {shown}: the recipe and the files it uses come to more than {size_words(MAX_RECIPE_BYTES)} "
                "(a file used twice counts twice)",
                expected=f"at most {size_words(MAX_RECIPE_BYTES)} of recipe text in all",
            )
        self.chain.append((resolved, shown))
        header = self.read(parse_document(text, shown))
        self.chain.pop()
        return header


#: Characters of a variable's value shown in a step's label; a longer value shows its start.
_LABEL_VALUE_CHARS = 40


def _with_values(step: s.Step, doc: s.Document, variables: Mapping[str, Any]) -> str:
    """The step as written, whitespace collapsed, each defined ``$NAME`` replaced by its value
    (how reports and errors name the step: ``quantize auto budget=6``, not ``budget=$budget``)."""
    used = sorted(vars_in(*step.args), key=lambda var: var.span.start)
    if not used:
        return doc.snippet(step.span)
    parts, at = [], step.span.start
    for var in used:
        if var.name not in variables:
            continue
        parts += [doc.text[at : var.span.start], _short(value_to_text(_plain(variables[var.name])))]
        at = var.span.end
    parts.append(doc.text[at : step.span.end])
    return " ".join("".join(parts).split())


def _space_uses(written: Mapping[str, Any], space: Mapping[str, Any]) -> dict[str, str]:
    """``{field: NAME}`` for the fields of a step written as ``$NAME`` of a search variable."""
    uses = {}
    for name, node in written.items():
        node = node.value if isinstance(node, s.Option) else node
        if isinstance(node, s.Var) and node.name in space:
            uses[name] = node.name
    return uses


def _uses(statement: s.Statement) -> list[s.Var]:
    """The ``$NAME`` uses in a statement: a step's arguments or a let's value."""
    if isinstance(statement, s.Step):
        return vars_in(*statement.args)
    if isinstance(statement, s.Let):
        value = statement.value
        return vars_in(*value.args) if isinstance(value, s.Call) else vars_in(value)
    return []


def _short(text: str) -> str:
    return text if len(text) <= _LABEL_VALUE_CHARS else text[: _LABEL_VALUE_CHARS - 3] + "..."


def _paths_from(step: StepSpec, doc: s.Document, folders: dict[str, Optional[str]]) -> StepSpec:
    """``step`` with the files it reads (``distill teacher=PATH``) relative to the folder of the
    file it is written in, as ``use`` paths are: absolute, so that a run from any folder reads
    the same file and an error names where it looked. Text that is not a file keeps its paths.
    ``folders`` keeps each file's folder (a recipe of many steps asks the file system once)."""
    if doc.file not in folders:
        folders[doc.file] = None if doc.file.startswith("<") else os.path.abspath(os.path.dirname(doc.file))
    folder = folders[doc.file]
    return step if folder is None else step.paths_from(folder)


def _too_big(value: Any) -> Optional[str]:
    """Why a variable's value is too large (too deep, or too many values once lists that
    repeat a variable are counted in full), or None. Iterative, and stops at the limit."""
    stack, items = [(value, 0)], 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, tuple):
            if depth >= MAX_NESTING:
                return f"lists nested more than {MAX_NESTING} deep"
            stack.extend((child, depth + 1) for child in item)
        else:
            items += 1
            if items > MAX_VALUE_ITEMS:
                return f"more than {MAX_VALUE_ITEMS:,} values"
    return None


def _plain(value: Any) -> Any:
    """A variable's value as JSON would give it back (lists, not tuples)."""
    return [_plain(v) for v in value] if isinstance(value, tuple) else value
