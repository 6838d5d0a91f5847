"""``--data pydoc-code``: standard-library source windows labelled by package (a derived
text-classification task), split by file, balanced, pydoc's tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tokenizers", reason="--data pydoc-code needs the tokenizers package (pip install 'lwdsl[llm]')")

from lwdsl.data.builtin import data_shape, data_task, is_named, is_path, load_data  # noqa: E402
from lwdsl.data.pycode import PACKAGES, TEST_PER_CLASS, TRAIN_PER_CLASS, package_files, split_files  # noqa: E402
from lwdsl.data.text import SEQ_LEN, VOCAB  # noqa: E402
from lwdsl.errors import UsageError  # noqa: E402


@pytest.fixture(scope="module")
def code(module_cache):
    return load_data("pydoc-code")


def test_name_shape_task_and_classes(code) -> None:
    assert is_named("pydoc-code") and is_named("pydoc_code") and not is_path("pydoc-code")
    assert data_task("pydoc-code") == "classify" and data_shape("pydoc-code") == ((SEQ_LEN,), len(PACKAGES))
    assert code.task == "classify" and code.num_classes == len(PACKAGES) == 8 and code.classes == PACKAGES
    assert code.input_shape == (SEQ_LEN,)
    for x in (code.train_x, code.test_x):
        assert x.dtype == np.int64 and x.shape[1] == SEQ_LEN and 0 <= x.min() and x.max() < VOCAB
    assert "derived" in code.info["task"] and code.info["tokenizer"]["vocab"] == VOCAB


def test_balanced_and_capped(code) -> None:
    train, test = np.bincount(code.train_y, minlength=8), np.bincount(code.test_y, minlength=8)
    assert len(set(train)) == 1 and len(set(test)) == 1  # every class the same count, in each set
    assert 0 < train[0] <= TRAIN_PER_CLASS and 0 < test[0] <= TEST_PER_CLASS
    assert code.info["balance"] == f"{train[0]} training and {test[0]} test windows per class"


def test_the_tokenizer_is_pydoc_s(code, module_cache) -> None:
    assert code.info["tokenizer"]["sha256"] == load_data("pydoc").info["tokenizer"]["sha256"]


def test_split_by_file_no_window_in_both(code) -> None:
    # no test window equals a training window (equal windows of different files, shared headers, are dropped)
    train = {row.tobytes() for row in code.train_x}
    assert not any(row.tobytes() in train for row in code.test_x)
    for package, counts in code.info["files"].items():
        assert counts["train"] > 0 and counts["test"] > 0, package


def test_split_rule() -> None:
    assert split_files([10, 10, 10, 10, 10]) == [True, False, False, False, False]  # 10 <= 20% of 50, then 20 > 10
    assert split_files([50, 30, 20]) == [False, False, True]  # the first that fits
    assert split_files([60, 30, 0, 25]) == [False, False, False, True]  # none fits 20% of 115 = 23: the smallest
    assert split_files([5, 1, 1, 1, 1, 1]) == [False, True, True, False, False, False]  # up to 20% of 10


def test_files_sorted_and_without_tests() -> None:
    files = package_files("unittest")
    names = [f.as_posix() for f in files]
    assert names == sorted(names) and files and not any("/test/" in n for n in names)


def test_deterministic(code, module_cache) -> None:
    again = load_data("pydoc-code")
    assert again.sha256 == code.sha256
    assert np.array_equal(again.train_x, code.train_x) and np.array_equal(again.test_y, code.test_y)


def test_a_near_name_says_did_you_mean() -> None:
    with pytest.raises(UsageError) as caught:
        load_data("pydoc-cod")
    assert caught.value.exit_code == 2 and "pydoc-code" in (caught.value.hint or "")


def test_a_token_classifier_s_baseline_is_trained_as_a_language_model_s(code) -> None:
    from lwdsl.runner.pipeline import _token_ids, baseline_options

    assert _token_ids(code) and not _token_ids(load_data("synthetic:1,8,8:3"))
    tokens, images = baseline_options(3, "classify", tokens=True), baseline_options(3, "classify")
    assert (tokens.optimizer, tokens.lr, tokens.batch) == ("adam", 0.001, 16) and images.optimizer == "sgd"
