"""Text that ships with every Python, as token sequences for language models: ``--data pydoc``.

Exactly (docs/semantics.md, "Transformers"):

- text: the help topics of the language reference, ``pydoc_data.topics.topics`` (a dict of
  topic -> text, ~465k characters; it differs between Python versions, so its sha256 is in
  the data's digest), joined in sorted topic order with ``"\\n\\n"`` between topics;
- tokenizer: a byte-level BPE (``tokenizers``: ``models.BPE``, the ``ByteLevel``
  pre-tokenizer without a prefix space, the 256-byte initial alphabet, ``min_frequency=2``,
  no special tokens) trained on the topics in sorted order to a vocabulary of
  :data:`VOCAB` (2048); BPE training in ``tokenizers`` breaks ties between pair counts by the
  pair's token ids, so the same text gives the same tokenizer, bit for bit. It is cached as
  ``$LWDSL_CACHE/tokenizers/pydoc-bpe2048-<text sha256[:12]>.json`` (default
  ``~/.cache/lwdsl``), and the sha256 of that file is in the report, the lock file and the
  data's digest;
- sequences: the whole text encoded once, cut into ``n = (T - 1) // L`` windows of ``L + 1``
  tokens with stride ``L`` = :data:`SEQ_LEN` (128): window ``i`` is tokens
  ``[i L, i L + L]``; its first ``L`` tokens are the input, its last ``L`` the targets (the
  next token at every position);
- split: window ``i`` is a test sequence when ``i % 10 == 9`` (every tenth, 10%), a training
  sequence otherwise; no shuffling (the run's seed orders training, as for images).

The data set's ``task`` is ``lm``: ``num_classes`` is the vocabulary size, the metric is the
perplexity ``exp(mean token cross-entropy)`` over every target token of the test sequences.

**Your own text** (``--data notes.txt`` or ``--data corpus/``: a ``.txt`` file, or a folder whose
files are all ``.txt``, read in sorted path order and joined with ``"\n\n"``, UTF-8): the same
rules with that text in place of the topics: a BPE of :data:`VOCAB` trained on it and cached
(``text-bpe2048-<text sha256[:12]>.json``; a small text may give fewer tokens, the model's
vocabulary stays :data:`VOCAB`), the same windows and split. At most
:data:`lwdsl.limits.MAX_TEXT_BYTES` of text (refused before reading), at least
``2 * TEST_EVERY`` windows; a file that is not UTF-8 is named with the byte where it fails.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from .dataset import Dataset

__all__ = ["PYDOC", "SEQ_LEN", "VOCAB", "TEST_EVERY", "pydoc_text", "pydoc_tokenizer", "load_pydoc", "is_text", "load_text",
           "text_shape"]

PYDOC = "pydoc"
#: Input tokens per sequence (the targets are the same window moved by one token).
SEQ_LEN = 128
#: The BPE vocabulary size.
VOCAB = 2048
#: Every TEST_EVERY-th sequence (index % TEST_EVERY == TEST_EVERY - 1) is a test sequence.
TEST_EVERY = 10
#: Version of this recipe of text, tokenizer and split, in the data's digest.
_VERSION = "pydoc-v1"


def pydoc_text() -> str:
    """The help topics, joined in sorted topic order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def _cache_root() -> Path:
    root = os.environ.get("LWDSL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lwdsl"
    return Path(root) / "tokenizers"


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise UsageError("--data pydoc needs the tokenizers package (a BPE tokenizer is trained locally)",
                         hint="pip install 'lwdsl[llm]'") from None
    return tokenizers


def pydoc_tokenizer(text: str) -> tuple[Any, Path, str]:
    """(the tokenizer, its cached file, the file's sha256), trained on the topics once and cached."""
    from pydoc_data.topics import topics

    return train_tokenizer(text, "pydoc", [topics[key] for key in sorted(topics)])


def train_tokenizer(text: str, kind: str, pieces: list[str]) -> tuple[Any, Path, str]:
    """(the tokenizer, its cached file, the file's sha256): the BPE of the module docstring
    trained on ``pieces`` (whose join is ``text``) once, cached by ``kind`` and the text's hash."""
    tk = _tokenizers()
    text_sha = hashlib.sha256(text.encode()).hexdigest()
    path = _cache_root() / f"{kind}-bpe{VOCAB}-{text_sha[:12]}.json"
    if not path.is_file():
        tok = tk.Tokenizer(tk.models.BPE())
        tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, show_progress=False, special_tokens=[],
                                         initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(pieces, trainer=trainer)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
            os.close(fd)
            tok.save(tmp)
            os.replace(tmp, path)
        except OSError:  # a read-only cache: the tokenizer is trained again next time (seconds)
            blob = tok.to_str().encode()
            return tok, path, hashlib.sha256(blob).hexdigest()
    blob = path.read_bytes()
    try:
        tok = tk.Tokenizer.from_str(blob.decode())
    except Exception as exc:  # a damaged cache file
        raise UsageError(f"the cached tokenizer {path} is damaged ({exc})", hint="delete it: it is trained again in seconds") from None
    return tok, path, hashlib.sha256(blob).hexdigest()


def load_pydoc() -> Dataset:
    """``--data pydoc``: the help topics as sequences of :data:`SEQ_LEN` tokens (module docstring)."""
    text = pydoc_text()
    tok, path, tok_sha = pydoc_tokenizer(text)
    if tok.get_vocab_size() != VOCAB:
        raise UsageError(f"the pydoc tokenizer {path} has {tok.get_vocab_size()} tokens, not {VOCAB}", hint="delete it to train it again")
    source = f"pydoc_data.topics of Python {sys.version_info.major}.{sys.version_info.minor}"
    return _windows(PYDOC, _VERSION, text, tok, path, tok_sha, source)


def _windows(name: str, version: str, text: str, tok: Any, path: Path, tok_sha: str, source: str, at_least: int = 1) -> Dataset:
    """The token windows of ``text`` and their split (module docstring) as a data set."""
    ids = np.asarray(tok.encode(text).ids, dtype=np.int64)
    n = max(0, (len(ids) - 1) // SEQ_LEN)
    if n < at_least:
        raise UsageError(f"data {name}: {len(ids):,} tokens make {n} sequences of {SEQ_LEN}; at least {at_least} are needed "
                         f"(every {TEST_EVERY}th is a test sequence)",
                         hint=f"give more text: at least {at_least * SEQ_LEN + 1:,} tokens (roughly {at_least * SEQ_LEN * 4:,} characters of English)")
    windows = np.stack([ids[i * SEQ_LEN : i * SEQ_LEN + SEQ_LEN + 1] for i in range(n)])
    test = np.arange(n) % TEST_EVERY == TEST_EVERY - 1
    text_sha = hashlib.sha256(text.encode()).hexdigest()
    digest = hashlib.sha256(f"{version}:{text_sha}:{tok_sha}:{SEQ_LEN}:{TEST_EVERY}".encode()).hexdigest()
    info = {
        "source": source,
        "task": "language modelling (next token)",
        "characters": len(text),
        "text_sha256": text_sha,
        "tokens": int(len(ids)),
        "sequence_length": SEQ_LEN,
        "split": f"sequence i is test when i % {TEST_EVERY} == {TEST_EVERY - 1}",
        "tokenizer": {"kind": "byte-level BPE (tokenizers)", "vocab": int(tok.get_vocab_size()), "sha256": tok_sha, "path": str(path)},
        "streamed": False,
    }
    return Dataset(
        name=name,
        train_x=np.ascontiguousarray(windows[~test, :-1]),
        train_y=np.ascontiguousarray(windows[~test, 1:]),
        test_x=np.ascontiguousarray(windows[test, :-1]),
        test_y=np.ascontiguousarray(windows[test, 1:]),
        num_classes=VOCAB,
        sha256=digest,
        info=info,
        task="lm",
    )


def _text_files(path: Path) -> list[Path]:
    """The ``.txt`` files a path names (itself, or a folder's, sorted), [] when it is not text."""
    if path.is_file():
        return [path] if path.suffix.lower() == ".txt" else []
    if not path.is_dir():
        return []
    files = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    return files if files and all(p.is_file() and p.suffix.lower() == ".txt" for p in files) else []


def is_text(path: Path) -> bool:
    """Whether ``path`` is a ``.txt`` file or a folder of only ``.txt`` files."""
    return bool(_text_files(path))


def text_shape(ref: Any) -> tuple[tuple[int, ...], int]:
    """((L,), vocabulary) of a text source, without reading it."""
    return (SEQ_LEN,), VOCAB


def load_text(ref: Any) -> Dataset:
    """A user's text (``ref``: a :class:`lwdsl.data.ref.DataRef`) as token windows (module docstring)."""
    from ..limits import MAX_TEXT_BYTES, size_words

    for name in ref.options:  # resize, crop, mean, ... are for images; the split is the module's rule
        raise ref.fail(f"option {name}= does not apply to text", hint="text takes no options: give the path alone")
    files = _text_files(ref.path)
    total = sum(f.stat().st_size for f in files)
    if total > MAX_TEXT_BYTES:
        raise ref.fail(f"holds {size_words(total)} of text, more than lwdsl reads ({size_words(MAX_TEXT_BYTES)})",
                       hint="give a part of it (a file or a folder of fewer files)")
    pieces = []
    for f in files:
        raw = f.read_bytes()
        try:
            pieces.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            raise UsageError(f"data {f}:{line}:{col}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start:,})",
                             hint="save the file as UTF-8") from None
    text = "\n\n".join(pieces)
    tok, path, tok_sha = train_tokenizer(text, "text", pieces)
    source = f"{len(files)} text file(s) at {ref.path}"
    return _windows(ref.text, "text-v1", text, tok, path, tok_sha, source, at_least=2 * TEST_EVERY)
