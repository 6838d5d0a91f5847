"""The contract suite: every behaviour test runs once per registered backend (the ``backend``
and ``backend_name`` fixtures of tests/conftest.py, chosen with ``LWDSL_TEST_BACKENDS``).

A test here says what every backend must do, in one body; where it has to touch the framework
it asks the backend's :class:`~tests.contract.helpers.Kit` (the ``kit`` fixture), a few lines
per backend in helpers.py, never a second copy of the test. Data and contexts are numpy only
(:func:`~tests.contract.helpers.make_data`, :func:`~tests.contract.helpers.make_ctx`).
"""

from __future__ import annotations

import pytest

from .helpers import KITS, Kit


@pytest.fixture
def kit(backend, backend_name) -> Kit:
    """The framework helpers of the backend under test."""
    if backend_name not in KITS:
        pytest.skip(f"no contract kit for the {backend_name} backend (add one to tests/contract/helpers.py)")
    return KITS[backend_name](backend)
