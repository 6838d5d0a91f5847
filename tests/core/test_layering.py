"""The language modules (``lwdsl/language/``) import one way: each may import only modules before it in LAYERS.

A backward import is allowed only inside a function, on the list below, with a comment on the
line before it saying why (the convenience methods of ``Recipe`` that call later layers).
"""

from __future__ import annotations

import ast
from pathlib import Path

LWDSL = Path(__file__).resolve().parents[2] / "lwdsl" / "language"

LAYERS = ["specs", "syntax", "parser", "binding", "plan", "formatter", "validate", "jsonplan", "compiler", "diff"]

#: (importer, imported): the lazy backward imports the layering allows.
ALLOWED_LAZY = {("plan", "formatter")}


def _imports(module: str) -> list[tuple[str, bool, int]]:
    """(imported language module, imported at module level?, line) for every relative import."""
    path = LWDSL / (f"{module}/__init__.py" if (LWDSL / module).is_dir() else f"{module}.py")
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` blocks import nothing at run time
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            top |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            for name in names:
                if name in LAYERS and name != module:
                    out.append((name, id(node) in top, node.lineno))
    return out


def test_language_modules_import_one_way():
    bad = []
    for rank, module in enumerate(LAYERS):
        for imported, at_top, line in _imports(module):
            if LAYERS.index(imported) < rank:
                continue
            if at_top or (module, imported) not in ALLOWED_LAZY:
                bad.append(f"lwdsl/{module}.py:{line} imports {imported} (a later layer)")
    assert not bad, "\n".join(bad)


def test_each_allowed_backward_import_is_used_and_commented():
    for module, imported in ALLOWED_LAZY:
        lines = (LWDSL / f"{module}.py").read_text().splitlines()
        found = [line for m, top, line in _imports(module) if m == imported and not top]
        assert found, f"{module} no longer imports {imported}: drop it from ALLOWED_LAZY"
        for line in found:
            assert lines[line - 2].strip().startswith("#"), f"lwdsl/{module}.py:{line}: say why this import is lazy"
