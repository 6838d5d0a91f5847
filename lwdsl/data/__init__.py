"""Data sets, framework-free: a ``Dataset`` of numpy arrays (``dataset``), the named sets
(``builtin``: MNIST, Fashion-MNIST, synthetic) and the user's data read from a path
(``sources``: class folders, ``.npz``, CIFAR binary, Hugging Face ``datasets``), whose images are
decoded as batches index them (``stream``). The order of examples is decided in
``lwdsl.semantics.order``; a backend only turns arrays into its tensors."""

from .builtin import DATASETS, data_dirs, data_shape, load_data
from .dataset import Dataset
from .stream import ImageArray

__all__ = ["load_data", "data_shape", "data_dirs", "DATASETS", "Dataset", "ImageArray"]
