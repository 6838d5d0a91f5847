"""``prune auto ... of=``: bad values refused by ``lwdsl check`` (exit 2, did-you-mean)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lwdsl.cli.app import app
from lwdsl.language.specs import PruneSpec


@pytest.mark.parametrize("text, words", [
    ("prune auto 75% of=mac", ["`of` must be weights, macs, or flops", "did you mean `macs`?"]),
    ("prune auto 75% of=flop", ["did you mean `flops`?"]),
    ("prune l1 50% of=macs", ["of= goes only with prune auto"]),
    ("prune auto 100% of=macs", ["a fraction below 1"]),
    ("prune auto 75% of=macs structured=filters", ["removes whole filters itself"]),
])
def test_bad_of_is_refused_with_exit_2(tmp_path, text, words):
    recipe = tmp_path / "r.lw"
    recipe.write_text(text + "\n")
    result = CliRunner().invoke(app, ["check", str(recipe)])
    assert result.exit_code == 2
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    for word in words:
        assert word in out, out
    assert "Traceback" not in out


def test_of_defaults_to_weights_and_takes_macs_and_flops():
    assert PruneSpec(method="auto", amount=0.7).of == "weights"
    assert PruneSpec(method="auto", amount=0.75, of="flops").of == "flops"
    assert PruneSpec(method="auto", amount=0.99, of="macs").amount == 0.99  # the 98% cap is the weights' grid
