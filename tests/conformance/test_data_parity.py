"""Both backends read a folder of PNG files to the same arrays, in the same batches, and train
on it alike (within the suite's float32 limits): the images are decoded in the core, once per
batch the core's order asks for, so a backend sees what the other sees."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.data.builtin import load_data
from lwdsl.data.stream import ImageArray
from lwdsl.language.specs import FinetuneSpec
from tests.data_files import mnist_u8, write_images

from .cases import BACKENDS, TrainCase, backend, context, planted_state, train_outcome

pytestmark = [pytest.mark.torch, pytest.mark.tensorflow]


def _recorded(x: ImageArray, log: list) -> ImageArray:
    def fetch(idx: np.ndarray) -> np.ndarray:
        out = x[idx]
        log.append((idx.copy(), out.copy()))
        return out

    return ImageArray(len(x), x.shape[1:], fetch, x.what)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    xtr, ytr, xte, yte = mnist_u8(640, 64)
    root = tmp_path_factory.mktemp("pngs")
    write_images(root / "train", xtr, ytr)
    write_images(root / "test", xte, yte)
    return str(root) + "?mean=0.1307&std=0.3081"


def test_both_backends_evaluate_the_same_decoded_batches(folder):
    data = load_data(folder)
    state = planted_state("lenet5", seed=1, trainable=True)
    logs: dict[str, list] = {}
    results = {}
    for name in BACKENDS:
        logs[name] = []
        data.test_x = _recorded(load_data(folder).test_x, logs[name])
        be = backend(name)
        handle = be.load_model("lenet5", (1, 28, 28), 10)
        be.load_state(handle, state)
        results[name] = be.evaluate(handle, context(data))
    assert results["torch"][0] == results["tensorflow"][0]
    assert results["torch"][1] == pytest.approx(results["tensorflow"][1], rel=1e-4)
    a, b = logs["torch"], logs["tensorflow"]
    assert len(a) == len(b) >= 1
    for (ia, xa), (ib, xb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(xa, xb)  # bit for bit: decoded once, in numpy
    assert sum(len(i) for i, _ in a) == 64


def test_a_folder_trains_alike_on_both_backends_batch_for_batch(folder):
    data = load_data(folder)
    log: list = []
    data.train_x = _recorded(data.train_x, log)
    outcome = train_outcome(TrainCase("png-folder", FinetuneSpec(epochs=1, lr=0.01, batch=32)), data)
    assert outcome.figures["steps"] == 20
    assert outcome.ok, outcome.detail
    runs = len(log) // 20  # torch, tensorflow and the two rounding-floor torch runs, each 20 batches
    assert runs == 4 and len(log) == 80
    for k in range(20):
        for r in range(1, runs):
            np.testing.assert_array_equal(log[k][0], log[r * 20 + k][0])
            np.testing.assert_array_equal(log[k][1], log[r * 20 + k][1])
    assert max(len(i) for i, _ in log) == 32  # one batch at a time, never the whole set
