"""lwdsl: compression recipes (pruning, quantization, distillation) for PyTorch and TensorFlow.

A recipe is text that compiles to a framework-free, validated plan:

    >>> import lwdsl
    >>> recipe = lwdsl.parse("prune global l1 0.2 | quantize int8 | distill T=2 alpha=0.5")
    >>> [step.op for step in recipe.steps]
    ['prune', 'quantize', 'distill']
    >>> print(recipe.to_text(), end="")
    prune global l1 0.2
    quantize int8
    distill T=2 alpha=0.5
    >>> lwdsl.parse(recipe.to_text()) == recipe == lwdsl.Recipe.from_json(recipe.to_json())
    True

``lwdsl.run`` (the runner, which needs a backend) is imported on first use: importing lwdsl
never imports torch or tensorflow.
"""

from __future__ import annotations

from typing import Any

from .language.compiler import load, parse
from .errors import LwdslError, RecipeError, RunError
from .language.plan import LANGUAGE_VERSION, Recipe
from .language.validate import check_backend

__all__ = ["parse", "load", "check_backend", "Recipe", "LwdslError", "RecipeError", "RunError", "LANGUAGE_VERSION"]


def __getattr__(name: str) -> Any:
    """``lwdsl.run``, ``lwdsl.attach`` and ``lwdsl.keras_callback``, imported lazily (it is not in ``__all__`` so ``import *`` stays light)."""
    if name == "run":
        from .runner.pipeline import run

        return run
    if name in ("attach", "keras_callback"):
        from .runner import attach

        return getattr(attach, name)
    raise AttributeError(f"module 'lwdsl' has no attribute {name!r}")
