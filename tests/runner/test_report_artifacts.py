"""The report's "Artifacts" section: each exported file as its own runtime measured it."""

from __future__ import annotations

from lwdsl.runner.report import report_markdown


def _step(text: str, **extra) -> dict:
    metrics = {"accuracy": 0.98, "loss": 0.1, "params": 10, "nonzero_params": 10, "size_bytes": 100, "size_gzip_bytes": 90,
               "seconds": 0.0, "layers": []}
    return {"op": text.split()[0], "text": text, "metrics": metrics, **extra}


def _report(steps: list) -> dict:
    summary = {"accuracy_before": 0.98, "accuracy_after": 0.98, "accuracy_change_points": 0.0, "nonzero_compression": 1.0,
               "size_ratio": 1.0, "size_gzip_ratio": 1.0}
    return {"recipe": "r", "backend": "torch", "model": "lenet5", "data": "mnist", "seed": 0, "summary": summary, "steps": steps}


def test_each_measured_artifact_gets_a_row_and_its_ops() -> None:
    art = {"format": "onnx", "path": "model.onnx", "runtime": "onnxruntime", "size_bytes": 445_747, "accuracy": 0.9879,
           "latency_ms_b1": 0.143, "latency_ms_b32": 2.8, "int8_ops": 4, "float_ops": 1, "codes_equal": 430_500,
           "codes_total": 430_500, "ops": {"QLinearConv (int8)": 2, "Gemm (float32)": 1}, "float_layers": ["fc2"]}
    md = report_markdown(_report([_step("baseline"), _step("quantize int8"), _step("export onnx", artifacts=[art])]))
    assert "## Artifacts" in md
    row = next(line for line in md.splitlines() if line.startswith("| `export onnx` | model.onnx"))
    assert "| onnxruntime | 435.3 KiB | 98.79% | 0.143 | 2.800 | 4 / 1 | 430,500 / 430,500 |" in row
    assert "- `model.onnx` ops: QLinearConv (int8) x2, Gemm (float32) x1" in md
    assert "- `model.onnx` layers left float32: fc2" in md


def test_no_section_without_a_measured_artifact() -> None:
    plain = {"format": "torch", "path": "model-export.pt"}  # written, not measured by a runtime
    md = report_markdown(_report([_step("baseline"), _step("export torch", artifacts=[plain])]))
    assert "## Artifacts" not in md


def test_a_quantize_step_shows_its_int8_file_beside_the_same_runtimes_fp32() -> None:
    """What int8 itself bought (fp32 file / int8 file, same runtime), apart from the runtime's
    own gain over the baseline, in the summary and in the int8 files' table."""
    note = {"file": "model-int8-step2.onnx", "format": "onnx", "runtime": "onnxruntime", "size_bytes": 445_747,
            "ops": {"QLinearConv (int8)": 2}, "int8_ops": 4, "float_ops": 0, "accuracy": 0.9879, "latency_ms_b1": 0.05,
            "latency_ms_b32": 1.2, "codes_equal": 430_500, "codes_total": 430_500, "runs_float": {"fc2": "its output is a graph output"},
            "float_layers": ["fc2 (its output is a graph output)"], "fp32_latency_ms_b1": 0.04, "fp32_latency_ms_b32": 2.4,
            "int8_speedup_b1": 0.8, "int8_speedup_b32": 2.0}
    report = _report([_step("baseline"), _step("quantize int8", int8_artifact=note)])
    report["summary"].update(speedup_b1=7.9, speedup_b64=5.0)
    md = report_markdown(report)
    assert "- latency 7.90x at batch 1, 5.00x at batch 64" in md
    assert ("- int8 itself: 0.80x at batch 1, 2.00x at batch 32 over the same model as a float32 file in onnxruntime "
            "(`quantize int8`, 1 thread); the rest of the speed-up over the baseline is the runtime's; below 1x, int8 is "
            "slower than float32 there") in md
    assert "## Int8 files" in md
    assert ("| `quantize int8` | model-int8-step2.onnx | onnxruntime | 98.79% | 0.050 | 0.040 | 1.200 | 2.400 | 0.80x / 2.00x "
            "| 4 / 0 | 430,500 / 430,500 |") in md
    assert "- `quantize int8` runs in float: fc2 (its output is a graph output)" in md
    # an exported int8 file: the same line on what int8 itself bought
    art = {**note, "path": "model.onnx"}
    md = report_markdown(_report([_step("baseline"), _step("export onnx", artifacts=[art])]))
    assert "- `model.onnx` int8 itself: 0.80x at batch 1, 2.00x at batch 32 over the same model as a float32 file in onnxruntime" in md
    assert "## Int8 files" not in report_markdown(_report([_step("baseline"), _step("prune l1 50%")]))


