"""The TensorFlow/Keras backend of lwdsl: tf_keras (Keras 2) models, PyTorch's semantics.

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` and ``TF_CPP_MIN_LOG_LEVEL=2`` (unless
already set) before TensorFlow is imported, and keeps TensorFlow's start-up log lines off the
terminal (see ``_tf.py``). Everything else is in :class:`KerasBackend`.

>>> from lwdsl.backend import get_backend
>>> get_backend("tensorflow").name
'tensorflow'
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .backend import KerasBackend  # noqa: E402  (the environment must be set first)
from .handle import KerasHandle  # noqa: E402

__all__ = ["KerasBackend", "KerasHandle"]
