"""A derived text-classification set that ships with every Python: ``--data pydoc-code``.

**A derived task**: no labelled text exists offline, so the labels are made from where the
text comes from. Each example is a window of Python source code from the standard library's
own ``.py`` files, labelled by the package it comes from. Exactly (docs/semantics.md,
"Transformers"):

- classes: the :data:`PACKAGES` (K = 8), in this order: ``asyncio``, ``email``, ``http``,
  ``importlib``, ``logging``, ``multiprocessing``, ``unittest``, ``xml``; each package's
  ``.py`` files under ``sysconfig``'s ``stdlib`` folder, recursively, in sorted relative-path
  order, leaving out every folder whose name starts with ``test`` (``unittest/test`` in 3.11:
  some installs strip tests) and ``__pycache__``; every file read as UTF-8;
- tokenizer: ``--data pydoc``'s BPE (the same file, trained on the help topics, its sha256 in
  the data's info and digest), so the two sets share one vocabulary of :data:`VOCAB`;
- windows: each file encoded alone and cut into ``floor(T / L)`` windows of ``L`` =
  :data:`SEQ_LEN` (128) tokens, stride ``L`` (the tail shorter than ``L`` dropped; a file
  under ``L`` tokens gives none);
- split **by file** (no file's windows are in both sets): within a package, the files in
  sorted order, each put in the test set when the test set's windows plus its own stay at
  most :data:`TEST_FRACTION` (20%) of the package's windows, else in the training set; a
  package where no file fits puts its smallest file (fewest windows, then first in order) in
  the test set; a test window equal (token for token) to any training window (a licence
  header two files share) is dropped, so no test example is also a training example;
- balance: every class has the same count, in each set: ``min`` over the classes of the
  windows it has there, at most :data:`TRAIN_PER_CLASS` (384) for training and
  :data:`TEST_PER_CLASS` (96) for test; a class with more keeps windows ``floor(i * n / m)``
  for ``i < m`` (spread evenly over its files, in order); training examples are ordered class
  by class (the run's seed orders training), test examples too.

The data set's ``task`` is ``classify`` (``x`` int64 token ids ``[N, L]``, ``y`` the package
index), its metric accuracy (chance: 1/8 = 12.5%). The source files differ between Python
versions, so the sha256 of the files' joined text is in the digest.
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from pathlib import Path

import numpy as np

from ..errors import RunError, UsageError
from .dataset import Dataset
from .text import SEQ_LEN, VOCAB, pydoc_text, pydoc_tokenizer

__all__ = ["PYDOC_CODE", "PACKAGES", "TRAIN_PER_CLASS", "TEST_PER_CLASS", "TEST_FRACTION", "package_files", "split_files",
           "load_pydoc_code"]

PYDOC_CODE = "pydoc-code"
#: The classes: standard-library packages present in every CPython install.
PACKAGES = ("asyncio", "email", "http", "importlib", "logging", "multiprocessing", "unittest", "xml")
#: At most this many training windows per class.
TRAIN_PER_CLASS = 384
#: At most this many test windows per class.
TEST_PER_CLASS = 96
#: A package's test files hold at most this fraction of its windows.
TEST_FRACTION = 0.2
_VERSION = "pydoc-code-v1"


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def package_files(package: str, root: Path | None = None) -> list[Path]:
    """The package's ``.py`` files (module docstring), sorted by path relative to ``root``."""
    root = root or _stdlib()
    folder = root / package
    if not folder.is_dir():
        raise RunError(f"data {PYDOC_CODE}: the standard library at {root} has no package {package}",
                       hint="this Python install is missing part of its standard library; use another Python")
    files = []
    for f in folder.rglob("*.py"):
        rel = f.relative_to(root)
        if any(part.startswith("test") or part == "__pycache__" for part in rel.parts[:-1]):
            continue
        files.append(f)
    return sorted(files, key=lambda f: f.relative_to(root).as_posix())


def split_files(counts: list[int]) -> list[bool]:
    """Which files (by their window counts, in sorted order) are test files (module docstring)."""
    total = sum(counts)
    test, held = [], 0
    for c in counts:
        put = c > 0 and held + c <= TEST_FRACTION * total
        test.append(put)
        held += c if put else 0
    if not any(test):
        sizes = [(c, i) for i, c in enumerate(counts) if c > 0]
        if sizes:
            test[min(sizes)[1]] = True
    return test


