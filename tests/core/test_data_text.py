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
def pydoc(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("LWDSL_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        yield load_data("pydoc")
    finally:
        mp.undo()


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
