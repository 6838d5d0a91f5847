"""Images held as arrays: ``.npz`` (lwdsl.data.npz, the layout detected) and the CIFAR-10/100
binary format (lwdsl.data.cifar), to the same arrays as a folder of the same pixels; the bad
files refused with what is wrong (UsageError, exit code 2)."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.data.arrays import detect_layout
from lwdsl.data.builtin import data_shape, load_data
from lwdsl.data.preprocess import luma
from lwdsl.errors import UsageError
from tests.data_files import colour, folder_order, mnist_u8, normalised, write_cifar10, write_cifar100, write_images


@pytest.fixture(scope="module")
def digits():
    return mnist_u8(60, 20)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_in_each_layout_loads_to_the_same_arrays(tmp_path, digits):
    xtr, ytr, xte, yte = digits
    want = normalised(xtr)
    nhw = load_data(_npz(tmp_path / "a.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte))
    np.testing.assert_array_equal(np.asarray(nhw.train_x), want)
    np.testing.assert_array_equal(nhw.train_y, ytr)
    assert nhw.describe()["layout"].startswith("nhw (") and data_shape(str(tmp_path / "a.npz")) == ((1, 28, 28), 10)
    nchw = load_data(_npz(tmp_path / "b.npz", x_train=xtr[:, None] / np.float32(255), y_train=ytr, x_test=xte[:, None] / 255.0,
                          y_test=yte.reshape(-1, 1)))
    np.testing.assert_allclose(np.asarray(nchw.train_x), want, atol=1e-6)
    assert nchw.describe()["layout"].startswith("nchw") and nchw.describe()["stored_as"] == "float32"
    c = colour(xtr)
    nhwc = load_data(_npz(tmp_path / "c.npz", x_train=c, y_train=ytr, x_test=colour(xte), y_test=yte,
                          classes=np.array([f"digit {i}" for i in range(10)])))
    np.testing.assert_array_equal(np.asarray(nhwc.train_x), normalised(c))
    assert nhwc.classes[3] == "digit 3" and nhwc.input_shape == (3, 32, 32)
    grey = load_data(str(tmp_path / "c.npz") + "?channels=1&mean=0&std=1")
    np.testing.assert_array_equal(grey.train_x[:4], np.moveaxis(luma(c[:4]), -1, 1).astype(np.float32) / np.float32(255))


def test_npz_and_a_png_folder_of_the_same_pixels_agree_bit_for_bit(tmp_path, digits):
    xtr, ytr, xte, yte = digits
    write_images(tmp_path / "f" / "train", xtr, ytr)
    write_images(tmp_path / "f" / "test", xte, yte)
    folder = load_data(str(tmp_path / "f") + "?resize=14&mean=0.1307&std=0.3081")
    order = folder_order(ytr)
    npz = load_data(_npz(tmp_path / "a.npz", x_train=xtr[order], y_train=ytr[order], x_test=xte, y_test=yte) + "?resize=14&mean=0.1307&std=0.3081")
    np.testing.assert_array_equal(np.asarray(folder.train_x), np.asarray(npz.train_x))
    np.testing.assert_array_equal(folder.train_y, npz.train_y)


def test_layout_detection_refuses_an_ambiguous_shape_unless_told():
    with pytest.raises(UsageError, match="ambiguous"):
        detect_layout((5, 3, 8, 3), "x_train")
    assert detect_layout((5, 3, 8, 3), "x_train", "nhwc") == "nhwc"
    with pytest.raises(UsageError, match="no axis of 1 or 3 channels"):
        detect_layout((5, 4, 8, 8), "x_train")
    with pytest.raises(UsageError, match="images must be"):
        detect_layout((5, 8), "x_train")


@pytest.mark.parametrize("arrays, words", [
    (dict(x_train=1, y_train=1), "has no x_test, y_test"),
    (dict(y_train="short"), "y_train has shape (59,)"),
    (dict(y_train="float"), "labels must be integers"),
    (dict(classes=np.array(["a", "b"])), "labels are 0 to 1 (2 classes)"),
    (dict(y_train="negative"), "labels are 0 or more"),
    (dict(y_train="one"), "one class"),
    (dict(x_train="big floats"), "float images must be in [0, 1]"),
    (dict(x_train="ambiguous"), "ambiguous"),
    (dict(x_test="other size"), "x_test images are"),
])
def test_a_bad_npz_is_refused_with_what_is_wrong(tmp_path, digits, arrays, words):
    xtr, ytr, xte, yte = digits
    full = dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    special = {
        "short": ytr[:-1], "float": ytr + 0.5, "negative": ytr.astype(np.int64) - 1, "one": np.zeros_like(ytr),
        "big floats": xtr.astype(np.float32), "ambiguous": np.zeros((4, 3, 5, 3), np.uint8), "other size": xte[:, :20, :20],
    }
    if set(arrays) == {"x_train", "y_train"} and not isinstance(arrays["x_train"], str):
        full = dict(x_train=xtr, y_train=ytr)
    else:
        full.update({k: special.get(v, v) if isinstance(v, str) else v for k, v in arrays.items()})
    path = _npz(tmp_path / "bad.npz", **full)
    with pytest.raises(UsageError) as err:
        load_data(path)
    assert words in err.value.message, err.value.message
    assert str(tmp_path / "bad.npz") in err.value.message


def test_a_file_that_is_not_an_npz_is_refused(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(UsageError, match="cannot be read as a .npz"):
        load_data(str(tmp_path / "x.npz"))
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(UsageError, match="does not read as a data set"):
        load_data(str(tmp_path / "x.csv"))


def test_cifar10_binary_records_load_in_file_order_with_their_class_names(tmp_path, digits):
    xtr, ytr, xte, yte = digits
    c, ct = colour(xtr), colour(xte)
    names = [f"class{i}" for i in range(10)]
    write_cifar10(tmp_path / "cifar-10-batches-bin", [(c[:30], ytr[:30]), (c[30:], ytr[30:])], (ct, yte), names)
    ds = load_data(str(tmp_path / "cifar-10-batches-bin"))
    assert ds.classes == tuple(names) and ds.num_classes == 10 and ds.input_shape == (3, 32, 32)
    np.testing.assert_array_equal(np.asarray(ds.train_x), normalised(c))
    np.testing.assert_array_equal(ds.train_y, ytr)
    np.testing.assert_array_equal(ds.test_x[np.array([5, 2])], normalised(ct[[5, 2]]))
    assert ds.describe()["source"] == "cifar10"


def test_cifar100_fine_and_coarse_labels(tmp_path, digits):
    xtr, ytr, xte, yte = digits
    fine_tr, fine_te = ytr * 10 + 3, yte * 10 + 7
    write_cifar100(tmp_path / "c100", (colour(xtr), ytr * 2, fine_tr), (colour(xte), yte * 2, fine_te))
    fine = load_data(str(tmp_path / "c100"))
    assert fine.num_classes == 100
    np.testing.assert_array_equal(fine.train_y, fine_tr)
    coarse = load_data(str(tmp_path / "c100") + "?labels=coarse")
    assert coarse.num_classes == 20 and data_shape(str(tmp_path / "c100") + "?labels=coarse") == ((3, 32, 32), 20)
    np.testing.assert_array_equal(coarse.test_y, yte * 2)
    np.testing.assert_array_equal(np.asarray(coarse.test_x), normalised(colour(xte)))


def test_bad_cifar_files_are_refused(tmp_path, digits):
    xtr, ytr, xte, yte = digits
    write_cifar10(tmp_path / "a", [(colour(xtr), ytr)], (colour(xte), yte))
    raw = (tmp_path / "a" / "data_batch_1.bin").read_bytes()
    (tmp_path / "a" / "data_batch_1.bin").write_bytes(raw[:-100])
    with pytest.raises(UsageError, match="data_batch_1.bin is truncated"):
        load_data(str(tmp_path / "a"))
    bad = ytr.copy()
    bad[7] = 12
    write_cifar10(tmp_path / "b", [(colour(xtr), bad)], (colour(xte), yte))
    with pytest.raises(UsageError, match="record 7 has label 12: CIFAR labels here are 0 to 9"):
        load_data(str(tmp_path / "b"))
    (tmp_path / "b" / "test_batch.bin").unlink()
    with pytest.raises(UsageError, match="no test_batch.bin"):
        load_data(str(tmp_path / "b"))
