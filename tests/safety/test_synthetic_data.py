"""Synthetic data teaches something: each class is a pattern of its own under noise, so a
baseline trained on ``synthetic:`` learns it (on today's main, labels were a random projection
of pure noise, and a LeNet-5 baseline stayed at chance: 8-13% on 10 classes). The arrays are
the same on every call (both backends get identical data)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from lwdsl.data.builtin import load_data


def _nearest_mean_accuracy(name: str) -> float:
    d = load_data(name)
    means = np.stack([d.train_x[d.train_y == c].mean(0) for c in range(d.num_classes)]).reshape(d.num_classes, -1)
    x = d.test_x.reshape(len(d.test_x), -1)
    predicted = np.argmin((x**2).sum(1, keepdims=True) - 2 * x @ means.T + (means**2).sum(1), axis=1)
    return float((predicted == d.test_y).mean())


@pytest.mark.parametrize("name", ["synthetic:1,28,28:10", "synthetic:3,32,32:10", "synthetic:1,8,8:3", "synthetic:2,5,7:20"])
def test_each_class_is_a_pattern_a_simple_classifier_finds(name):
    assert _nearest_mean_accuracy(name) > 0.9


def test_synthetic_arrays_are_deterministic_balanced_and_unit_scale():
    a, b = load_data("synthetic:3,8,8:4"), load_data("synthetic:3,8,8:4")
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert a.train_x.dtype == np.float32 and abs(float(a.train_x.std()) - 1) < 0.05
    assert np.bincount(np.concatenate([a.train_y, a.test_y])).tolist() == [640] * 4


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_a_one_epoch_baseline_on_synthetic_data_is_far_above_chance(tmp_path, monkeypatch):
    from lwdsl.language.plan import Recipe
    from lwdsl.runner.pipeline import run

    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path))
    result = run(Recipe(), "lenet5", data="synthetic:1,28,28:10", baseline_epochs=1, latency=False, quiet=True)
    assert result.report["steps"][0]["metrics"]["accuracy"] > 0.5  # chance: 0.1
