"""The data loader: idx files from LWDSL_DATA or the cache, the download path (tested with
file:// mirrors, since this machine has no internet), and the errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from lwdsl.data import builtin as data_mod
from lwdsl.data.builtin import data_shape, load_data
from lwdsl.errors import LwdslError, RunError, UsageError


def _idx(path, arr, compress=True):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path.write_bytes(gzip.compress(raw))
    else:
        path.with_suffix("").write_bytes(raw)


def _write_set(folder, n=20, compress=True):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28))
    labels = rng.integers(0, 10, n)
    _idx(folder / "train-images-idx3-ubyte.gz", images, compress)
    _idx(folder / "train-labels-idx1-ubyte.gz", labels, compress)
    _idx(folder / "t10k-images-idx3-ubyte.gz", images[:5], compress)
    _idx(folder / "t10k-labels-idx1-ubyte.gz", labels[:5], compress)
    return images, labels


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LWDSL_DATA", raising=False)
    return tmp_path


@pytest.mark.parametrize("compress", [True, False])
def test_reads_idx_files_from_lwdsl_data_and_normalises(isolated, monkeypatch, compress):
    images, labels = _write_set(isolated / "d" / "fashion-mnist", compress=compress)
    monkeypatch.setenv("LWDSL_DATA", str(isolated / "d"))
    ds = load_data("fashion-mnist", download=False)
    assert ds.train_x.shape == (20, 1, 28, 28) and ds.test_x.shape == (5, 1, 28, 28)
    assert (ds.train_y == labels).all()
    expected = (images[3, 4, 5] / 255.0 - 0.2860) / 0.3530
    assert ds.train_x[3, 0, 4, 5] == pytest.approx(expected, rel=1e-5)
    assert len(ds.sha256) == 64


def test_missing_files_say_which_and_where(isolated):
    with pytest.raises(RunError) as err:
        load_data("mnist", download=False)
    text = err.value.render()
    assert "train-images-idx3-ubyte.gz" in text and str(isolated / "cache" / "lwdsl" / "data" / "mnist") in text
    assert "LWDSL_DATA" in text


def test_download_fetches_into_the_cache_then_reads_from_it(isolated, monkeypatch):
    _write_set(isolated / "mirror")
    folder, _, mean, std = data_mod.DATASETS["mnist"]
    monkeypatch.setitem(data_mod.DATASETS, "mnist", (folder, ("file:///nonexistent/", (isolated / "mirror").as_uri() + "/"), mean, std))
    ds = load_data("mnist")
    assert ds.train_x.shape[0] == 20
    cached = isolated / "cache" / "lwdsl" / "data" / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(data_mod._FILES.values())
    (isolated / "mirror" / "train-images-idx3-ubyte.gz").unlink()  # the cache is used from now on
    assert load_data("mnist").sha256 == ds.sha256


def test_corrupt_file_is_a_clear_error(isolated, monkeypatch):
    _write_set(isolated / "d" / "mnist")
    (isolated / "d" / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    monkeypatch.setenv("LWDSL_DATA", str(isolated / "d"))
    with pytest.raises(UsageError, match="not an idx file"):  # a damaged file: bad input, exit 2
        load_data("mnist", download=False)


def test_unknown_name_suggests_the_nearest():
    with pytest.raises(LwdslError) as err:
        load_data("mnsit")
    assert "mnist" in err.value.render()


def test_synthetic_sets_are_learnable_and_deterministic():
    a, b = load_data("synthetic:3,8,8:4"), load_data("synthetic:3,8,8:4")
    assert a.train_x.shape == (2048, 3, 8, 8) and a.num_classes == 4
    assert (a.train_x == b.train_x).all() and set(np.unique(a.train_y)) == {0, 1, 2, 3}
    assert data_shape("synthetic:3,8,8:4") == ((3, 8, 8), 4) and data_shape("mnist") == ((1, 28, 28), 10)
    with pytest.raises(LwdslError) as err:
        load_data("synthetic:3,8:4")
    assert "synthetic:C,H,W:K" in err.value.render()
