"""The report of a ``quantize auto`` step: its choice as a Markdown table, the ``bits.png`` plot
referenced from report.md, and the choice printed after the run's table."""

from __future__ import annotations

import pytest

from lwdsl.runner.report import _plots, print_table, report_markdown

_LAYER = {"name": "fc", "kind": "linear", "weights": 10, "sparsity": 0.0, "requested": None}


def _step(text: str, **extra) -> dict:
    metrics = {"accuracy": 0.98, "loss": 0.1, "params": 10, "nonzero_params": 10, "size_bytes": 100, "size_gzip_bytes": 90,
               "latency_ms_b1": None, "latency_ms_b64": None, "seconds": 1.0, "layers": [_LAYER]}
    return {"op": text.split()[0], "text": text, "metrics": metrics, **extra}


def _report() -> dict:
    notes = {"budget": 4.0, "average_bits": 3.5, "sensitivity": "kl", "calibration_images": 256, "layers": [
        {"layer": "conv1", "form": "int8", "bits": 8, "weights": 500,
         "sensitivity": {"binary": 0.5, "int2": 0.25, "int4": 0.012345678, "int8": 0.0, "float": 0.0}},
        {"layer": "fc1", "form": "int2", "bits": 2, "weights": 1500,
         "sensitivity": {"binary": 0.1, "int2": 0.01, "int4": 0.001, "int8": 1e-6, "float": 0.0}}]}
    summary = {"accuracy_before": 0.98, "accuracy_after": 0.98, "accuracy_change_points": 0.0, "nonzero_compression": 1.0,
               "size_ratio": 1.0, "size_gzip_ratio": 1.0}
    steps = [_step("baseline"), _step("quantize auto budget=4", auto_bits=notes)]
    return {"recipe": "r", "backend": "torch", "model": "lenet5", "data": "mnist", "seed": 0, "summary": summary, "steps": steps}


def test_the_choice_is_a_table_with_its_plot(tmp_path):
    pytest.importorskip("matplotlib")
    report = _report()
    files = _plots(report, tmp_path)
    assert "bits.png" in files and (tmp_path / "bits.png").stat().st_size > 1000
    md = report_markdown({**report, "files": files})
    assert "## Bits per layer: `quantize auto budget=4`" in md
    assert "Budget 4 bits per weight, reached 3.500; sensitivity: KL divergence of the outputs on 256 calibration images" in md
    assert "| conv1 | 500 | int8 | 8 | 0.5 | 0.25 | 0.01235 | 0 |" in md
    assert "| fc1 | 1,500 | int2 | 2 | 0.1 | 0.01 | 0.001 | 1e-06 |" in md
    assert "![bits per layer](bits.png)" in md
    assert "![bits per layer]" not in report_markdown(report)  # no plot written: no reference


def test_the_choice_is_printed_after_the_run_table(capsys):
    print_table(_report())
    out = capsys.readouterr().out
    assert "3.500" in out and "kl)" in out and "fc1" in out and "int2" in out and "1,500" in out
