"""The sizes of a transformer built from a config (``tiny-llama?layers=4&hidden=256``), read and
checked once for every backend, from the core's table (:data:`lwdsl.backend.zoo.TRANSFORMERS`)."""

from __future__ import annotations

from ..errors import UsageError
from .zoo import TRANSFORMERS

__all__ = ["transformer_sizes"]


def transformer_sizes(name: str, query: str) -> dict[str, int]:
    """The sizes of ``name?query`` (``query``: ``key=value&...``), checked: positive integers of
    the model's own keys, ``hidden`` a multiple of ``heads`` (Llama's rotary positions also need
    an even size per head).

    >>> transformer_sizes("tiny-llama", "layers=4&hidden=256")["hidden"]
    256
    """
    sizes = dict(TRANSFORMERS[name])
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if key not in sizes or not eq or not value.isdigit() or int(value) < 1:
            raise UsageError(f"{name}?{query}: '{part}' is not a size of {name}",
                             hint=f"sizes are positive integers: {', '.join(f'{k}={v}' for k, v in TRANSFORMERS[name].items())}")
        sizes[key] = int(value)
    if sizes["hidden"] % sizes["heads"]:
        raise UsageError(f"{name}?{query}: hidden={sizes['hidden']} is not a multiple of heads={sizes['heads']}")
    if name == "tiny-llama" and (sizes["hidden"] // sizes["heads"]) % 2:
        raise UsageError(f"{name}?{query}: hidden={sizes['hidden']} / heads={sizes['heads']} is odd: rotary positions "
                         "rotate pairs, so each head needs an even size")
    return sizes
