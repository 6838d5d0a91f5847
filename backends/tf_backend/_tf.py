"""The one place TensorFlow is imported: Keras 2 (``tf_keras``) and no log noise.

The backend is written against ``tf_keras`` (Keras 2) today, so ``TF_USE_LEGACY_KERAS=1`` is set
(unless the user set it) before TensorFlow is imported; moving to Keras 3 is a separate issue.
TensorFlow's C++ side prints INFO and ERROR lines (oneDNN notice, missing CUDA drivers) straight to
the process's stderr before its logger is configured, whatever ``TF_CPP_MIN_LOG_LEVEL`` says; file
descriptor 2 is pointed at ``/dev/null`` while TensorFlow imports and looks for devices, and
restored afterwards. Python exceptions are not affected: they propagate as usual.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import warnings
from typing import Iterator

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["tf", "tf_keras", "quiet_stderr"]


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


def _import_quietly():
    with quiet_stderr():
        _triton_first()
        import tensorflow
        import tf_keras

        tensorflow.config.list_physical_devices()  # CUDA probing prints here, not later
    return tensorflow, tf_keras


tf, tf_keras = _import_quietly()

tf.get_logger().setLevel(logging.ERROR)
tf.autograph.set_verbosity(0)
try:
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
except ImportError:  # pragma: no cover - absl comes with tensorflow
    pass
for _module in ("tensorflow", "tf_keras"):
    warnings.filterwarnings("ignore", module=_module)
