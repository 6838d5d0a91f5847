"""The runner's promises, checked with a numpy backend (no framework needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lwdsl.backend import registry as backend_mod
from lwdsl.errors import RecipeError, RunError
from lwdsl.runner.pipeline import run
from lwdsl.backend.weights import default_mode, load_weights, save_weights

from .fake_backend import FakeBackend

DATA = "synthetic:1,6,6:3"


@pytest.fixture
def fake(monkeypatch):
    be = FakeBackend()
    monkeypatch.setitem(backend_mod._instances, "fake", be)
    monkeypatch.setitem(backend_mod.BACKENDS, "fake", ("tests.runner.fake_backend", "FakeBackend", "fake"))
    monkeypatch.setenv("LWDSL_CACHE", "")
    return be


def _run(tmp_path, text, **kw):
    kw.setdefault("out", tmp_path / "run")
    kw.setdefault("checkpoint", None)
    return run(text, "linear2", backend="fake", data=DATA, quiet=True, **kw)


def test_report_has_every_metric_and_the_files(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    result = _run(tmp_path, "prune l1 0.5 on linear | prune global l1 0.7")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [s["op"] for s in report["steps"]] == ["baseline", "prune", "prune"]
    for step in report["steps"]:
        for key in ("accuracy", "params", "nonzero_params", "size_bytes", "size_gzip_bytes", "latency_ms_b1", "seconds"):
            assert key in step["metrics"], key
        assert {"name", "sparsity"} <= set(step["metrics"]["layers"][0])
    first = report["steps"][1]["metrics"]["layers"]
    assert [l["sparsity"] for l in first] == [0.5, 0.5]
    assert [l["requested"] for l in first] == [0.5, 0.5]
    assert report["steps"][2]["metrics"]["nonzero_params"] < report["steps"][1]["metrics"]["nonzero_params"]
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"report.json", "report.md", "lwdsl.lock.json", "recipe.lw", "model.lwz", "model.npz"} <= files
    lock = json.loads((tmp_path / "run" / "lwdsl.lock.json").read_text())
    assert lock["seed"] == 0 and lock["data"] == DATA and len(lock["recipe_sha256"]) == 64
    assert [s["op"] for s in lock["plan"]["steps"]] == ["prune", "prune"]
    assert result.report["summary"]["nonzero_compression"] > 1
    # outputs get the permissions a plain write would give, not the private ones of temp files
    assert (tmp_path / "run").stat().st_mode & 0o777 == default_mode(directory=True)
    assert (tmp_path / "run" / "model.lwz").stat().st_mode & 0o777 == default_mode()


def test_baseline_is_trained_once_then_cached(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    _run(tmp_path, "prune l1 0.5")
    _run(tmp_path, "prune l1 0.5")
    assert fake.calls.count("train") == 1


def test_same_seed_same_masks_other_seed_other_masks(fake, tmp_path):
    def masks_for(seed):
        r = _run(tmp_path, "prune random 0.5", seed=seed, out=None, checkpoint=None)
        return [r.model.state[k] == 0 for k in ("fc1.weight", "fc2.weight")]

    a, b, c = masks_for(1), masks_for(1), masks_for(2)
    assert all((x == y).all() for x, y in zip(a, b))
    assert not all((x == y).all() for x, y in zip(a, c))


def test_selector_matching_nothing_fails_before_any_training(fake, tmp_path):
    with pytest.raises(RecipeError) as err:
        _run(tmp_path, "finetune epochs=1\nprune l1 0.5 on conv")
    assert "train" not in fake.calls and not any(c.startswith("apply") for c in fake.calls)
    assert "step 2" in err.value.render()


def test_unsupported_step_fails_before_loading_the_model(fake, tmp_path):
    with pytest.raises(RecipeError) as err:
        _run(tmp_path, "prune l1 0.5 | quantize int8")
    assert fake.calls == []
    assert "quantize" in err.value.render() and "fake" in err.value.render()


def test_failed_run_leaves_previous_outputs_intact(fake, tmp_path):
    _run(tmp_path, "prune l1 0.5")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    fake.fail_on = "finetune"
    with pytest.raises(RunError):
        _run(tmp_path, "prune l1 0.9 | finetune epochs=1")
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    assert after == before
    failed = tmp_path / "run.failed"
    state, _ = load_weights(failed / "last-good.lwz")
    assert np.mean(state["fc1.weight"] == 0) == pytest.approx(0.9, abs=0.01)
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def test_interrupted_run_leaves_previous_outputs_intact(fake, tmp_path):
    _run(tmp_path, "prune l1 0.5")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    fake.interrupt_on = "finetune"
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "prune l1 0.9 | finetune epochs=1")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_input_checkpoint_is_byte_identical_after_the_run(fake, tmp_path):
    rng = np.random.default_rng(3)
    ckpt = tmp_path / "in.lwz"
    save_weights(ckpt, {
        "fc1.weight": rng.standard_normal((16, 36)).astype(np.float32), "fc1.bias": np.zeros(16, np.float32),
        "fc2.weight": rng.standard_normal((3, 16)).astype(np.float32), "fc2.bias": np.zeros(3, np.float32),
    })
    before = ckpt.read_bytes()
    result = _run(tmp_path, "prune global l1 0.7", checkpoint=ckpt)
    assert ckpt.read_bytes() == before
    assert "train" not in fake.calls
    assert result.report["steps"][1]["metrics"]["nonzero_params"] < result.report["steps"][0]["metrics"]["nonzero_params"]


def test_a_warning_reaches_the_report_even_when_quiet(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    fake.warn_on = "finetune"
    _run(tmp_path, "prune l1 0.5 | finetune epochs=1")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [s.get("warnings") for s in report["steps"]] == [None, None, ["fc1 stays float"]]
    assert "## Warnings\n\n- finetune epochs=1: fc1 stays float\n" in (tmp_path / "run" / "report.md").read_text()
