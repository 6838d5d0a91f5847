"""The user's data on disk, by what the path holds: which reader reads it.

=============================================== ========================= ======================
the path                                        format                    reader
=============================================== ========================= ======================
a file ending in ``.npz``                       x_train, y_train, ...     :mod:`.npz`
a folder written by ``save_to_disk``            Hugging Face ``datasets`` :mod:`.hf`
a folder of ``data_batch_*.bin``/``test_batch`` CIFAR-10 binary           :mod:`.cifar`
a folder of ``train.bin`` and ``test.bin``      CIFAR-100 binary          :mod:`.cifar`
a ``.txt`` file or a folder of only ``.txt``    text (language models)    :mod:`.text`
any other folder                                class folders             :mod:`.folder`
=============================================== ========================= ======================

Relative paths are taken from the current folder (also in a recipe's ``target`` line).
"""

from __future__ import annotations

from typing import Callable

from .cifar import cifar_shape, is_cifar, load_cifar
from .dataset import Dataset
from .folder import folder_shape, load_folder
from .hf import hf_shape, is_hf, load_hf
from .npz import load_npz, npz_shape
from .ref import DataRef, parse_ref
from .text import is_text, load_text, text_shape

__all__ = ["load_source", "source_shape", "source_kind"]

_READERS: dict[str, tuple[Callable[[DataRef], Dataset], Callable[[DataRef], tuple]]] = {
    "npz": (load_npz, npz_shape),
    "hf": (load_hf, hf_shape),
    "cifar": (load_cifar, cifar_shape),
    "text": (load_text, text_shape),
    "folder": (load_folder, folder_shape),
}


def source_kind(ref: DataRef) -> str:
    """``npz``, ``hf``, ``cifar``, ``text`` or ``folder``; a UsageError for a path that is none of them."""
    path = ref.path
    if is_text(path):
        return "text"
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz"
        raise ref.fail("is a file lwdsl does not read as a data set",
                       hint="give a .npz file, a .txt file, a folder of class folders or of .txt files, a CIFAR binary folder or a datasets folder")
    if not path.is_dir():
        raise ref.fail("does not exist", hint="give a path to a folder or a .npz file (relative paths start at the current folder)")
    if is_hf(path):
        return "hf"
    if is_cifar(path):
        return "cifar"
    return "folder"


def load_source(text: str) -> Dataset:
    """The :class:`Dataset` at the data reference ``text`` (``PATH[?options]``)."""
    ref = parse_ref(text)
    return _READERS[source_kind(ref)][0](ref)


def source_shape(text: str) -> tuple[tuple[int, int, int], int]:
    """((C, H, W), classes) at ``text``, reading as little as each format allows."""
    ref = parse_ref(text)
    return _READERS[source_kind(ref)][1](ref)
