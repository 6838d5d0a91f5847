"""Every recipe in recipes/ passes `lwdsl check` on both backends, and every one in
recipes/torch-only/ on torch (one CLI call each, as a user would run it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.lw"))
TORCH_ONLY = sorted((ROOT / "recipes" / "torch-only").glob("*.lw"))


@pytest.mark.parametrize("backend, recipes", [("torch", RECIPES + TORCH_ONLY), ("tensorflow", RECIPES)])
def test_lwdsl_check_passes_on_every_recipe(backend, recipes) -> None:
    assert recipes
    code = "from lwdsl.cli.app import main; main()"
    args = [str(p.relative_to(ROOT)) for p in recipes]
    result = subprocess.run([sys.executable, "-c", code, "check", "--backend", backend, *args], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok: ") == len(recipes)


@pytest.mark.skipif(not TORCH_ONLY, reason="no recipe in recipes/torch-only/ now: every shipped recipe runs on both backends")
def test_a_torch_only_recipe_is_refused_on_tensorflow_with_the_reason() -> None:
    code = "from lwdsl.cli.app import main; main()"
    for recipe in TORCH_ONLY:
        result = subprocess.run([sys.executable, "-c", code, "check", "--backend", "tensorflow", str(recipe)], cwd=ROOT,
                                capture_output=True, text=True)
        assert result.returncode == 2 and ("the tensorflow backend cannot run" in result.stderr
                                           or "the tensorflow backend cannot build it" in result.stderr), result.stderr
