"""The one place TensorFlow and Keras are imported: Keras 3 on its TensorFlow backend
(``KERAS_BACKEND=tensorflow`` unless set; another Keras backend refused with how to fix it;
``TF_USE_LEGACY_KERAS`` left alone), TensorFlow's start-up log lines kept off stderr while it
imports, Triton first when installed (docs/semantics.md, TensorFlow backend)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import types
import warnings
from typing import Any, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__all__ = ["tf", "keras", "quiet_stderr", "quiet_stdout"]


def _triton_first() -> None:
    """Import Triton (PyTorch's compiler, installed with CUDA builds of torch) before TensorFlow.

    Both bundle LLVM; loading Triton after TensorFlow crashes the process (a segmentation fault
    when a torch optimizer is first created). Loaded in this order both work, which matters
    when one process runs both backends (the conformance tests, a user comparing them).
    """
    if "tensorflow" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    try:
        import triton  # noqa: F401
    except Exception:  # a broken triton install must not stop TensorFlow
        pass


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null (C++ log lines) and drop Python warnings."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_deferring = False


class _Deferred(types.ModuleType):
    """Stands in for a module while Keras imports; the real module is imported on first use.

    Keras 3 imports ``matplotlib.pyplot`` when it is imported (for ``keras.visualization``, which
    lwdsl never calls): about 0.45 s of a 3.5 s start. While Keras imports, ``matplotlib`` and
    ``matplotlib.pyplot`` are these stand-ins (their attributes too); afterwards they leave
    ``sys.modules``, and whatever Keras kept of them imports the real module when used.
    """

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if _deferring:
            return _Deferred(f"{self.__name__}.{attr}")
        return getattr(importlib.import_module(self.__name__), attr)


@contextlib.contextmanager
def _deferred(*names: str) -> Iterator[None]:
    global _deferring
    if any(n in sys.modules for n in names) or importlib.util.find_spec(names[0]) is None:
        yield  # already imported (nothing to save) or not installed (Keras copes)
        return
    for n in names:
        sys.modules[n] = _Deferred(n)
    for n in names[1:]:
        parent, _, child = n.rpartition(".")
        setattr(sys.modules[parent], child, sys.modules[n])
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
        for n in names:
            if isinstance(sys.modules.get(n), _Deferred):
                del sys.modules[n]


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Drop what Python code prints to ``sys.stdout`` (Keras 3's ``model.export``, which the TFLite
    converter calls, prints the SavedModel's endpoints): lwdsl's own output stays clean."""
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _import_quietly():
    with quiet_stderr(), _deferred("matplotlib", "matplotlib.pyplot"):
        _triton_first()
        import tensorflow
        import keras

        tensorflow.config.list_physical_devices()  # CUDA probing prints here, not later
    return tensorflow, keras


tf, keras = _import_quietly()


def _check_keras() -> None:
    from lwdsl.errors import UsageError

    major = int(str(getattr(keras, "__version__", "0")).split(".")[0] or 0)
    if major < 3:  # pragma: no cover - tensorflow>=2.16 brings Keras 3
        raise UsageError(
            f"the tensorflow backend needs Keras 3; 'import keras' gives Keras {keras.__version__}",
            hint="pip install 'keras>=3.5' (or pip install 'lwdsl[tensorflow]')",
        )
    if keras.backend.backend() != "tensorflow":
        raise UsageError(
            f"Keras is configured for the '{keras.backend.backend()}' backend; lwdsl's tensorflow backend runs Keras on TensorFlow",
            hint="unset KERAS_BACKEND or set KERAS_BACKEND=tensorflow (and the \"backend\" of ~/.keras/keras.json) before starting",
        )


_check_keras()

tf.get_logger().setLevel(logging.ERROR)
tf.autograph.set_verbosity(0)
try:
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
except ImportError:  # pragma: no cover - absl comes with tensorflow
    pass
for _module in ("tensorflow", "keras"):
    warnings.filterwarnings("ignore", module=_module)