def test_the_summary_puts_int8s_own_gain_beside_the_speed_up_over_the_baseline() -> None:
    from types import SimpleNamespace

    from lwdsl.runner.report import build_report

    note = {"runtime": "litert", "latency_ms_b1": 0.05, "latency_ms_b32": 1.2, "int8_speedup_b1": 1.6, "int8_speedup_b32": 2.1}
    steps = [_step("baseline"), _step("quantize int8", int8_artifact=note)]
    steps[0]["metrics"].update(latency_ms_b1=0.5, latency_ms_b64=10.0)
    steps[1]["metrics"] = {**steps[1]["metrics"], "latency_ms_b1": 0.05, "latency_ms_b64": 2.0}
    report = build_report(SimpleNamespace(name="r"), SimpleNamespace(name="tensorflow"), "lenet5", SimpleNamespace(name="mnist", describe=lambda: {"name": "mnist"}), 0, steps)
    s = report["summary"]
    assert (s["speedup_b1"], s["speedup_b64"]) == (10.0, 5.0)
    assert (s["int8_runtime"], s["int8_speedup_b1"], s["int8_speedup_b32"]) == ("litert", 1.6, 2.1)
    steps[0]["metrics"]["latency_ms_b1"] = None  # latency not measured: neither figure
    assert "int8_speedup_b1" not in build_report(SimpleNamespace(name="r"), SimpleNamespace(name="torch"), "lenet5",
                                                 SimpleNamespace(name="mnist", describe=lambda: {"name": "mnist"}), 0, steps)["summary"]


def test_a_pt2e_file_is_shown_beside_the_int8_onnx_file_and_a_fallback_with_its_reason() -> None:
    art = {"format": "pt2e", "path": "model.pt2", "runtime": "torch.compile (inductor)", "size_bytes": 12_000_000,
           "accuracy": None, "latency_ms_b1": 7.4, "latency_ms_b32": 160.0, "int8_ops": 21, "float_ops": 0,
           "onnx_latency_ms_b1": 19.5, "onnx_latency_ms_b32": 150.0, "faster_b1": "pt2e", "faster_b32": "onnx"}
    md = report_markdown(_report([_step("baseline"), _step("quantize int8"), _step("export pt2e", artifacts=[art])]))
    row = next(line for line in md.splitlines() if line.startswith("| `export pt2e` | model.pt2"))
    assert "| torch.compile (inductor) |" in row
    assert ("- `model.pt2` against the int8 ONNX file of the same model in onnxruntime: batch 1: 7.400 vs 19.500 ms, "
            "this file is faster, batch 32: 160.000 vs 150.000 ms, the ONNX file is faster") in md
    gone = {"format": "pt2e", "path": "model.pt2", "written": False, "runtime": "torch.compile (inductor)",
            "fallback": "inductor cannot compile it (AssertionError: expected size 20==20)"}
    md = report_markdown(_report([_step("baseline"), _step("quantize int8"), _step("export pt2e", artifacts=[gone])]))
    assert "## Artifacts" in md
    assert "- `export pt2e` wrote no file: inductor cannot compile it (AssertionError: expected size 20==20)" in md
    md = report_markdown(_report([_step("baseline"), _step("export pt2e", artifacts=[gone]), _step("export onnx", artifacts=[{
        "format": "onnx", "path": "model.onnx", "runtime": "onnxruntime", "size_bytes": 10}])]))
    assert md.count("## Artifacts") == 1 and "- `export pt2e` wrote no file" in md and "| `export onnx` | model.onnx" in md