def _spread(windows: np.ndarray, m: int) -> np.ndarray:
    n = len(windows)
    return windows[(np.arange(m) * n) // m]


def load_pydoc_code() -> Dataset:
    """``--data pydoc-code``: source windows labelled by standard-library package (module docstring)."""
    text = pydoc_text()
    tok, path, tok_sha = pydoc_tokenizer(text)
    if tok.get_vocab_size() != VOCAB:
        raise UsageError(f"the pydoc tokenizer {path} has {tok.get_vocab_size()} tokens, not {VOCAB}", hint="delete it to train it again")
    root = _stdlib()
    per_class: list[tuple[np.ndarray, np.ndarray]] = []
    files_of: dict[str, dict[str, list[str]]] = {}
    text_hash = hashlib.sha256()
    for package in PACKAGES:
        files = package_files(package, root)
        sources = []
        for f in files:
            raw = f.read_bytes()
            text_hash.update(f.relative_to(root).as_posix().encode() + b"\0" + raw + b"\0")
            sources.append(raw.decode("utf-8", errors="replace"))
        encoded = tok.encode_batch(sources)
        wins = []
        for enc in encoded:
            ids = np.asarray(enc.ids, dtype=np.int64)
            n = len(ids) // SEQ_LEN
            wins.append(ids[: n * SEQ_LEN].reshape(n, SEQ_LEN))
        is_test = split_files([len(w) for w in wins])
        train = [w for w, t in zip(wins, is_test) if not t]
        test = [w for w, t in zip(wins, is_test) if t]
        train_w = np.concatenate(train) if train else np.zeros((0, SEQ_LEN), np.int64)
        test_w = np.concatenate(test) if test else np.zeros((0, SEQ_LEN), np.int64)
        if not len(train_w) or not len(test_w):
            raise RunError(f"data {PYDOC_CODE}: the package {package} at {root} gives {len(train_w)} training and {len(test_w)} "
                           "test windows; each set needs one", hint="this Python install's standard library is incomplete")
        per_class.append((train_w, test_w))
        files_of[package] = {"train": [f.relative_to(root).as_posix() for f, t in zip(files, is_test) if not t],
                             "test": [f.relative_to(root).as_posix() for f, t in zip(files, is_test) if t]}
    seen = {row.tobytes() for tr, _ in per_class for row in tr}
    dropped = 0
    for i, (tr, te) in enumerate(per_class):  # a test window equal to a training window (a shared header) is dropped
        keep = np.array([row.tobytes() not in seen for row in te], dtype=bool)
        dropped += int((~keep).sum())
        per_class[i] = (tr, te[keep])
    n_train = min(TRAIN_PER_CLASS, *(len(tr) for tr, _ in per_class))
    n_test = min(TEST_PER_CLASS, *(len(te) for _, te in per_class))
    train_x = np.concatenate([_spread(tr, n_train) for tr, _ in per_class])
    test_x = np.concatenate([_spread(te, n_test) for _, te in per_class])
    k = len(PACKAGES)
    train_y = np.repeat(np.arange(k, dtype=np.int64), n_train)
    test_y = np.repeat(np.arange(k, dtype=np.int64), n_test)
    text_sha = text_hash.hexdigest()
    digest = hashlib.sha256(f"{_VERSION}:{text_sha}:{tok_sha}:{SEQ_LEN}:{n_train}:{n_test}".encode()).hexdigest()
    info = {
        "source": f"the .py files of {k} standard-library packages of Python {sys.version_info.major}.{sys.version_info.minor}",
        "task": "derived classification: which package a window of source code comes from (no labelled text exists offline)",
        "text_sha256": text_sha,
        "sequence_length": SEQ_LEN,
        "split": f"by file: a package's files in sorted order, test while its test windows stay <= {TEST_FRACTION:.0%}",
        "balance": f"{n_train} training and {n_test} test windows per class",
        "test_windows_dropped": dropped,
        "files": {p: {s: len(v) for s, v in d.items()} for p, d in files_of.items()},
        "tokenizer": {"kind": "byte-level BPE (tokenizers), --data pydoc's", "vocab": int(tok.get_vocab_size()), "sha256": tok_sha,
                      "path": str(path)},
        "streamed": False,
    }
    return Dataset(name=PYDOC_CODE, train_x=np.ascontiguousarray(train_x), train_y=train_y, test_x=np.ascontiguousarray(test_x),
                   test_y=test_y, num_classes=k, sha256=digest, classes=PACKAGES, info=info, task="classify")
