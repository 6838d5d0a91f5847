"""Data sets, framework-free: a ``Dataset`` of numpy arrays (``dataset``) and the named sets
(``builtin``: MNIST, Fashion-MNIST, synthetic). The order of examples is decided in
``lwdsl.semantics.order``; a backend only turns arrays into its tensors."""

from .builtin import DATASETS, data_dirs, data_shape, load_data
from .dataset import Dataset

__all__ = ["load_data", "data_shape", "data_dirs", "DATASETS", "Dataset"]
