"""A folder of class folders (lwdsl.data.folder): order, split, decoding, preprocessing, the
digest, and every bad folder refused with the place named (UsageError, exit code 2)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from lwdsl.data.builtin import data_shape, load_data
from lwdsl.data.stream import ImageArray
from lwdsl.errors import UsageError
from tests.data_files import colour, folder_order, mnist_u8, normalised, write_images


@pytest.fixture(scope="module")
def digits():
    return mnist_u8(60, 20)


def test_train_and_test_folders_load_to_the_expected_arrays(tmp_path, digits):
    xtr, ytr, xte, yte = digits
    write_images(tmp_path / "d" / "train", xtr, ytr)
    write_images(tmp_path / "d" / "test", xte, yte)
    ds = load_data(str(tmp_path / "d"))
    assert isinstance(ds.train_x, ImageArray) and ds.train_x.shape == (60, 1, 28, 28) and len(ds.test_x) == 20
    order = folder_order(ytr)
    np.testing.assert_array_equal(ds.train_y, ytr[order])
    np.testing.assert_array_equal(np.asarray(ds.train_x), normalised(xtr[order]))  # PNG: lossless, bit for bit
    np.testing.assert_array_equal(ds.test_x[:], normalised(xte[folder_order(yte)]))
    present = sorted({str(v) for v in ytr})
    assert ds.classes == tuple(present) and ds.num_classes == len(present)
    assert data_shape(str(tmp_path / "d")) == ((1, 28, 28), len(present))
    info = ds.describe()
    assert info["source"] == "folder" and info["classes"] == present and info["train_images"] == 60 and info["streamed"]


def test_a_flat_folder_is_split_seeded_and_stratified(tmp_path, digits):
    xtr, ytr, _, _ = digits
    write_images(tmp_path / "d", xtr, ytr)
    a, b = load_data(str(tmp_path / "d")), load_data(str(tmp_path / "d"))
    np.testing.assert_array_equal(a.test_y, b.test_y)
    np.testing.assert_array_equal(a.test_x[:], b.test_x[:])
    assert len(a.train_x) + len(a.test_x) == 60
    for c in np.unique(ytr):  # every class of 2 or more examples gives round(0.2 n) >= 1 to the test set
        n = int((ytr == c).sum())
        assert int((a.test_y == c).sum()) == (min(max(int(np.floor(0.2 * n + 0.5)), 1), n - 1) if n >= 2 else 0)
    half = load_data(str(tmp_path / "d") + "?split=0.5")
    assert abs(len(half.test_x) - 30) <= len(np.unique(ytr))
    assert a.describe()["split"] == {"test_fraction": 0.2, "seed": 0}
    both = np.concatenate([np.asarray(a.train_x), np.asarray(a.test_x)])  # nothing lost, nothing twice
    assert sorted(map(bytes, both)) == sorted(map(bytes, normalised(xtr)))


def test_jpeg_colour_resize_crop_and_normalisation(tmp_path, digits):
    x = colour(digits[0][:12])
    y = digits[1][:12]
    paths = write_images(tmp_path / "d", x, y, ".jpg", quality=90)
    ds = load_data(str(tmp_path / "d") + "?resize=20&crop=16&mean=0.485,0.456,0.406&std=0.229,0.224,0.225&split=0.25")
    assert ds.input_shape == (3, 16, 16)
    first = sorted(paths, key=lambda p: (p.parent.name, p.name))[0]
    img = Image.open(first).convert("RGB").resize((20, 20), Image.BILINEAR)
    a = np.asarray(img)[2:18, 2:18].astype(np.float32) / np.float32(255)
    want = (np.moveaxis(a, -1, 0) - np.float32([0.485, 0.456, 0.406])[:, None, None]) / np.float32([0.229, 0.224, 0.225])[:, None, None]
    whole = np.concatenate([np.asarray(ds.train_x), np.asarray(ds.test_x)])
    assert any(np.array_equal(w, want) for w in whole)
    grey = load_data(str(tmp_path / "d") + "?channels=1")
    assert grey.input_shape == (1, 32, 32)


def test_the_digest_is_cheap_and_follows_the_files(tmp_path, digits, monkeypatch):
    xtr, ytr, _, _ = digits
    paths = write_images(tmp_path / "d", xtr[:20], ytr[:20])
    before = load_data(str(tmp_path / "d")).sha256
    assert load_data(str(tmp_path / "d")).sha256 == before
    assert load_data(str(tmp_path / "d") + "?mean=0").sha256 != before
    st = os.stat(paths[0])
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_data(str(tmp_path / "d")).sha256 != before


def _fails(path, *words):
    with pytest.raises(UsageError) as err:
        ds = load_data(str(path))
        ds.train_x[:], ds.test_x[:]  # errors found at decoding time too
    text = err.value.render()
    for w in words:
        assert w in text, text
    assert err.value.exit_code == 2
    return text


def test_an_empty_class_folder_is_refused_by_name(tmp_path, digits):
    write_images(tmp_path / "d", digits[0][:10], digits[1][:10])
    (tmp_path / "d" / "zebra").mkdir()
    (tmp_path / "d" / "zebra" / "notes.txt").write_text("x")
    _fails(tmp_path / "d", "zebra", "holds no image", "1 other file")


def test_one_class_is_refused(tmp_path, digits):
    write_images(tmp_path / "d", digits[0][:5], np.zeros(5, np.int64))
    _fails(tmp_path / "d", "one class folder (0)", "at least two")


def test_train_without_test_and_loose_images_are_refused(tmp_path, digits):
    write_images(tmp_path / "a" / "train", digits[0][:6], digits[1][:6])
    _fails(tmp_path / "a", "train/ folder but no test/")
    write_images(tmp_path / "b", digits[0][:6], digits[1][:6])
    Image.fromarray(digits[0][0]).save(tmp_path / "b" / "stray.png")
    _fails(tmp_path / "b", "outside its class folders", "stray.png")
    (tmp_path / "c").mkdir()
    _fails(tmp_path / "c", "no class folders")


def test_truncated_and_unreadable_images_are_refused_before_training_by_name(tmp_path, digits):
    for suffix, cut in ((".png", 30), (".jpg", 40)):
        root = tmp_path / suffix[1:]
        paths = write_images(root, colour(digits[0][:6]), digits[1][:6], suffix)
        paths[3].write_bytes(paths[3].read_bytes()[:-cut])
        _fails(root, str(paths[3]), "truncated")
    root = tmp_path / "junk"
    paths = write_images(root, digits[0][:6], digits[1][:6])
    paths[2].write_bytes(b"not an image at all")
    _fails(root, str(paths[2]), "cannot be read")


def test_damaged_pixel_data_is_refused_when_decoded_by_name(tmp_path, digits):
    root = tmp_path / "d"
    paths = write_images(root, digits[0][:6], digits[1][:6])
    raw = bytearray(paths[1].read_bytes())
    at = raw.index(b"IDAT") + 12
    raw[at : at + 40] = bytes(40)  # header and IEND intact: only decoding finds it
    paths[1].write_bytes(bytes(raw))
    ds = load_data(str(root))  # the cheap check passes
    with pytest.raises(UsageError) as err:
        ds.train_x[:], ds.test_x[:]
    assert str(paths[1]) in err.value.message and "cannot be decoded" in err.value.message


def test_mixed_sizes_need_a_resize(tmp_path, digits):
    root = tmp_path / "d"
    paths = write_images(root, digits[0][:8], digits[1][:8])
    Image.fromarray(np.pad(digits[0][5], 2)).save(paths[5])
    _fails(root, str(paths[5]), "32x32", "same size", "resize")
    assert load_data(str(root) + "?resize=28x28").input_shape == (1, 28, 28)
    _fails(str(root) + "?crop=30", "smaller than crop=30x30")


def test_bad_options_are_refused_with_what_they_take(tmp_path, digits):
    write_images(tmp_path / "d", digits[0][:6], digits[1][:6])
    for opt, words in (("resize=0", "resize=0"), ("mean=a", "mean=a"), ("std=0", "std=0"), ("channels=2", "1 or 3"),
                       ("split=1.5", "0 < f < 1"), ("rezise=3", "did you mean 'resize'"), ("layout=nchw", "does not apply"),
                       ("mean=0.1,0.2,0.3", "3 values for 1-channel")):
        _fails(f"{tmp_path / 'd'}?{opt}", *words.split("|"))


def test_a_missing_path_says_so(tmp_path):
    text = _fails(tmp_path / "nowhere", "does not exist")
    assert "nowhere" in text


def test_options_with_no_path_are_refused_not_read_as_the_current_folder(tmp_path, monkeypatch):
    from lwdsl.data.ref import parse_ref
    from lwdsl.errors import UsageError

    monkeypatch.chdir(tmp_path)
    for text in ("?", "?resize=64", " ?crop=8"):
        with pytest.raises(UsageError, match="names no path before its options"):
            parse_ref(text)
