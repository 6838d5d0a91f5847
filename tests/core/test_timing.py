"""The one timing protocol (lwdsl.backend.timing): how many calls, which input."""

import numpy as np

from lwdsl.backend.timing import Protocol, fixed_input, median_ms


def test_warmup_and_minimum_runs_are_called_even_with_no_budget():
    calls = []
    median_ms(lambda: calls.append(1), Protocol(warmup=2, min_runs=5, max_runs=50, budget_s=0.0))
    assert len(calls) == 2 + 5


def test_runs_stop_at_max_runs_whatever_the_budget():
    calls = []
    median_ms(lambda: calls.append(1), Protocol(warmup=0, min_runs=1, max_runs=7, budget_s=60.0))
    assert len(calls) == 7


def test_fixed_input_is_the_same_values_every_call_and_float32():
    a, b = fixed_input(4, (1, 5, 5)), fixed_input(4, (1, 5, 5))
    assert a.dtype == np.float32 and a.shape == (4, 1, 5, 5)
    assert np.array_equal(a, b) and a.std() > 0.5
