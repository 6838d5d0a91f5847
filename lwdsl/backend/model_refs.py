"""What a model reference names, read once for every backend: the widths a built-in of
:mod:`lwdsl.backend.zoo` is built at, and the ``?weights=W`` option of a framework's own
models (``torchvision:NAME``, ``keras:NAME``)."""

from __future__ import annotations

from typing import Mapping, Optional

from ..errors import UsageError
from .zoo import RESNET8_WIDTHS, ZOO

__all__ = ["widths_of", "weights_option"]


def widths_of(name: str, widths: Optional[Mapping[str, int]] = None) -> dict[str, int]:
    """The widths built-in ``name`` is built at: ``widths`` over its defaults (a model whose
    filters were removed is built again at its smaller widths).

    Raises:
        UsageError: a layer the model has no width for.
    """
    named = dict(RESNET8_WIDTHS) if name == "resnet8" else {s[1]: s[2] for s in ZOO[name] if s[0] in ("conv", "dense") and s[2] is not None}
    unknown = set(widths or {}) - set(named)
    if unknown:
        raise UsageError(f"{name} has no layer '{sorted(unknown)[0]}' with a width", hint=f"widths: {', '.join(named)}")
    return {**named, **(widths or {})}


def weights_option(prefix: str, ref: str, example: str) -> tuple[str, Optional[str]]:
    """(name, pretrained weights or None) of ``NAME`` or ``NAME?weights=W`` (``torchvision:``,
    ``keras:`` models); any other option is refused."""
    name, _, query = ref.partition("?")
    if not query:
        return name, None
    key, eq, weights = query.partition("=")
    if key != "weights" or not eq or not weights:
        raise UsageError(f"{prefix}:{name}?{query}: the one option is ?weights=NAME (e.g. ?weights={example})")
    return name, weights
