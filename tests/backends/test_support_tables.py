"""Each built-in backend's static support table is the truth its ``unsupported`` tells."""

from __future__ import annotations

import pytest

from lwdsl.backend import support_table
from lwdsl.specs import DistillSpec, ExportSpec, FinetuneSpec, PruneSpec, QuantizeSpec, RegularizeSpec

STEPS = [PruneSpec(amount=0.2), FinetuneSpec(), RegularizeSpec(l1=1e-4), QuantizeSpec(dtype="int8"), DistillSpec()] + [
    ExportSpec(format=f) for f in ("onnx", "torch", "tflite", "saved_model", "keras")
]


def test_backend_answers_as_its_table(backend):
    table = support_table(backend.name)
    assert table is not None
    for step in STEPS:
        assert backend.unsupported(step) == table.unsupported(step), step
    assert {s.op for s in STEPS if table.unsupported(s) is None} >= {"prune", "finetune", "regularize"}


@pytest.mark.parametrize("fmt,words", [("tflite", "written by the tensorflow backend"), ("onnx", "not implemented on the torch backend yet")])
def test_export_reasons_name_the_right_backend(fmt, words):
    assert words in support_table("torch").unsupported(ExportSpec(format=fmt))
