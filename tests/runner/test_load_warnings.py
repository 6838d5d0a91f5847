"""What loading the model warns (:class:`lwdsl.errors.LoadWarning`: a tied head untied, codes
read as float32) reaches the run's baseline row, said like every run warning; any other
warning raised while loading is shown as before, not put in the report."""

from __future__ import annotations

import json
import warnings

import pytest

from lwdsl.backend import registry as backend_mod
from lwdsl.errors import LoadWarning
from lwdsl.runner.pipeline import run

from .fake_backend import FakeBackend

DATA = "synthetic:1,6,6:3"


class WarningBackend(FakeBackend):
    def load_model(self, *args, **kwargs):
        warnings.warn("--model linear2: its head was tied", LoadWarning)
        warnings.warn("a library's own warning", UserWarning)
        return super().load_model(*args, **kwargs)


def test_a_load_warning_is_in_the_baseline_row_and_another_warning_is_only_shown(monkeypatch, tmp_path):
    be = WarningBackend()
    monkeypatch.setitem(backend_mod._instances, "fake", be)
    monkeypatch.setitem(backend_mod.BACKENDS, "fake", ("tests.runner.fake_backend", "FakeBackend", "fake"))
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="a library's own warning") as shown:
        run("prune l1 0.5", "linear2", backend="fake", data=DATA, quiet=True, out=tmp_path / "run", checkpoint=None)
    assert not any(issubclass(w.category, LoadWarning) for w in shown)  # the run says it, as its other warnings
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [s.get("warnings") for s in report["steps"]] == [["--model linear2: its head was tied"], None]
