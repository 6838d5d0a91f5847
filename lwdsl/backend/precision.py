"""Mixed precision across a run (``precision=`` on the steps that train): where each precision
may run, checked before anything trains, and what the report says of it.

What the precisions mean (autocast dtypes, float32 master weights, loss scaling) is
:mod:`lwdsl.semantics.precision`; a backend's trainer applies them inside its optimizer step
(``train.py`` in each backend package) and lists the ones it runs in
:attr:`lwdsl.backend.Backend.precisions`.

- ``fp16`` needs a GPU: on the CPU it is refused (exit 2) before any work, naming the step.
- ``bf16`` runs everywhere; on the CPU the report says whether the CPU computes bfloat16 in
  hardware (AMX, AVX-512 BF16: :data:`~lwdsl.semantics.precision.CPU_BF16_FLAGS`) or emulates it
  (correct, slower than fp32: a warning in the step's row).
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import RecipeError
from ..language.plan import Recipe
from ..semantics.precision import cpu_bf16_kernels
from .threads import cpu_flags

__all__ = ["device_kind", "step_precisions", "check_precisions", "bf16_on_cpu", "precision_warning", "precision_info"]


def device_kind(device: str) -> str:
    """``cpu``, ``cuda`` or ``mps`` of a resolved device (``cuda:1`` -> ``cuda``)."""
    return device.partition(":")[0]


def step_precisions(recipe: Recipe) -> dict[int, str]:
    """Step index -> the precision it trains in, for every step that trains."""
    return {i: opts.precision for i, opts in ((i, s.training_options()) for i, s in enumerate(recipe.steps)) if opts is not None}


def check_precisions(recipe: Recipe, backend: Any, world: int = 1) -> None:
    """Refuse, before any work, a step whose precision cannot run on ``backend`` at its device:
    ``fp16`` on the CPU, a precision the backend does not list, or bf16/fp16 on several
    workers (not built yet) (a RecipeError, exit 2, at the step)."""
    from ..language.validate import step_label

    device = str(getattr(backend, "device", "cpu"))
    runs = tuple(getattr(backend, "precisions", ("fp32",)))
    for i, precision in step_precisions(recipe).items():
        if precision != "fp32" and world > 1:
            raise RecipeError(
                f"{step_label(recipe, i)}: precision={precision} on {world} workers is not built yet "
                "(the sharded step trains in float32)",
                recipe.location(i),
                expected="precision=fp32 with --workers, or one worker",
            )
        if precision not in runs:
            raise RecipeError(
                f"{step_label(recipe, i)}: the {backend.name} backend trains in {', '.join(runs)} only, not precision={precision}",
                recipe.location(i),
                expected=f"precision={' or precision='.join(runs)}",
            )
        if precision == "fp16" and device_kind(device) == "cpu":
            raise RecipeError(
                f"{step_label(recipe, i)}: precision=fp16 needs a GPU, and this run trains on the CPU "
                "(float16 autocast has no fast CPU kernels, and its loss scaling exists for GPU half precision)",
                recipe.location(i),
                found="precision=fp16, --device cpu" if device == "cpu" else "precision=fp16",
                expected="precision=bf16 (autocast on the CPU) or fp32, or --device cuda on a machine with a GPU",
            )


def bf16_on_cpu(flags: Optional[frozenset[str]] = None) -> str:
    """How this CPU runs bfloat16: ``native (amx_bf16, avx512_bf16)`` or ``emulated (...)``."""
    found = cpu_bf16_kernels(cpu_flags() if flags is None else flags)
    if found:
        return f"native ({', '.join(found)})"
    return "emulated (the CPU has neither AMX-BF16 nor AVX-512 BF16: correct, and slower than fp32)"


def precision_warning(precision: str, device: str, flags: Optional[frozenset[str]] = None) -> Optional[str]:
    """What a step trained at ``precision`` on ``device`` warns of: bf16 emulated on this CPU."""
    if precision != "bf16" or device_kind(device) != "cpu":
        return None
    how = bf16_on_cpu(flags)
    if how.startswith("native"):
        return None
    return f"precision=bf16 on this CPU is {how}"


def precision_info(recipe: Recipe, device: str, flags: Optional[frozenset[str]] = None) -> dict[str, str]:
    """The report's ``device`` entries for precision: ``precision`` (``fp32``, or each precision
    with its steps: ``bf16 (step 2); fp32 (steps 1, 3)``) and, when a step trains in bf16 on the
    CPU, ``bf16_cpu`` (:func:`bf16_on_cpu`)."""
    per = step_precisions(recipe)
    used = sorted(set(per.values()) | {"fp32"}, key=("bf16", "fp16", "fp32").index)
    if used == ["fp32"]:
        out = {"precision": "fp32"}
    else:
        parts = []
        for p in used:
            steps = [i + 1 for i, q in per.items() if q == p]
            if steps:
                parts.append(f"{p} (step{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))})")
        out = {"precision": "; ".join(parts)}
    if "bf16" in per.values() and device_kind(device) == "cpu":
        out["bf16_cpu"] = bf16_on_cpu(flags)
    return out
