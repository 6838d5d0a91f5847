"""``precision=`` in a run: fp16 on the CPU refused before any work (exit 2), the report names
every training step's precision and how this CPU runs bf16, a backend that trains in fp32 only
refuses the others, and ``lwdsl.attach`` leaves autocast to the user's loop."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import lwdsl
from lwdsl.backend import registry as backend_mod
from lwdsl.backend.precision import bf16_on_cpu, precision_info, precision_warning
from lwdsl.backend.threads import cpu_flags
from lwdsl.cli.app import app
from lwdsl.errors import RecipeError

from .fake_backend import FakeBackend

DATA = "synthetic:1,28,28:10"


def test_fp16_on_the_cpu_is_refused_before_any_work_with_exit_2(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "r.lw").write_text("prune l1 0.5\nfinetune epochs=1 precision=fp16\n")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "r.lw"), "--model", "lenet300", "--data", DATA,
                                      "--device", "cpu", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "r.lw:2:1: error: step 2 `finetune epochs=1 precision=fp16`: precision=fp16 needs a GPU" in result.output
    assert "expected: precision=bf16 (autocast on the CPU) or fp32" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_the_report_names_the_precision_of_every_training_step(tmp_path):
    pytest.importorskip("torch")
    result = lwdsl.run("prune l1 0.5 | finetune epochs=1 precision=bf16 | quantize int8 mode=qat", "lenet300", data=DATA,
                       quiet=True, latency=False, device="cpu", baseline_epochs=1, out=tmp_path / "run")
    rows = result.report["steps"]
    assert [(r["op"], r.get("precision")) for r in rows] == [
        ("baseline", None), ("prune", None), ("finetune", "bf16"), ("quantize", "fp32")]
    device = result.report["device"]
    assert device["precision"] == "bf16 (step 2); fp32 (step 3)"
    assert device["bf16_cpu"] == bf16_on_cpu()
    lock = json.loads((tmp_path / "run" / "lwdsl.lock.json").read_text())
    assert lock["device"] == device
    md = (tmp_path / "run" / "report.md").read_text()
    assert f"training precision bf16 (step 2); fp32 (step 3); bf16 on this CPU: {bf16_on_cpu()}" in md
    emulated = not bf16_on_cpu().startswith("native")
    assert any("emulated" in w for w in rows[2].get("warnings", [])) == emulated


def test_how_a_cpu_runs_bf16_is_read_from_its_flags():
    assert bf16_on_cpu(frozenset({"avx2", "amx_bf16"})) == "native (amx_bf16)"
    assert bf16_on_cpu(frozenset({"avx2"})).startswith("emulated")
    assert precision_warning("bf16", "cpu", frozenset({"avx2"})).startswith("precision=bf16 on this CPU is emulated")
    assert precision_warning("bf16", "cpu", frozenset({"avx512_bf16"})) is None
    assert precision_warning("bf16", "cuda:0", frozenset()) is None
    assert precision_warning("fp32", "cpu", frozenset()) is None
    assert isinstance(cpu_flags(), frozenset)
    assert precision_info(lwdsl.parse("prune l1 0.5 | finetune"), "cpu") == {"precision": "fp32"}
    info = precision_info(lwdsl.parse("finetune precision=bf16 | finetune precision=bf16"), "cpu", frozenset())
    assert info["precision"] == "bf16 (steps 1, 2)" and info["bf16_cpu"].startswith("emulated")
    assert "bf16_cpu" not in precision_info(lwdsl.parse("finetune precision=bf16"), "cuda:0")


def test_a_backend_that_trains_in_fp32_only_refuses_bf16_before_any_work(monkeypatch):
    be = FakeBackend()
    monkeypatch.setitem(backend_mod._instances, "fake", be)
    monkeypatch.setitem(backend_mod.BACKENDS, "fake", ("tests.runner.fake_backend", "FakeBackend", "fake"))
    with pytest.raises(RecipeError, match="the fake backend trains in fp32 only, not precision=bf16"):
        lwdsl.run("finetune epochs=1 precision=bf16", "linear2", backend="fake", data="synthetic:1,4,4:3", quiet=True)
    assert be.calls == []


def test_attach_leaves_autocast_to_your_loop():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 4))
    with pytest.raises(RecipeError, match="precision=bf16 is your loop's own forward pass"):
        lwdsl.attach("finetune epochs=1 precision=bf16", model, torch.optim.SGD(model.parameters(), lr=0.1),
                     steps_per_epoch=4, data="synthetic:1,12,12:4", quiet=True)
