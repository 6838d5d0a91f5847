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

Every public name is imported on first use (PEP 562): ``import lwdsl`` costs a few
milliseconds, the compiler (Lark, Pydantic and the specs) loads when ``lwdsl.parse`` is first
looked up, and ``lwdsl.run`` (the runner, which needs a backend) when it is. Importing lwdsl never
imports torch or tensorflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import LwdslError, RecipeError, RunError
    from .language.compiler import load, parse
    from .language.plan import LANGUAGE_VERSION, Recipe
    from .language.validate import check_backend
    from .runner.attach import attach, keras_callback
    from .runner.pipeline import run

__all__ = ["parse", "load", "check_backend", "Recipe", "LwdslError", "RecipeError", "RunError", "LANGUAGE_VERSION"]

#: Each public name -> the module it lives in. ``run``, ``attach`` and ``keras_callback`` are not
#: in ``__all__``, so ``from lwdsl import *`` stays light.
_LAZY = {
    **dict.fromkeys(("parse", "load"), ".language.compiler"),
    **dict.fromkeys(("LwdslError", "RecipeError", "RunError"), ".errors"),
    "Recipe": ".language.compiler",  # with the compiler, which registers the JSON reader of Recipe.from_json
    "LANGUAGE_VERSION": ".language.plan",
    "check_backend": ".language.validate",
    "run": ".runner.pipeline",
    **dict.fromkeys(("attach", "keras_callback"), ".runner.attach"),
}


def __getattr__(name: str) -> Any:
    """The public names, imported on first access (see the module's docstring)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'lwdsl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
