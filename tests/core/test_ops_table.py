"""`lwdsl ops` rows come from the specs."""

from __future__ import annotations

import subprocess
import sys

from rich.console import Console

from lwdsl.cli.ops_table import option_rows, print_ops, support_matrix
from lwdsl.language.specs import OPS


def test_every_option_of_every_op_has_a_row() -> None:
    rows = option_rows()
    every = {(op, n) for op, spec in OPS.items() for n in spec.model_fields if n not in ("op", "selector")}
    assert {(r.op, r.name) for r in rows} == every
    amount = next(r for r in rows if (r.op, r.name) == ("prune", "amount"))
    assert (amount.positional, amount.kind, amount.range, amount.default) == (True, "a number or auto", ">= 0", "-")
    dtype = next(r for r in rows if (r.op, r.name) == ("quantize", "dtype"))
    assert dtype.default == "required" and "int8" in dtype.kind


def test_support_is_static() -> None:
    matrix = support_matrix()
    assert matrix["export"]["torch"].startswith("torch, onnx, pt2e, hf (onnx: int8 QDQ")
    assert matrix["export"]["tensorflow"].startswith("keras, saved_model, tflite, hf (tflite: float32, int8")
    assert matrix["prune"] == {"torch": "all forms", "tensorflow": "all forms"}  # wanda/sparsegpt too (issue 25)
    assert matrix["quantize"]["torch"].startswith("all forms (")
    assert matrix["quantize"]["tensorflow"].startswith("all forms (")  # gptq and group too (issue 25)
    assert "method=gptq and group= too" in matrix["quantize"]["tensorflow"]
    assert matrix["distill"] == {"torch": "all forms", "tensorflow": "all forms"}
    assert matrix["smoothquant"]["torch"] == matrix["smoothquant"]["tensorflow"] == (
        "yes (pre-norm pairs: Llama-style (input_layernorm -> q/k/v_proj, post_attention_layernorm -> gate/up_proj) "
        "and GPT-2 (ln_1 -> attn.c_attn, ln_2 -> mlp.c_fc))")
    code = "import sys; from lwdsl.cli.ops_table import support_matrix; support_matrix(); print('torch' in sys.modules, 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_table_prints() -> None:
    console = Console(record=True, width=240)
    print_ops(console)
    text = console.export_text()
    assert "prune" in text and "AMOUNT" in text and "calibrate=" in text
    assert "torch: torch, onnx, pt2e, hf (onnx: int8 QDQ" in text and "tensorflow: keras, saved_model, tflite, hf (tflite:" in text
