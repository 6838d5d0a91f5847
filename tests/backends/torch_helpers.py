"""Helpers shared by the torch backend tests (no tests here): small data, a step context
whose progress bars record what they were told, and quick model handles.

Importing this module skips the importing test module when the torch backend is not selected
(``LWDSL_TEST_BACKENDS``) or torch is not installed, so test modules import it before torch.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from lwdsl.backend import Dataset, StepContext

if "torch" not in [b.strip() for b in os.environ.get("LWDSL_TEST_BACKENDS", "torch,tensorflow").split(",")]:
    pytest.skip("the torch backend is not selected (LWDSL_TEST_BACKENDS)", allow_module_level=True)
pytest.importorskip("torch", reason="torch not installed (pip install 'lwdsl[torch]')")

pytestmark = pytest.mark.torch


class Bar:
    def __init__(self, log: list, total: int, description: str) -> None:
        self.log, self.total, self.description, self.done, self.closed = log, total, description, 0, False
        log.append(self)

    def update(self, n: int = 1) -> None:
        self.done += n

    def close(self) -> None:
        self.closed = True


def make_data(shape=(1, 28, 28), classes: int = 10, n_train: int = 256, n_test: int = 128, seed: int = 0) -> Dataset:
    """Random images whose label is a fixed linear function of the pixels (learnable)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, *shape), dtype=np.float32)
    proj = rng.standard_normal((int(np.prod(shape)), classes)).astype(np.float32)
    y = np.argmax(x.reshape(len(x), -1) @ proj, axis=1).astype(np.int64)
    return Dataset("synthetic", x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes)


def make_ctx(data: Dataset | None = None, seed: int = 0, index: int = 0) -> StepContext:
    log: list[Bar] = []
    ctx = StepContext(data=data or make_data(), seed=seed, index=index, progress=lambda t, d: Bar(log, t, d))
    ctx.extra["bars"] = log
    return ctx


def torch_backend():
    from lwdsl.backend import get_backend

    return get_backend("torch")
