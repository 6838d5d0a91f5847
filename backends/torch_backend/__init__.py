"""PyTorch backend of lwdsl (importing it imports torch).

>>> from lwdsl.backend import get_backend
>>> get_backend("torch").name
'torch'
"""

import warnings

from .backend import TorchBackend

# A CUDA build of torch on a machine without a GPU warns at the first backward pass when
# another library (TensorFlow) loaded its CUDA libraries first; it is noise for every user here.
warnings.filterwarnings("ignore", message=r"CUDA initialization: Unexpected error", category=UserWarning)

__all__ = ["TorchBackend"]
