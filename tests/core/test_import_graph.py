"""The whole package's imports, counted the way Python runs them: at module level and inside
functions (only ``if TYPE_CHECKING:`` blocks are left out). No cycles anywhere, and each side
imports only in the direction docs/architecture.md draws."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules() -> dict[str, Path]:
    out = {}
    for base, package in ((ROOT / "lwdsl", "lwdsl"), (ROOT / "backends", "lwdsl.backends")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _known(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    typing_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for n in ast.walk(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                found = _known(f"{base}.{alias.name}") if f"{base}.{alias.name}" in MODULES else _known(base)
                if found:
                    out.add(found)
        elif isinstance(node, ast.Import):
            out |= {m for m in (_known(a.name) for a in node.names) if m}
    out.discard(module)
    return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []
    for root in GRAPH:
        if root in index:
            continue
        work = [(root, iter(sorted(GRAPH[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(GRAPH[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_no_import_cycles_anywhere_counting_imports_inside_functions():
    assert _cycles() == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in _cycles())


def test_the_cycle_finder_finds_a_cycle():
    GRAPH["lwdsl.errors"].add("lwdsl.runner.pipeline")  # errors -> runner -> ... -> errors
    try:
        assert any("lwdsl.errors" in c and "lwdsl.runner.pipeline" in c for c in _cycles())
    finally:
        GRAPH["lwdsl.errors"].discard("lwdsl.runner.pipeline")


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


#: The sides of the tree (docs/architecture.md), bottom to top.
LOW = ("lwdsl.errors", "lwdsl.limits")
SEMANTICS = ("lwdsl.semantics",)
DATA = ("lwdsl.data",)
LANGUAGE = ("lwdsl.language",)
CORE = ("lwdsl.backend",)
BACKENDS = ("lwdsl.backends",)
RUN = ("lwdsl.runner",)
CLI = ("lwdsl.cli", "lwdsl.__main__")  # `python -m lwdsl` is the command line too

#: (who, what it never imports): the direction of the architecture.
RULES = [
    # the shared bottom: imports nothing of lwdsl but itself
    (LOW, SEMANTICS + DATA + LANGUAGE + CORE + BACKENDS + RUN + CLI),
    # the numbers: numpy only, never a spec, a flow, a backend or the run (the named data sets
    # for a transfer set's shape are the one thing it reads)
    (SEMANTICS, LANGUAGE + CORE + BACKENDS + RUN + CLI),
    # data sets: arrays and files, never a recipe, a flow, a framework or the run
    (DATA, SEMANTICS + LANGUAGE + CORE + BACKENDS + RUN + CLI),
    # the language side: text -> plan, never a flow, a framework or the run (check_backend reads
    # the backends' static support tables, which import no framework)
    (LANGUAGE, CORE + BACKENDS + RUN + CLI, ("lwdsl.backend", "lwdsl.backend.registry", "lwdsl.backend.support")),
    # the protocol and the flows written once: never a concrete backend, recipe text or the run
    (CORE, BACKENDS + RUN + CLI + ("lwdsl.language.compiler", "lwdsl.language.parser", "lwdsl.language.syntax")),
    # a backend gets specs and the core, never text, the runner or the command line
    (BACKENDS, RUN + CLI + ("lwdsl.language.compiler", "lwdsl.language.parser", "lwdsl.language.binding")),
    # the run never imports the command line; the user's model loader imports no framework
    (RUN, CLI),
    (("lwdsl.runner.usermodel",), CORE + BACKENDS + LANGUAGE),
    # the zoo's table is data: it imports nothing of lwdsl
    (("lwdsl.backend.zoo",), ("lwdsl",)),
]


def test_each_side_imports_only_downwards():
    bad = []
    for who, never, *allowed in RULES:
        allowed = allowed[0] if allowed else ()
        for module, imported in GRAPH.items():
            if _under(module, who):
                bad += [f"{module} imports {m}" for m in sorted(imported) if _under(m, never) and m not in allowed]
    assert not bad, "\n".join(bad)


def test_the_rules_cover_every_package():
    covered = tuple(p for who, *_ in RULES for p in who)
    for module in MODULES:
        assert module == "lwdsl" or _under(module, covered) or _under(module, CLI), f"{module}: which side is it on? add it to RULES"
