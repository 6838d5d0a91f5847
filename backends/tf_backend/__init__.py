"""The TensorFlow/Keras backend of lwdsl: Keras 3 models on TensorFlow, PyTorch's semantics.

Importing this package sets ``KERAS_BACKEND=tensorflow`` and ``TF_CPP_MIN_LOG_LEVEL=2`` (unless
already set); TensorFlow itself is imported on first access to ``KerasBackend`` or
``KerasHandle`` (keeping its start-up log lines off the terminal, see ``_tf.py``), so
``lwdsl.backends.tf_backend.support`` can be read without it.

>>> from lwdsl.backend import get_backend
>>> get_backend("tensorflow").name
'tensorflow'
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["KerasBackend", "KerasHandle"]


def __getattr__(name: str) -> Any:
    if name == "KerasBackend":
        from .backend import KerasBackend

        return KerasBackend
    if name == "KerasHandle":
        from .handle import KerasHandle

        return KerasHandle
    raise AttributeError(name)
