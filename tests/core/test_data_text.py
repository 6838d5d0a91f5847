"""``--data pydoc``: the help topics, a locally trained BPE tokenizer, fixed-length sequences."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tokenizers", reason="--data pydoc needs the tokenizers package (pip install 'lwdsl[llm]')")

from lwdsl.data.builtin import data_shape, data_task, is_named, load_data  # noqa: E402
from lwdsl.data.text import SEQ_LEN, TEST_EVERY, VOCAB, pydoc_text  # noqa: E402


@pytest.fixture(scope="module")
def pydoc(module_cache):
    return load_data("pydoc")


def test_shape_task_and_split(pydoc) -> None:
    assert is_named("pydoc") and data_task("pydoc") == "lm" and data_shape("pydoc") == ((SEQ_LEN,), VOCAB)
    assert pydoc.task == "lm" and pydoc.num_classes == VOCAB and pydoc.input_shape == (SEQ_LEN,)
    n = len(pydoc.train_x) + len(pydoc.test_x)
    assert n == (pydoc.info["tokens"] - 1) // SEQ_LEN
    assert len(pydoc.test_x) == n // TEST_EVERY
    for arr in (pydoc.train_x, pydoc.train_y, pydoc.test_x, pydoc.test_y):
        assert arr.dtype == np.int64 and arr.shape[1] == SEQ_LEN and 0 <= arr.min() and arr.max() < VOCAB
    # the targets are the inputs moved by one token; consecutive windows share their boundary token
    assert np.array_equal(pydoc.train_x[:, 1:], pydoc.train_y[:, :-1])
    assert pydoc.train_y[0, -1] == pydoc.train_x[1, 0]
    # sequence 9 is the first test sequence: it follows training sequence 8
    assert pydoc.test_x[0, 0] == pydoc.train_y[8, -1]


def test_the_tokenizer_round_trips_and_is_recorded(pydoc) -> None:
    from lwdsl.data.text import pydoc_tokenizer

    tok, path, sha = pydoc_tokenizer(pydoc_text())
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest() == pydoc.info["tokenizer"]["sha256"]
    assert tok.decode(pydoc.test_x[0].tolist()) in pydoc_text()
    described = pydoc.describe()
    assert described["vocabulary"] == VOCAB and described["sequence_length"] == SEQ_LEN
    assert described["test_tokens"] == pydoc.test_y.size


def test_training_the_tokenizer_is_deterministic_across_processes(tmp_path, pydoc) -> None:
    code = ("from lwdsl.data.builtin import load_data; d = load_data('pydoc'); "
            "print(d.info['tokenizer']['sha256'], d.sha256)")
    out = subprocess.run([sys.executable, "-c", code], env={"LWDSL_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=300, check=True).stdout.split()
    assert out == [pydoc.info["tokenizer"]["sha256"], pydoc.sha256]


# --- your own text: a .txt file or a folder of them ------------------------------------------


def _corpus(folder, parts: int = 2) -> list[str]:
    """Real English-and-code text to tokenize: slices of the help topics, one file each."""
    text = pydoc_text()
    pieces = [text[k * 30_000 : (k + 1) * 30_000] for k in range(parts)]
    folder.mkdir(parents=True, exist_ok=True)
    for k, piece in enumerate(pieces):
        (folder / f"part{k}.txt").write_text(piece, encoding="utf-8")
    return pieces


def test_a_folder_of_text_files_is_language_model_data(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    pieces = _corpus(tmp_path / "corpus")
    name = str(tmp_path / "corpus")
    assert data_task(name) == "lm" and data_shape(name) == ((SEQ_LEN,), VOCAB)
    data = load_data(name)
    assert data.task == "lm" and data.num_classes == VOCAB and data.input_shape == (SEQ_LEN,)
    assert data.info["characters"] == len("\n\n".join(pieces)) and "2 text file(s)" in data.info["source"]
    n = len(data.train_x) + len(data.test_x)
    assert n == (data.info["tokens"] - 1) // SEQ_LEN and len(data.test_x) == n // TEST_EVERY
    assert np.array_equal(data.train_x[:, 1:], data.train_y[:, :-1]) and data.train_x.max() < VOCAB
    assert (tmp_path / "cache" / "tokenizers").glob("text-bpe*.json")
    again = load_data(name)  # the cached tokenizer: the same sequences and digest
    assert again.sha256 == data.sha256 and np.array_equal(again.train_x, data.train_x)
    one = load_data(str(tmp_path / "corpus" / "part0.txt"))  # one file: another text, another digest
    assert one.task == "lm" and one.sha256 != data.sha256
    (tmp_path / "corpus" / "part1.txt").write_text(pieces[1] + " changed", encoding="utf-8")
    assert load_data(name).sha256 != data.sha256


def test_bad_text_is_refused_with_where(tmp_path, monkeypatch) -> None:
    from lwdsl.errors import UsageError

    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.txt"
    bad.write_bytes("line one\nline two é\n".encode("utf-8") + b"caf\xe9\n")
    with pytest.raises(UsageError, match=r"bad.txt:3:4: not UTF-8 text \(byte 0xe9"):
        load_data(str(bad))
    short = tmp_path / "short.txt"
    short.write_text("too short " * 50, encoding="utf-8")
    with pytest.raises(UsageError, match="at least 20 are needed") as err:
        load_data(str(short))
    assert "give more text" in (err.value.hint or "")
    mixed = tmp_path / "mixed"  # a folder with other files is not text: read as class folders, and refused as such
    _corpus(mixed, parts=1)
    (mixed / "image.png").write_bytes(b"\x89PNG")
    assert data_task(str(mixed)) == "classify"
    with pytest.raises(UsageError, match="option resize= does not apply to text"):
        load_data(str(mixed / "part0.txt") + "?resize=32")  # image options mean nothing for text


def test_text_larger_than_the_limit_is_refused_before_reading(tmp_path, monkeypatch) -> None:
    from lwdsl import limits
    from lwdsl.errors import UsageError

    big = tmp_path / "big.txt"
    big.write_text("x" * 4096, encoding="utf-8")
    monkeypatch.setattr(limits, "MAX_TEXT_BYTES", 1024)
    with pytest.raises(UsageError, match="more than lwdsl reads"):
        load_data(str(big))
