"""The amounts ``prune auto`` measures every layer at; its cap is the last (numpy-free, so the
language side can check ``prune auto AMOUNT`` without importing :mod:`lwdsl.semantics.allocation`)."""

AUTO_GRID: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
