"""The ``smoothquant`` op, written once: which norm -> linear pairs, the calibration, the core's
scales written back, and the notes.

1. The pairs (:func:`smooth_pairs`): a pre-norm transformer block's norm and the linear layers
   its output alone feeds, found by the layer names both backends give (Hugging Face's):
   ``*.input_layernorm -> *.self_attn.{q,k,v}_proj`` and ``*.post_attention_layernorm ->
   *.mlp.{gate,up}_proj`` (Llama and the models named like it: Mistral, Qwen2), and GPT-2's
   ``*.ln_1 -> *.attn.c_attn`` and ``*.ln_2 -> *.mlp.c_fc`` (a LayerNorm: its bias is divided
   by the scales too). A post-norm model (BERT: its LayerNorm output also feeds the residual)
   or a model with no such pair is refused before any step runs (:func:`pairs_refusal`), never
   skipped silently.
2. The calibration: :func:`~lwdsl.semantics.order.calibration_indices` of the training set
   (``calibrate=N``), in batches of :data:`~lwdsl.backend.calibrated.CALIBRATION_BATCH`; the
   backend hands over the input of the first linear of each pair (the norm's output, the
   model run in inference mode with float activations), and ``A_j = max |X[:, j]|`` is kept.
3. Per pair: the core's :func:`~lwdsl.semantics.smoothquant.smooth_scales` of ``A`` and the
   stacked weights' column maxima, and :func:`~lwdsl.semantics.smoothquant.smooth`'s new norm
   weight (and bias: :func:`~lwdsl.semantics.smoothquant.smooth_bias`) and linear weights,
   written back by the backend (float32, canonical layout).
4. The notes: ``smoothquant`` (alpha, the calibration examples, each norm's linears, the range
   of its scales and the largest activation channel maximum before and after).

A backend gives :class:`~lwdsl.backend.calibrated.WeightParts` (its ``QuantizeParts`` is one).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..errors import RunError
from ..semantics.smoothquant import column_absmax, smooth, smooth_bias, smooth_scales
from .calibrated import WeightParts, calibration_inputs
from .context import StepContext

__all__ = ["PRE_NORM_PAIRS", "smooth_pairs", "pairs_refusal", "smoothquant_handler"]

#: A pre-norm block's norm (the last part of its name) -> the linears (names relative to the
#: norm's parent) its output alone feeds.
PRE_NORM_PAIRS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    ("ln_1", ("attn.c_attn",)),  # GPT-2: Conv1D layers, canonical [out, in] like any linear
    ("ln_2", ("mlp.c_fc",)),
)


def smooth_pairs(layers: Sequence[Any]) -> list[tuple[str, tuple[str, ...]]]:
    """(norm, its linears) of every pre-norm pair among ``layers`` (each with ``name`` and
    ``kind``), in model order.

    >>> from types import SimpleNamespace as L
    >>> smooth_pairs([L(name="m.0.input_layernorm", kind="norm")] +
    ...              [L(name=f"m.0.self_attn.{p}_proj", kind="linear") for p in "qkv"])
    [('m.0.input_layernorm', ('m.0.self_attn.q_proj', 'm.0.self_attn.k_proj', 'm.0.self_attn.v_proj'))]
    """
    kinds = {layer.name: layer.kind for layer in layers}
    found = []
    for name, kind in kinds.items():
        if kind != "norm":
            continue
        parent, _, last = name.rpartition(".")
        for norm, linears in PRE_NORM_PAIRS:
            names = tuple(f"{parent}.{lin}" if parent else lin for lin in linears)
            if last == norm and all(kinds.get(n) == "linear" for n in names):
                found.append((name, names))
    return found


def pairs_refusal(layers: Sequence[Any], selected: Sequence[str]) -> Optional[str]:
    """Why ``smoothquant`` cannot run on a model of ``layers`` with the norms ``selected``
    (None when at least one selected norm heads a pair)."""
    pairs = smooth_pairs(layers)
    if any(norm in set(selected) for norm, _ in pairs):
        return None
    names = [layer.name for layer in layers]
    if pairs:
        return (f"the selector picks none of the {len(pairs)} norms that head a norm -> linear pair "
                f"({', '.join(norm for norm, _ in pairs[:3])}{', ...' if len(pairs) > 3 else ''})")
    if any(n.endswith(("attention.output.LayerNorm", "output.LayerNorm")) for n in names):
        return ("the model is post-norm (BERT: each LayerNorm's output feeds the next block and the residual), so "
                "its scale cannot move into the next linears without changing the model; smoothquant works on "
                "pre-norm decoders (tiny-llama, tiny-gpt2 and Llama-style or GPT-2 Hugging Face models)")
    return ("the model has no pre-norm transformer pair (input_layernorm -> q/k/v_proj, post_attention_layernorm -> "
            "gate/up_proj; GPT-2's ln_1 -> attn.c_attn, ln_2 -> mlp.c_fc): smoothquant is for pre-norm language "
            "models (Llama-style, GPT-2)")


def _act_absmax(parts: WeightParts, handle: Any, taps: Sequence[str], count: int, ctx: StepContext) -> tuple[dict, int]:
    """``max |X[:, j]|`` of each tap's input over the calibration examples (float32)."""
    seen: dict[str, np.ndarray] = {}

    def visit(name: str, inputs: np.ndarray) -> None:
        top = np.max(np.abs(inputs.reshape(-1, inputs.shape[-1])), axis=0)
        seen[name] = top if name not in seen else np.maximum(seen[name], top)

    examples = calibration_inputs(parts, handle, taps, count, ctx, "smoothquant", visit)
    for name, top in seen.items():
        if not np.isfinite(top).all():
            raise RunError(f"step {ctx.index + 1} (smoothquant): calibration saw a NaN or infinite input of {name}")
    return seen, examples


