"""Which of a model's layers a selector picks: by portable kind or by glob on layer names.

Framework-free: it works on :class:`~lwdsl.backend.LayerInfo` records (name, kind, ...) that a
backend lists. Matching no layer is always an error, never a silent no-op, and so is a count
that contradicts ``expect=N`` / ``expect>=N``, a quoted name or glob (in ``on`` or ``except``)
that matches no layer of the model, and an ``except`` glob that removes none of the layers
``on`` picked (``except "lm_head"`` must keep the head dense, or say why it cannot). Kinds
are categories (``on conv, linear`` on a model without convolutions is fine) and are not held
to this.
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

    text = selector_to_text(selector) or "an empty selector"
    _check_globs(selector, layers, text, step_label, location)
    picked = [
        layer.name
        for layer in layers
        if any(_matches(p, layer) for p in selector.on) and not any(_matches(p, layer) for p in selector.except_)
    ]
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


def _check_globs(selector: Selector, layers: Sequence["LayerInfo"], text: str, step_label: str,
                 location: Optional[Location]) -> None:
    """Refuse a quoted name or glob that matches no layer of the model, and an ``except`` glob
    that removes none of the layers ``on`` picked: either would be silently ignored."""
    from .formatter import selector_to_text

    for keyword, patterns in (("on", selector.on), ("except", selector.except_)):
        for p in patterns:
            if not isinstance(p, Glob) or any(_matches(p, layer) for layer in layers):
                continue
            near = _near_names(p.glob, layers)
            own = f'{keyword} "{p.glob}"'
            raise RecipeError(
                f"{step_label}: `{own}` matches no layer of the model" + (f" (in `{text}`)" if own != text else ""),
                location,
                found=f'"{p.glob}"',
                expected=f"a selector matching some of: {layer_list(list(layers))}",
                hint=(f"did you mean {near}? " if near else "") + 'a glob matches whole names: "model.layers.*.mlp.*", "*q_proj"',
            )
    on_only = selector.model_copy(update={"except_": ()})
    picked = [layer for layer in layers if any(_matches(p, layer) for p in on_only.on)]
    for p in selector.except_:
        if isinstance(p, Glob) and not any(_matches(p, layer) for layer in picked):
            raise RecipeError(
                f'{step_label}: `except "{p.glob}"` removes nothing: `{selector_to_text(on_only) or "on"}` does not pick '
                f"the layers it matches (in `{text}`)",
                location,
                found=layer_list([layer for layer in layers if _matches(p, layer)]),
                expected=f"a name or glob among the picked layers: {layer_list(picked)}",
                hint="drop the except, or widen on",
            )


def _near_names(glob: str, layers: Sequence["LayerInfo"]) -> str:
    """A quoted layer name close to ``glob`` (or '')."""
    from ..errors import did_you_mean

    near = did_you_mean(glob, [layer.name for layer in layers])
    return f'"{near}"' if near else ""
