"""Mixed-precision training: what ``precision=`` means, on every backend (numpy only).

``precision=fp32|bf16|fp16`` on a step that trains (``finetune``, ``regularize``, ``distill``,
gradual ``prune``, ``quantize mode=qat``):

- ``fp32`` (the default): everything in float32; the conformance suite's promise holds.
- ``bf16``: the forward pass and the loss run in bfloat16 where the framework's autocast puts
  them (convolutions, matrix products; reductions, softmax and the loss stay float32); the
  weights the optimizer updates stay float32 (master weights), and so do the gradients it sees.
  bfloat16 has float32's exponent range: no loss scaling.
- ``fp16``: the same in float16, with **dynamic loss scaling** (float16 gradients underflow
  below 6e-8): the loss is multiplied by the scale before the backward pass and the gradients
  divided by it before the optimizer step; a step whose scaled gradients are not finite is
  skipped (the weights stay as they were) and the scale halved; after
  :data:`GROWTH_INTERVAL` finite steps in a row the scale doubles (:func:`next_loss_scale`,
  PyTorch's ``GradScaler`` defaults). float16 autocast has no fast CPU kernels in either
  framework: ``fp16`` needs a GPU and is refused on the CPU before training.

Masks are re-applied after every optimizer step whatever the precision (a skipped step leaves
the weights, so the masks, as they were). Results in bf16 or fp16 differ from float32 in
rounding: they are not part of the bit-identical promise (docs/semantics.md).

>>> next_loss_scale(INIT_SCALE, 0, finite=False)
(32768.0, 0)
>>> next_loss_scale(INIT_SCALE, GROWTH_INTERVAL - 1, finite=True)
(131072.0, 0)
"""

from __future__ import annotations

__all__ = [
    "PRECISIONS",
    "AUTOCAST",
    "INIT_SCALE",
    "GROWTH_FACTOR",
    "BACKOFF_FACTOR",
    "GROWTH_INTERVAL",
    "loss_scaled",
    "next_loss_scale",
    "CPU_BF16_FLAGS",
    "cpu_bf16_kernels",
]

#: The values of ``precision=``, the default first.
PRECISIONS = ("fp32", "bf16", "fp16")

#: precision -> the dtype autocast computes in (numpy/framework name); fp32 has no autocast.
AUTOCAST = {"bf16": "bfloat16", "fp16": "float16"}

#: Dynamic loss scaling (``fp16``): the first scale, its growth after GROWTH_INTERVAL finite
#: steps in a row, its back-off after a step whose gradients were not finite.
INIT_SCALE = 2.0**16
GROWTH_FACTOR = 2.0
BACKOFF_FACTOR = 0.5
GROWTH_INTERVAL = 2000

#: CPU feature flags (``/proc/cpuinfo``) that give bfloat16 arithmetic in hardware: AMX tiles
#: (Sapphire Rapids on) and AVX-512 BF16 (Cooper Lake, Zen 4 on). Without them bf16 is emulated
#: (converted to float32 around every operation): correct, and slower than fp32.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def loss_scaled(precision: str) -> bool:
    """Whether a step trained at ``precision`` scales its loss (fp16 only)."""
    return precision == "fp16"


def next_loss_scale(scale: float, good: int, *, finite: bool) -> tuple[float, int]:
    """The loss scale and the count of finite steps in a row after one optimizer step.

    Args:
        scale: the scale the step used.
        good: finite steps in a row before this one (since the last change of scale).
        finite: whether the step's unscaled gradients were all finite (the step was taken).

    Returns:
        (the next step's scale, the finite steps in a row now).
    """
    if not finite:
        return scale * BACKOFF_FACTOR, 0
    good += 1
    if good >= GROWTH_INTERVAL:
        return scale * GROWTH_FACTOR, 0
    return scale, good


def cpu_bf16_kernels(flags: "set[str] | frozenset[str]") -> tuple[str, ...]:
    """Which of :data:`CPU_BF16_FLAGS` a CPU with ``flags`` has (empty: bf16 is emulated).

    >>> cpu_bf16_kernels({"avx2", "avx512_bf16"})
    ('avx512_bf16',)
    """
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)