def smoothquant_handler(parts: WeightParts) -> Callable[..., Any]:
    """The ``smoothquant`` handler over a backend's :class:`WeightParts`."""

    def smoothquant(handle: Any, spec: Any, layers: Sequence[str], ctx: StepContext) -> Any:
        chosen = set(layers)
        pairs = [(norm, linears) for norm, linears in smooth_pairs(ctx.backend.layers(handle)) if norm in chosen]
        if not pairs:  # the runner refuses this before any step; a direct call says it too
            raise RunError(f"step {ctx.index + 1} (smoothquant): "
                           f"{pairs_refusal(ctx.backend.layers(handle), layers)}")
        held = getattr(handle, "quant", None) or {}
        coded = [name for norm, linears in pairs for name in linears if name in held]
        if coded:  # a model read with codes (a compressed-tensors folder): rescaling would break them
            raise RunError(f"step {ctx.index + 1} (smoothquant): {len(coded)} of the linear layers it would rescale hold "
                           f"integer codes already ({', '.join(coded[:3])}{', ...' if len(coded) > 3 else ''})",
                           hint="smoothquant a float model, before its quantize int8")
        absmax, examples = _act_absmax(parts, handle, [linears[0] for _, linears in pairs], spec.calibrate, ctx)
        notes: dict[str, Any] = {}
        for norm, linears in pairs:
            weights = [parts.weight(handle, name) for name in linears]
            a = absmax[linears[0]]
            s = smooth_scales(a, column_absmax(weights), spec.alpha)
            g, smoothed = smooth(parts.weight(handle, norm), weights, s)
            parts.set_weight(handle, norm, g)
            beta = parts.norm_bias(handle, norm)
            if beta is not None:  # a LayerNorm (GPT-2): n(x) g / s + b / s
                parts.set_norm_bias(handle, norm, smooth_bias(beta, s))
            for name, w in zip(linears, smoothed):
                parts.set_weight(handle, name, w)
            notes[norm] = {"linears": list(linears), "scale_min": float(s.min()), "scale_max": float(s.max()),
                           "act_absmax": float(a.max()), "act_absmax_after": float((a / s).max())}
        ctx.notes["smoothquant"] = {"alpha": spec.alpha, "examples": examples, "pairs": notes}
        return handle

    return smoothquant
