"""Which of a model's layers a selector picks: by portable kind or by glob on layer names.

Framework-free: it works on :class:`~lwdsl.backend.LayerInfo` records (name, kind, ...) that a
backend lists. Matching no layer is always an error, never a silent no-op, and so is a count
that contradicts ``expect=N`` / ``expect>=N``.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Optional, Sequence, Union

from ..errors import Location, RecipeError
from .specs import Glob, Selector

if TYPE_CHECKING:
    from ..backend import LayerInfo

__all__ = ["match_layers", "layer_list"]

Pattern = Union[str, Glob]


def _matches(pattern: Pattern, layer: "LayerInfo") -> bool:
    if isinstance(pattern, Glob):
        return fnmatch.fnmatchcase(layer.name, pattern.glob)
    return pattern == "all" or layer.kind == pattern


def layer_list(layers: Sequence["LayerInfo"], limit: int = 12) -> str:
    """``conv1 (conv), fc1 (linear), ... and 7 more`` (or ``no layers with weights``)."""
    shown = ", ".join(f"{layer.name} ({layer.kind})" for layer in layers[:limit])
    more = f" ... and {len(layers) - limit} more" if len(layers) > limit else ""
    return shown + more if layers else "no layers with weights"


def match_layers(
    selector: Selector,
    layers: Sequence["LayerInfo"],
    *,
    step_label: str,
    location: Optional[Location] = None,
) -> list[str]:
    """The names of the layers ``selector`` picks, in model order.

    A layer is picked when an ``on`` pattern matches it and no ``except`` pattern does. Kinds
    match :attr:`LayerInfo.kind` (``all`` matches every layer); quoted globs match names with
    :func:`fnmatch.fnmatchcase`.

    Args:
        selector: the step's selector (``step.effective_selector()``).
        layers: the model's layers with weights, in model order (``backend.layers(model)``).
        step_label: how errors name the step (see :func:`lwdsl.language.validate.step_label`).
        location: where the step was written, if known.

    Returns:
        Layer names, in the order of ``layers``.

    Raises:
        RecipeError: no layer matches, or the count contradicts ``expect``.

    Example:
        >>> from lwdsl.backend import LayerInfo
        >>> layers = [LayerInfo("conv1", "conv", (6, 1, 5, 5), 156), LayerInfo("fc1", "linear", (10, 84), 850)]
        >>> match_layers(Selector(on=("all",), **{"except": (Glob(glob="fc*"),)}), layers, step_label="step 1")
        ['conv1']
    """
    from .formatter import selector_to_text

    picked = [
        layer.name
        for layer in layers
        if any(_matches(p, layer) for p in selector.on) and not any(_matches(p, layer) for p in selector.except_)
    ]
    text = selector_to_text(selector) or "an empty selector"
    if not picked:
        raise RecipeError(
            f"{step_label}: `{text}` matches no layer of the model",
            location,
            found="no layer",
            expected=f"a selector matching some of: {layer_list(layers)}",
            hint='kinds are conv, linear, embedding, norm, all; quote a glob to match names: on "features.*"',
        )
    want = selector.expect
    if want is not None and (len(picked) < want if selector.expect_at_least else len(picked) != want):
        raise RecipeError(
            f"{step_label}: `{text}` matches {len(picked)} layer{'s' if len(picked) != 1 else ''}",
            location,
            found=layer_list([layer for layer in layers if layer.name in set(picked)]),
            expected=f"{'at least' if selector.expect_at_least else 'exactly'} {want}",
        )
    return picked
