"""Every recipe in recipes/ passes `lwdsl check` (one CLI call, as a user would run it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.lw"))


def test_lwdsl_check_passes_on_every_recipe() -> None:
    assert RECIPES
    code = "from lwdsl.cli.app import main; main()"
    args = [str(p.relative_to(ROOT)) for p in RECIPES]
    result = subprocess.run([sys.executable, "-c", code, "check", *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok: ") == len(RECIPES)
