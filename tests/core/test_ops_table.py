"""`lwdsl ops` rows come from the specs."""

from __future__ import annotations

from rich.console import Console

from lwdsl.ops_table import option_rows, print_ops, support_matrix
from lwdsl.specs import OPS


def test_every_option_of_every_op_has_a_row() -> None:
    rows = option_rows()
    every = {(op, n) for op, spec in OPS.items() for n in spec.model_fields if n not in ("op", "selector")}
    assert {(r.op, r.name) for r in rows} == every
    amount = next(r for r in rows if (r.op, r.name) == ("prune", "amount"))
    assert (amount.positional, amount.kind, amount.range, amount.default) == (True, "a number", ">= 0", "-")
    dtype = next(r for r in rows if (r.op, r.name) == ("quantize", "dtype"))
    assert dtype.default == "required" and "int8" in dtype.kind


def test_support_is_static() -> None:
    assert support_matrix()["export"] == {"torch": "onnx, torch", "tensorflow": "tflite, saved_model, keras"}


def test_table_prints() -> None:
    console = Console(record=True, width=240)
    print_ops(console)
    text = console.export_text()
    assert "prune" in text and "AMOUNT" in text and "calibrate=" in text
    assert "torch: onnx, torch; tensorflow: tflite, saved_model, keras" in text
