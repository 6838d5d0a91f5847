"""Shared fixtures.

Backend tests are chosen with ``LWDSL_TEST_BACKENDS`` (comma-separated, default
``torch,tensorflow``); a listed backend whose framework is missing is skipped with the reason.
Real data comes from ``LWDSL_DATA`` (CI points it at ../shared/data); tests that need it skip
when it is absent.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:  # as `lwdsl` sets them
    os.environ.update(OMP_WAIT_POLICY="PASSIVE", GOMP_SPINCOUNT="10000")  # (lwdsl/backend/threads.py): no spinning on a busy CI machine

ROOT = Path(__file__).resolve().parents[1]
_FRAMEWORK = {"torch": "torch", "tensorflow": "tensorflow"}


def selected_backends() -> list[str]:
    raw = os.environ.get("LWDSL_TEST_BACKENDS", "torch,tensorflow")
    return [b.strip() for b in raw.split(",") if b.strip()]


if "tensorflow" in selected_backends() and importlib.util.find_spec("tensorflow") is not None:
    # One process runs both frameworks here: TensorFlow must come in through the backend's
    # _tf module, which loads torch's Triton first (the other order crashes; see _tf.py).
    import lwdsl.backends.tf_backend._tf  # noqa: E402,F401


def _backend_param(name: str):
    marks = [getattr(pytest.mark, name)]
    if importlib.util.find_spec(_FRAMEWORK.get(name, name)) is None:
        marks.append(pytest.mark.skip(reason=f"{name} not installed (pip install 'lwdsl[{name}]')"))
    return pytest.param(name, marks=marks, id=name)


@pytest.fixture(params=[_backend_param(b) for b in selected_backends()])
def backend_name(request) -> str:
    """Each selected backend's name, one test per backend."""
    return request.param


@pytest.fixture
def backend(backend_name):
    from lwdsl.backend import get_backend

    return get_backend(backend_name)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = os.environ.get("LWDSL_DATA") or str(ROOT.parent / "shared" / "data")
    if not (Path(root) / "mnist").is_dir():
        pytest.skip(f"real MNIST not found under {root} (set LWDSL_DATA)")
    return Path(root)


@pytest.fixture(scope="session")
def mnist(data_root):
    os.environ["LWDSL_DATA"] = str(data_root)
    from lwdsl.data.builtin import load_data

    return load_data("mnist", download=False)


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """A private ``LWDSL_CACHE`` for one test module (what it builds and caches, e.g. a
    tokenizer, is its own), set back when the module ends."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("cache")
    mp.setenv("LWDSL_CACHE", str(path))
    try:
        yield path
    finally:
        mp.undo()
