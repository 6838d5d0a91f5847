"""The table behind ``lwdsl ops``: every op, every option, and what each backend supports.

Rows come from the specs (types, ranges, defaults, descriptions); backend support from each
built-in backend's static support table, without importing any framework.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..language.fields import options, range_words, type_words
from ..language.formatter import value_to_text
from ..language.specs import OPS

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["OptionRow", "option_rows", "support_matrix", "print_ops"]


@dataclass(frozen=True)
class OptionRow:
    """One option of one op, in words."""

    op: str
    name: str
    positional: bool
    kind: str
    range: str
    default: str
    description: str


def option_rows() -> list[OptionRow]:
    """Every option of every op, positional ones first, in the spec's order."""
    rows = []
    for op, spec in OPS.items():
        names = list(spec.positional) + [n for n in options(spec) if n not in spec.positional]
        for name in names:
            info = spec.model_fields[name]
            if info.is_required():
                default = "required"
            else:
                default = "-" if info.default is None else value_to_text(info.default)
            rows.append(
                OptionRow(
                    op=op,
                    name=name,
                    positional=name in spec.positional,
                    kind=type_words(spec, name),
                    range=range_words(spec, name),
                    default=default,
                    description=info.description or "",
                )
            )
    return rows


def support_matrix() -> dict[str, dict[str, str]]:
    """``{op: {backend: what it supports}}`` from the built-in backends' static support tables
    (:func:`lwdsl.backend.support_table`), without importing any framework."""
    from ..backend import BACKENDS, support_table

    tables = {name: support_table(name) for name in BACKENDS}
    return {op: {name: t.describe(op) for name, t in tables.items() if t is not None} for op in OPS}


def print_ops(console: "Console") -> None:
    """Print the ops table (rich) to ``console``: per op, a line with its summary and backend
    support, then a table of its options. Fits 80 columns: option names and defaults are never
    split, values and meanings wrap at word boundaries."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    support = support_matrix()
    rows = option_rows()
    console.print(Text("lwdsl operations", style="bold"))
    for op, spec in OPS.items():
        backends = "; ".join(f"{b}: {what}" for b, what in support.get(op, {}).items()) or "?"
        console.print()
        console.print(Text.assemble((op, "bold"), f": {spec.summary}"))
        console.print(Text(f"backends: {backends}"))
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
        table.add_column("option", no_wrap=True)
        table.add_column("values", ratio=2, overflow="fold")
        table.add_column("default", no_wrap=True)
        table.add_column("meaning", ratio=3, overflow="fold")
        for row in (r for r in rows if r.op == op):
            name = row.name.upper() if row.positional else f"{row.name}="
            values = " ".join(part for part in (row.kind, row.range) if part)
            table.add_row(name, values, row.default, row.description)
        console.print(table)
    console.print("Bare values (UPPER CASE) fill the first field, in this order, whose type fits.")
