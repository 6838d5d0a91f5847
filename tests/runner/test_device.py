"""``--device``: resolved, checked before any work, and named in the report and lock file."""

from __future__ import annotations

import json

import pytest

from lwdsl.backend import get_backend
from lwdsl.backend.threads import check_device, cpu_model
from lwdsl.errors import UsageError


@pytest.mark.parametrize("bad, near", [("gpu", None), ("cuda:x", None), ("cpuu", "cpu")])
def test_a_device_that_is_not_one_is_refused_with_the_names(bad, near):
    with pytest.raises(UsageError, match="is not a device") as err:
        check_device(bad)
    assert "auto, cpu, cuda, cuda:N or mps" in err.value.hint
    assert (f"did you mean '{near}'" in err.value.hint) == (near is not None)


def test_cpu_model_names_the_processor():
    assert cpu_model() and cpu_model() != "unknown CPU"


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_auto_and_cpu_resolve_and_a_missing_gpu_is_a_clear_error(backend):
    be = get_backend(backend)
    assert be.set_device("cpu") == {"device": "cpu", "model": cpu_model()}
    auto = be.set_device("auto")
    assert auto["device"].startswith("cuda") or auto["device"] in ("cpu", "mps")
    if auto["device"] == "cpu":  # this machine has no GPU: asking for one fails before any work
        with pytest.raises(UsageError, match="--device cuda:1"):
            be.set_device("cuda:1")
    be.set_device("cpu")


def test_cuda_training_matches_the_cpu(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine: the GPU path runs where the device tool lends one")
    import lwdsl

    recipe = "prune l1 0.5 | finetune epochs=1 lr=0.05 | quantize int8"
    cpu = lwdsl.run(recipe, "lenet300", data="synthetic:1,28,28:10", quiet=True, latency=False, device="cpu", baseline_epochs=1)
    gpu = lwdsl.run(recipe, "lenet300", data="synthetic:1,28,28:10", quiet=True, latency=False, device="cuda", baseline_epochs=1)
    assert gpu.report["device"]["device"].startswith("cuda")
    assert abs(gpu.report["summary"]["accuracy_after"] - cpu.report["summary"]["accuracy_after"]) < 0.02


def test_the_report_and_lock_file_name_the_device_and_its_model(tmp_path):
    import lwdsl

    result = lwdsl.run("finetune epochs=1", "lenet300", data="synthetic:1,28,28:10", quiet=True, latency=False,
                       device="cpu", baseline_epochs=1, out=tmp_path / "run")
    want = {"device": "cpu", "model": cpu_model(), "precision": "fp32"}
    assert result.report["device"] == want
    lock = json.loads((tmp_path / "run" / "lwdsl.lock.json").read_text())
    assert lock["device"] == want and lock["world_size"] == 1
    assert f"Device `cpu` ({cpu_model()})" in (tmp_path / "run" / "report.md").read_text()


def test_the_command_line_refuses_a_bad_device_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from lwdsl.cli.app import app

    (tmp_path / "r.lw").write_text("finetune epochs=1\n")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "r.lw"), "--model", "lenet300", "--data", "mnist",
                                      "--device", "gpu", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--device 'gpu' is not a device" in result.output
    assert not (tmp_path / "out").exists()
