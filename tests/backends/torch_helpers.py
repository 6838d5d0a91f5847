"""Helpers shared by the torch backend tests (no tests here): small data, a step context
whose progress bars record what they were told, and quick model handles.

Importing this module skips the importing test module when the torch backend is not selected
(``LWDSL_TEST_BACKENDS``) or torch is not installed, so test modules import it before torch.
"""

from __future__ import annotations

import os

import pytest

from lwdsl.backend import Dataset, StepContext

if "torch" not in [b.strip() for b in os.environ.get("LWDSL_TEST_BACKENDS", "torch,tensorflow").split(",")]:
    pytest.skip("the torch backend is not selected (LWDSL_TEST_BACKENDS)", allow_module_level=True)
pytest.importorskip("torch", reason="torch not installed (pip install 'lwdsl[torch]')")

pytestmark = pytest.mark.torch


from tests.contract.helpers import Bar, make_data  # noqa: E402  one copy, shared with the contract suite


def make_ctx(data: Dataset | None = None, seed: int = 0, index: int = 0) -> StepContext:
    log: list[Bar] = []
    ctx = StepContext(data=data or make_data(), seed=seed, index=index, progress=lambda t, d: Bar(log, t, d))
    ctx.extra["bars"] = log
    return ctx


def torch_backend():
    from lwdsl.backend import get_backend

    return get_backend("torch")
