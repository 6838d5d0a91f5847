"""The conformance suite needs both frameworks; without either it is skipped, with the reason."""

from __future__ import annotations

import importlib.util

import pytest

_MISSING = [name for name, module in (("torch", "torch"), ("tensorflow", "tf_keras")) if importlib.util.find_spec(module) is None]
if not _MISSING:
    import lwdsl.backends.tf_backend._tf  # noqa: F401  (imports Triton before TensorFlow: see its _tf.py)


def pytest_collection_modifyitems(config, items):
    if not _MISSING:
        return
    skip = pytest.mark.skip(reason=f"conformance needs both backends; missing: {', '.join(_MISSING)} (pip install 'lwdsl[all]')")
    for item in items:
        if "conformance" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _deterministic_kernels():
    """Deterministic kernels where the frameworks offer them: the same run gives the same
    numbers on one CPU (cross-CPU and cross-framework rounding is what the cases measure)."""
    if _MISSING:
        yield
        return
    import torch

    from lwdsl.backends.tf_backend._tf import tf

    torch.use_deterministic_algorithms(True)
    tf.config.experimental.enable_op_determinism()
    yield
    torch.use_deterministic_algorithms(False)
