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


def test_a_quantize_step_lists_the_int8_engines_it_was_measured_in() -> None:
    ort = {"engine": "onnxruntime", "accuracy": 0.9879, "latency_ms_b1": 0.142, "latency_ms_b32": 2.79, "codes_equal": 430_500,
           "codes_total": 430_500}
    ao = {"engine": "torch.ao x86", "accuracy": 0.9882, "latency_ms_b1": 0.642, "latency_ms_b32": 3.3, "codes_equal": 430_500,
          "codes_total": 430_500, "kernels": "torch 2.14.1 quantized engine x86 (oneDNN/FBGEMM), CPU int8: avx512_vnni"}
    note = {**ort, "engines": {"onnxruntime": ort, "torch.ao x86": ao}}
    md = report_markdown(_report([_step("baseline"), _step("quantize int8", int8_artifact=note)]))
    assert "## Int8 engines" in md
    assert "| `quantize int8` | onnxruntime | 98.79% | 0.142 | 2.790 | 430,500 / 430,500 |" in md
    assert "| `quantize int8` | torch.ao x86 | 98.82% | 0.642 | 3.300 | 430,500 / 430,500 |" in md
    assert "CPU int8: avx512_vnni" in md
    without = {**ort, "engines": {"onnxruntime": ort}, "why_not_torch_ao": "the CPU has no VNNI/AMX int8 dot products"}
    md = report_markdown(_report([_step("baseline"), _step("quantize int8", int8_artifact=without)]))
    assert "torch.ao not used: the CPU has no VNNI/AMX int8 dot products" in md
    assert "## Int8 engines" not in report_markdown(_report([_step("baseline"), _step("prune l1 50%")]))
