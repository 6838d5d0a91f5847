"""The numbers of ``precision=``: dynamic loss scaling (fp16) and which CPUs run bf16 in hardware."""

from __future__ import annotations

import pytest

from lwdsl.semantics.precision import (
    BACKOFF_FACTOR,
    GROWTH_FACTOR,
    GROWTH_INTERVAL,
    INIT_SCALE,
    cpu_bf16_kernels,
    loss_scaled,
    next_loss_scale,
)


def test_the_loss_scale_halves_on_overflow_and_doubles_after_the_interval():
    assert (INIT_SCALE, BACKOFF_FACTOR, GROWTH_FACTOR, GROWTH_INTERVAL) == (65536.0, 0.5, 2.0, 2000)  # GradScaler's
    scale, good = INIT_SCALE, 0
    for _ in range(GROWTH_INTERVAL - 1):
        scale, good = next_loss_scale(scale, good, finite=True)
    assert (scale, good) == (INIT_SCALE, GROWTH_INTERVAL - 1)
    assert next_loss_scale(scale, good, finite=True) == (2 * INIT_SCALE, 0)
    assert next_loss_scale(scale, good, finite=False) == (INIT_SCALE / 2, 0)  # an overflow restarts the count


def test_only_fp16_scales_its_loss():
    assert [loss_scaled(p) for p in ("fp32", "bf16", "fp16")] == [False, False, True]


def test_bf16_in_hardware_needs_amx_or_avx512_bf16():
    assert cpu_bf16_kernels({"avx2", "avx512f"}) == ()
    assert cpu_bf16_kernels({"amx_bf16", "avx512_bf16", "avx2"}) == ("amx_bf16", "avx512_bf16")


def test_mixed_precision_on_several_workers_is_refused_at_the_step():
    from lwdsl.backend.precision import check_precisions
    from lwdsl.errors import RecipeError
    from lwdsl import parse

    class _Backend:
        name, device, precisions = "torch", "cpu", ("fp32", "bf16", "fp16")

    plan = parse("prune l1 0.5\nfinetune epochs=1 precision=bf16\n")
    check_precisions(plan, _Backend(), 1)  # one worker: fine
    with pytest.raises(RecipeError, match="precision=bf16 on 2 workers is not built yet") as err:
        check_precisions(plan, _Backend(), 2)
    assert err.value.location.line == 2
