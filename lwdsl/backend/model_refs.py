"""What a model reference names, read once for every backend: the widths a built-in of
:mod:`lwdsl.backend.zoo` is built at, and the ``?weights=W`` option of a framework's own
models (``torchvision:NAME``, ``keras:NAME``); the errors of a name a backend does not know and
of an input a built-in cannot take, worded once."""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

from ..errors import LwdslError, UsageError, did_you_mean
from .zoo import BUILTIN_NAMES, RESNET8_WIDTHS, TRANSFORMERS, ZOO

__all__ = ["widths_of", "weights_option", "not_among", "unknown_model", "does_not_fit"]


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


def not_among(message: str, name: str, known: Iterable[str], prefix: str = "", otherwise: Optional[str] = None) -> UsageError:
    """``message`` as a UsageError of a ``name`` not in ``known``: the hint the nearest known
    name (written ``prefix`` + it), else ``otherwise``."""
    near = did_you_mean(name, known)
    return UsageError(message, hint=f"did you mean '{prefix}{near}'?" if near else otherwise)


def unknown_model(ref: str, backend: str, others: str, also: Sequence[str] = ()) -> UsageError:
    """The error of a model reference ``backend`` cannot build: its built-ins and transformers
    listed, then its ``others`` (``or torchvision:NAME, ...``); ``also``: more names to suggest."""
    return not_among(f"unknown model '{ref}' on the {backend} backend (built-ins: {', '.join(BUILTIN_NAMES)}; "
                     f"transformers: {', '.join(TRANSFORMERS)}; or {others})", ref, [*BUILTIN_NAMES, *TRANSFORMERS, *also])


def does_not_fit(name: str, input_shape: Sequence[int], exc: Exception) -> LwdslError:
    """The error of built-in ``name`` built for inputs of ``input_shape`` (C, H, W) it cannot take."""
    return LwdslError(f"model '{name}' does not fit inputs of shape {tuple(input_shape)} (C,H,W): {exc}",
                      hint=f"{name} needs images of at least its receptive field (28x28 MNIST works)")
