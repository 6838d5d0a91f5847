"""``smoothquant`` as the language reads it: fields, range of alpha, and the rule that it comes
before a ``quantize int8`` of activations and after no quantize (exit 2, located, with the step)."""

from __future__ import annotations

import pytest

import lwdsl
from lwdsl.errors import RecipeError
from lwdsl.language.validate import check_backend


def test_defaults_and_forms() -> None:
    smooth, quant = lwdsl.parse("smoothquant | quantize int8").steps
    assert (smooth.op, smooth.alpha, smooth.calibrate, smooth.forms(), smooth.layer_kinds()) == ("smoothquant", 0.5, 128, (), ("norm",))
    assert smooth.effective_selector().on == ("norm",) and not smooth.trains()
    assert lwdsl.parse("smoothquant alpha=0.8 calibrate=32 | quantize int8 mode=qat").steps[0].alpha == 0.8
    for name in ("torch", "tensorflow"):
        check_backend(lwdsl.parse("smoothquant alpha=0.5 | quantize int8"), name, load=False)


@pytest.mark.parametrize("text, says, found", [
    ("smoothquant alpha=1.5 | quantize int8", "step 1 `smoothquant alpha=1.5`: `alpha` is out of range", "alpha=1.5"),
    ("smoothquant alpha=-0.1 | quantize int8", "`alpha` is out of range", "alpha=-0.1"),
    ("smoothquant alpha=high | quantize int8", "alpha", "high"),
    ("smoothquant alpha=0.5", "step 1 `smoothquant alpha=0.5`: no quantize int8 of activations follows it", "no `quantize int8`"),
    ("smoothquant | quantize int8 weights_only", "no quantize int8 of activations follows it", "keeps float activations"),
    ("smoothquant | quantize int4", "no quantize int8 of activations follows it", "no `quantize int8`"),
    ("quantize int8 on conv | smoothquant | quantize int8 on linear", "step 2 `smoothquant`: comes after step 1 `quantize int8 on conv`",
     "step 1"),
])
def test_refusals_name_the_step_and_the_argument(text, says, found) -> None:
    with pytest.raises(RecipeError) as caught:
        lwdsl.parse(text)
    err = caught.value
    assert says in str(err) and err.exit_code == 2 and err.location is not None
    assert found in str(err)


def test_the_cli_says_it_with_exit_2(tmp_path) -> None:
    from typer.testing import CliRunner

    from lwdsl.cli.app import app

    (tmp_path / "r.lw").write_text("smoothquant alpha=2\nquantize int8\n")
    done = CliRunner().invoke(app, ["check", str(tmp_path / "r.lw")])
    assert done.exit_code == 2 and "alpha" in done.output and "Traceback" not in done.output
