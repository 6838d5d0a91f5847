"""Training on the torch backend: runs repeat, progress reports, evaluation,
latency. NaN and L1 on every backend: tests/contract/test_train.py;
masks fixed through fine-tuning: tests/contract/test_prune.py."""

from __future__ import annotations

import pytest

from torch_helpers import make_ctx, make_data, torch_backend  # first: skips unless torch is selected and installed

import torch

from lwdsl.language.specs import FinetuneSpec, TrainingOptions

pytestmark = pytest.mark.torch


def test_training_repeats_exactly_for_a_seed_and_differs_across_seeds():
    backend = torch_backend()
    runs = []
    for seed in (3, 3, 4):
        backend.set_seed(0)  # the same initial weights
        handle = backend.load_model("seedcnn", (1, 28, 28), 10)
        backend.apply(handle, FinetuneSpec(epochs=1), [], make_ctx(seed=seed))
        runs.append(handle.module.fc2.weight.detach().clone())
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_baseline_training_learns_and_reports_progress():
    backend = torch_backend()
    data = make_data(shape=(1, 8, 8), classes=3, n_train=1024, n_test=256)
    handle = backend.load_model("lenet300", (1, 8, 8), 3)
    acc0, _ = backend.evaluate(handle, make_ctx(data))
    ctx = make_ctx(data)
    backend.train(handle, TrainingOptions(epochs=3, lr=0.05), ctx)
    acc1, loss1 = backend.evaluate(handle, ctx)
    assert acc1 > max(0.6, acc0 + 0.2)
    bars = ctx.extra["bars"]
    assert [(b.description, b.total, b.done) for b in bars[:3]] == [(f"train epoch {e}/3", 16, 16) for e in (1, 2, 3)]
    assert bars[3].description == "evaluate" and all(b.closed for b in bars)


def test_evaluate_is_accuracy_and_mean_cross_entropy():
    backend = torch_backend()
    data = make_data(n_test=2500)
    handle = backend.load_model("seedcnn", (1, 28, 28), 10)
    acc, loss = backend.evaluate(handle, make_ctx(data))
    with torch.no_grad():
        out = handle.module(torch.from_numpy(data.test_x))
    y = torch.from_numpy(data.test_y)
    assert acc == pytest.approx(float((out.argmax(1) == y).float().mean()))
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(out, y)), rel=1e-5)


def test_latency_is_positive_and_restores_the_thread_count():
    backend = torch_backend()
    handle = backend.load_model("lenet5", (1, 28, 28), 10)
    threads = torch.get_num_threads()
    assert backend.latency_ms(handle, 4, (1, 28, 28), threads=1) > 0
    assert torch.get_num_threads() == threads
