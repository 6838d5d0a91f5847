"""lwdsl.semantics.forms: the one table of quantize forms, and every list of forms derived from it."""

from __future__ import annotations

import doctest
from typing import get_args

import pytest

from lwdsl.semantics import forms as F


def test_docstring_examples_run():
    result = doctest.testmod(F)
    assert result.attempted and not result.failed


def test_the_lists_the_code_had_by_hand_come_out_of_the_table():
    """The lists as they were written by hand before the table (order included)."""
    assert F.NAMES == ("int8", "int4", "int2", "ternary", "binary", "cluster", "fp16", "bf16", "auto")
    assert list(F.FORM_BITS.items()) == [("int8", 8), ("int4", 4), ("int2", 2), ("ternary", 2), ("binary", 1)]
    assert F.LOW_BIT == ("int4", "int2", "ternary", "binary", "cluster")
    assert F.HALF_FORMS == {"fp16": 16, "bf16": 16} and F.CASTS == ("fp16", "bf16")
    assert F.AUTO_TRIALS == (("binary", 1), ("int2", 2), ("int4", 4), ("int8", 8))
    assert F.TRIAL_FORMS == ("binary", "int2", "int4", "int8")
    assert F.EXPORT_HOLDS == {"onnx": ("int8", "fp16", "bf16"), "pt2e": ("int8",), "tflite": ("int8", "fp16")}
    assert F.STEP_FORMS == (
        tuple(f"int8/{m}" for m in ("dynamic", "static", "qat", "weights_only"))
        + tuple(f"{d}/{m}" for d in ("int4", "int2", "ternary", "binary", "cluster") for m in ("qat", "weights_only"))
        + ("fp16", "bf16", "auto")
    )


def test_every_user_reads_the_table():
    from lwdsl.semantics import auto_bits, casts, codes, quant
    from lwdsl.language.specs import QuantizeSpec
    from lwdsl.language.specs import quantize as spec

    assert codes.FORM_BITS is F.FORM_BITS and quant.FORM_BITS is F.FORM_BITS
    assert casts.HALF_FORMS is F.HALF_FORMS and quant.HALF_FORMS is F.HALF_FORMS
    assert spec.LOW_BIT is F.LOW_BIT and spec.EXPORT_HOLDS is F.EXPORT_HOLDS
    assert QuantizeSpec.FORMS == F.STEP_FORMS + F.WEIGHT_METHODS and F.WEIGHT_METHODS == ("gptq", "group", "full_grid")
    assert get_args(QuantizeSpec.model_fields["dtype"].annotation) == F.NAMES
    assert auto_bits.TRIAL_FORMS == F.TRIAL_FORMS and auto_bits.CANDIDATES[:-1] == F.AUTO_TRIALS


@pytest.mark.parametrize("table", ["torch_backend", "tf_backend"])
def test_backend_support_tables_list_the_tables_forms(table):
    import importlib

    from lwdsl.language.specs import QuantizeSpec

    support = importlib.import_module(f"lwdsl.backends.{table}.support").SUPPORT
    assert support.runs["quantize"] is QuantizeSpec.FORMS  # every form, method=gptq and group= on both (issue 25)


def test_each_row_is_consistent():
    for f in F.FORMS:
        assert f.low_bit == (f.kind in ("integer", "ternary", "binary", "cluster") and (f.bits or 0) < 8)
        assert f.cast == (f.bits == 16)
        assert f.zero_code == (f.kind != "binary")
        assert not f.auto_trial or f.name in F.FORM_BITS
        assert all(m in ("dynamic", "static", "qat", "weights_only") for m in f.modes)
        assert F.form(f.name) is f
    with pytest.raises(ValueError, match="unknown quantize form 'int3'"):
        F.form("int3")


def test_forms_module_imports_nothing():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(F.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert imported <= {"__future__", "dataclasses", "typing"}
