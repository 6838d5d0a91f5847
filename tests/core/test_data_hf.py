"""A Hugging Face ``datasets`` folder written by ``save_to_disk`` (lwdsl.data.hf): encoded
images and array columns, splits, class names; without the package a clear error."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from lwdsl.data.builtin import data_shape, load_data
from lwdsl.errors import UsageError
from tests.data_files import mnist_u8, normalised

datasets = pytest.importorskip("datasets", reason="pip install datasets")


@pytest.fixture(scope="module")
def digits():
    return mnist_u8(40, 12)


def _encoded(x, y):
    from PIL import Image

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=[f"d{i}" for i in range(10)])})
    return datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in x], "label": [int(v) for v in y]}, features=feats)


def test_a_dataset_dict_of_encoded_images_loads_to_the_expected_arrays(tmp_path, digits):
    xtr, ytr, xte, yte = digits
    datasets.DatasetDict({"train": _encoded(xtr, ytr), "test": _encoded(xte, yte)}).save_to_disk(str(tmp_path / "hf"))
    ds = load_data(str(tmp_path / "hf"))
    np.testing.assert_array_equal(np.asarray(ds.train_x), normalised(xtr))  # PNG inside: bit for bit
    np.testing.assert_array_equal(ds.test_y, yte)
    assert ds.classes[4] == "d4" and ds.num_classes == 10
    assert data_shape(str(tmp_path / "hf")) == ((1, 28, 28), 10)
    assert ds.describe()["source"] == "huggingface datasets" and len(ds.sha256) == 64


def test_one_dataset_of_arrays_is_split_like_a_folder(tmp_path, digits):
    xtr, ytr, _, _ = digits
    feats = datasets.Features({"pixels": datasets.Array2D((28, 28), "uint8"), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"pixels": list(xtr), "label": ytr.astype(np.int64)}, features=feats).save_to_disk(str(tmp_path / "one"))
    ds = load_data(str(tmp_path / "one"))
    assert len(ds.train_x) + len(ds.test_x) == 40 and ds.describe()["split"]["test_fraction"] == 0.2
    from lwdsl.data.split import stratified_split

    tr, te = stratified_split(ytr, 0.2)
    np.testing.assert_array_equal(np.asarray(ds.test_x), normalised(xtr[te]))
    np.testing.assert_array_equal(ds.train_y, ytr[tr])


def test_without_the_datasets_package_the_error_says_how_to_install_it(tmp_path, digits, monkeypatch):
    xtr, ytr, xte, yte = digits
    datasets.DatasetDict({"train": _encoded(xtr[:4], ytr[:4]), "test": _encoded(xte[:2], yte[:2])}).save_to_disk(str(tmp_path / "hf"))
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UsageError) as err:
        load_data(str(tmp_path / "hf"))
    assert "needs the datasets package" in err.value.message and "pip install datasets" in err.value.hint


def test_a_bad_datasets_folder_is_refused(tmp_path, digits):
    xtr, ytr, xte, yte = digits
    datasets.DatasetDict({"validation": _encoded(xte, yte)}).save_to_disk(str(tmp_path / "nt"))
    with pytest.raises(UsageError, match="has no train split"):
        load_data(str(tmp_path / "nt"))
    datasets.DatasetDict({"train": _encoded(xtr, ytr), "test": _encoded(xte, yte)}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(UsageError, match="has no column photo"):
        load_data(str(tmp_path / "hf") + "?image=photo")
