"""PyTorch backend of lwdsl. ``TorchBackend`` is imported (with torch) on first access, so
``lwdsl.backends.torch_backend.support`` can be read without torch.

>>> from lwdsl.backend import get_backend
>>> get_backend("torch").name
'torch'
"""

from typing import Any

__all__ = ["TorchBackend"]


def __getattr__(name: str) -> Any:
    if name == "TorchBackend":
        import warnings

        from .backend import TorchBackend

        # A CUDA build of torch on a machine without a GPU warns at the first backward pass
        # when another library (TensorFlow) loaded its CUDA libraries first: noise here.
        warnings.filterwarnings("ignore", message=r"CUDA initialization: Unexpected error", category=UserWarning)
        return TorchBackend
    raise AttributeError(name)
