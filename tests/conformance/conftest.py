"""The conformance suite needs both frameworks; without either it is skipped, with the reason."""

from __future__ import annotations

import importlib.util

import pytest

_MISSING = [name for name, module in (("torch", "torch"), ("tensorflow", "tensorflow")) if importlib.util.find_spec(module) is None]
if not _MISSING:
    import lwdsl.backends.tf_backend._tf  # noqa: F401  (imports Triton before TensorFlow: see its _tf.py)


def pytest_collection_modifyitems(config, items):
    if not _MISSING:
        return
    skip = pytest.mark.skip(reason=f"conformance needs both backends; missing: {', '.join(_MISSING)} (pip install 'lwdsl[all]')")
    for item in items:
        if "conformance" in str(item.fspath):
            item.add_marker(skip)

