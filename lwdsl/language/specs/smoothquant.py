"""``smoothquant``: move activation outliers into the weights before int8 activations.

SmoothQuant (Xiao et al. 2023) on every norm -> linear pair of a pre-norm transformer (Llama's
``input_layernorm -> q_proj, k_proj, v_proj`` and ``post_attention_layernorm -> gate_proj,
up_proj``): calibrated on ``calibrate=N`` training examples (default 128), each input channel
``j`` gets ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``; the norm's weight is divided by
``s`` and the following linears' input columns multiplied by it, which leaves the float model
unchanged (:mod:`lwdsl.semantics.smoothquant`). It prepares a ``quantize int8`` that quantizes
activations (the default ``mode=static``), which must come after it; a selector picks norms
(``on norm``, the default: every pair).
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field

from .base import StepSpec

__all__ = ["SmoothQuantSpec"]


class SmoothQuantSpec(StepSpec):
    """Scale each norm -> linear pair so that int8 activations lose less (a float identity).

    Example: ``smoothquant alpha=0.5 | quantize int8``, ``smoothquant alpha=0.8 calibrate=64``.
    """

    positional: ClassVar[tuple[str, ...]] = ()
    default_kinds: ClassVar[tuple[str, ...]] = ("norm",)
    summary: ClassVar[str] = "SmoothQuant: move LLM activation outliers into the weights before int8"

    op: Literal["smoothquant"] = "smoothquant"
    alpha: float = Field(default=0.5, ge=0, le=1,
                         description="migration strength in [0, 1]: s_j = max|X_j|^alpha / max|W_j|^(1-alpha)")
    calibrate: int = Field(default=128, ge=1, le=65_536, description="training examples the activation maxima are taken on")

    def layer_kinds(self) -> Optional[tuple[str, ...]]:
        return ("norm",)  # the pairs are found from their norms
