"""The protocol's contract, run over every registered backend and the runner tests' fake one:
a backend's handlers, forms and exporters are exactly what its static support table lists, so
``lwdsl check --backend`` can never promise what a run refuses."""

from __future__ import annotations

import importlib

import pytest

from lwdsl.backend import BACKENDS, support_table
from lwdsl.backend.registry import unsupported
from lwdsl.language.specs import OPS, DistillSpec, ExportSpec, FinetuneSpec, PruneSpec, QuantizeSpec, RegularizeSpec

from tests.runner.fake_backend import FakeBackend

STEPS = [PruneSpec(amount=0.2), FinetuneSpec(), RegularizeSpec(l1=1e-4), QuantizeSpec(dtype="int8"), DistillSpec()] + [
    ExportSpec(format=f) for f in ExportSpec.FORMS
]


def _exporters(backend) -> set[str]:
    module = importlib.import_module(type(backend).__module__.rsplit(".", 1)[0] + ".export")
    return set(module.EXPORTERS)


def check_contract(backend) -> None:
    """Raise AssertionError where ``backend`` and its support table disagree."""
    table = backend.support
    assert table.backend == backend.name
    assert set(backend.handlers) == set(table.runs), "handlers and the support table's ops differ"
    for op, forms in table.runs.items():
        assert op in OPS, f"the table lists an unknown op {op}"
        unknown = set(forms) - set(OPS[op].FORMS)
        assert not unknown, f"{op}: forms {sorted(unknown)} are not forms of the op"
    for step in STEPS:
        got, listed = backend.unsupported(step), unsupported(table, step)
        if listed is None and got is not None and "pip install 'lwdsl[" in got:
            continue  # an optional extra missing here (export pt2e without torchao): refused before the run, naming it
        assert got == listed, step


def test_contract_holds_for_every_registered_backend(backend):
    check_contract(backend)
    assert support_table(backend.name) is backend.support
    assert _exporters(backend) == set(backend.support.runs.get("export", ())), "exporters differ from the table"


def test_contract_holds_for_the_fake_backend():
    check_contract(FakeBackend())


def test_contract_fails_when_a_handler_is_missing_or_a_row_has_none(backend, monkeypatch):
    monkeypatch.setattr(type(backend), "handlers", {k: v for k, v in backend.handlers.items() if k != "finetune"})
    with pytest.raises(AssertionError, match="handlers and the support table"):
        check_contract(backend)
    monkeypatch.undo()
    from lwdsl.backend import SupportTable

    unhandled = next(op for op in OPS if op not in backend.handlers) if set(OPS) - set(backend.handlers) else None
    if unhandled is None:  # every op has a handler: a table row for a handler taken away
        monkeypatch.setattr(type(backend), "handlers", {k: v for k, v in backend.handlers.items() if k != "export"})
        runs = dict(backend.support.runs)
    else:
        runs = dict(backend.support.runs, **{unhandled: ()})
    monkeypatch.setattr(type(backend), "support", SupportTable(backend.name, runs))
    with pytest.raises(AssertionError, match="handlers and the support table"):
        check_contract(backend)


def test_every_builtin_backend_has_a_table_without_importing_its_framework():
    for name in BACKENDS:
        table = support_table(name)
        assert table is not None and table.backend == name


@pytest.mark.parametrize(
    "step,words",
    [
        (ExportSpec(format="tflite"), "the torch backend cannot export tflite"),
        (ExportSpec(format="saved_model"), "the torch backend cannot export saved_model"),
        (ExportSpec(format="keras"), "the torch backend cannot export keras"),
    ],
)
def test_reasons_name_the_backend_and_the_form(step, words):
    assert support_table("torch").unsupported(step).startswith(words)
