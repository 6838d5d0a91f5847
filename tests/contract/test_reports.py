"""The report contract: the same recipe on every backend writes a report.json of the same shape.

Each recipe runs through the Python API (``lwdsl.run``, synthetic data, a one-epoch baseline,
latency off) on every selected backend, and the reports are compared with the first backend's:

- every step's entry has the same keys at every level (notes, metrics, per-layer rows), lists
  of the same length, and leaves of the same kind (text, number, flag, null);
- text leaves are equal strings (the step's text, forms, modes, layer names, cache notes), and
  so are warnings, word for word; numbers may differ (accuracy, loss, sizes, seconds, ranges
  measured on weights each framework trained its own way), flags and nulls may not;
- what a backend's own runtime does with its deployable file (:data:`RUNTIME_FACTS`: which
  file, format and runtime, the ops it runs, the layers it runs in float and why) is compared
  by kind only, as a number is: the torch backend writes an ONNX file for ONNX Runtime, the
  tensorflow backend a ``.tflite`` for LiteRT, whose converter keeps small layers float in its
  dynamic-range mode;
- a run whose training becomes NaN fails with the same error text and hint on every backend,
  and keeps the same failed report.

Needs two backends; with fewer it is skipped, with the reason.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _FRAMEWORK, selected_backends

BACKENDS = [b for b in selected_backends() if importlib.util.find_spec(_FRAMEWORK.get(b, b)) is not None]
pytestmark = pytest.mark.skipif(len(BACKENDS) < 2, reason=f"the report contract compares two backends; available: {BACKENDS}")

MODEL, DATA = "seedcnn", "synthetic:1,28,28:10"

RECIPES = {
    "quantize-int8-static": "prune l1 0.5 | quantize int8 mode=static calibrate=3000",  # > 2048 images: a warning
    "quantize-int8-dynamic": "quantize int8 mode=dynamic",
    "quantize-int4": "prune l1 0.5 | quantize int4",
    "quantize-binary-pruned": "prune l1 0.5 | quantize binary",  # masks dropped: one warning a layer
    "quantize-fp16": "quantize fp16",
    "quantize-auto": "quantize auto budget=4 calibrate=64",
    "distill-soft": "prune l1 0.5 | distill T=2 alpha=0.5 epochs=1 batch=256",
    "distill-student": "distill student=seedcnn_student T=2 alpha=0.5 epochs=1 batch=256",
    "finetune": "prune l1 0.5 | finetune epochs=1 lr=0.01 batch=256",
    "regularize": "regularize l1=0.0001 epochs=1 batch=256",
}


def _run(recipe: str, model: str, backend: str, out: Path) -> dict[str, Any]:
    import lwdsl

    lwdsl.run(recipe, model, data=DATA, backend=backend, quiet=True, latency=False, baseline_epochs=1, out=out)
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """recipe name -> backend -> its report.json (each run once, when first asked for)."""
    cache: dict[tuple[str, str], dict] = {}

    def get(name: str) -> dict[str, dict]:
        for be in BACKENDS:
            if (name, be) not in cache:
                cache[name, be] = _run(RECIPES[name], MODEL, be, tmp_path_factory.mktemp(f"{name}-{be}") / "run")
        return {be: cache[name, be] for be in BACKENDS}

    return get


#: Leaves (by path in a step's entry) that say what the backend's own runtime does with its file.
RUNTIME_FACTS = frozenset(f"/int8_artifact/{k}" for k in ("file", "format", "runtime", "ops", "runs_float", "float_layers"))


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "flag"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where ``b`` departs from ``a``: keys, list lengths, kinds of leaves, texts and flags
    (numbers may differ)."""
    if _kind(a) != _kind(b):
        return [f"{where or '/'}: {_kind(a)} {a!r:.80} vs {_kind(b)} {b!r:.80}"]
    if where in RUNTIME_FACTS:
        return []
    if isinstance(a, dict):
        out = []
        if set(a) != set(b):
            out.append(f"{where or '/'}: keys only in the first: {sorted(set(a) - set(b))}, only in the second: {sorted(set(b) - set(a))}")
        for k in sorted(set(a) & set(b)):
            out += differences(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items vs {len(b)}: {a!r:.200} vs {b!r:.200}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, (str, bool)) or a is None:
        return [] if a == b else [f"{where}: {a!r} vs {b!r}"]
    return []  # a number: a measurement


def _warnings(report: dict) -> list[list[str]]:
    return [step.get("warnings", []) for step in report["steps"]]


def report_differences(ref: dict, got: dict, ignore: frozenset = frozenset()) -> list[str]:
    """How ``got`` departs from ``ref``: top-level and summary keys, warnings word for word,
    every step's entry (:func:`differences`); notes named in ``ignore`` are left out."""
    out = []
    if set(got) != set(ref):
        out.append(f"report keys: {sorted(set(ref) ^ set(got))}")
    if set(got.get("summary", {})) != set(ref.get("summary", {})):
        out.append(f"summary keys: {sorted(set(ref['summary']) ^ set(got['summary']))}")
    if len(got["steps"]) != len(ref["steps"]):
        out.append(f"{len(ref['steps'])} steps vs {len(got['steps'])}")
    for i, (want, have) in enumerate(zip(ref["steps"], got["steps"])):
        want = {k: v for k, v in want.items() if k not in ignore}
        have = {k: v for k, v in have.items() if k not in ignore}
        out += [f"step {i} ({want['text']}) {d}" for d in differences(want, have)]
    return out


#: Differences between the backends' reports found by this suite and not fixed yet: recipe ->
#: (notes that differ, why). Their cases are xfail(strict): fixing the product makes them pass,
#: and the strict xfail then fails until the entry goes.
KNOWN: dict[str, tuple[frozenset, str]] = {}


def _case(name: str):
    if name in KNOWN:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN[name][1]))
    return name


def _compare(by_backend: dict, ignore: frozenset = frozenset()) -> list[str]:
    ref = by_backend[BACKENDS[0]]
    return [f"{BACKENDS[0]} vs {be}: {d}" for be in BACKENDS[1:] for d in report_differences(ref, by_backend[be], ignore)]


@pytest.mark.parametrize("name", [_case(n) for n in RECIPES])
def test_every_backend_writes_the_same_report_shape_notes_and_warnings(reports, name):
    by_backend = reports(name)
    for report in by_backend.values():
        assert [s["op"] for s in report["steps"]] == ["baseline", *[p.split()[0] for p in RECIPES[name].split(" | ")]]
    diff = _compare(by_backend)
    assert not diff, "\n".join(diff)


@pytest.mark.parametrize("name", list(KNOWN))
def test_the_known_differences_are_all_there_is(reports, name):
    """Beside the notes of a known difference, the reports of its recipe agree."""
    diff = _compare(reports(name), KNOWN[name][0])
    assert not diff, "\n".join(diff)


def test_the_cases_say_what_they_are_meant_to(reports):
    """The recipes above reach the notes and warnings they are there for (on the first backend;
    the test above holds the others to it)."""
    steps = {name: reports(name)[BACKENDS[0]]["steps"] for name in
             ("quantize-int8-static", "quantize-binary-pruned", "quantize-auto", "distill-soft", "distill-student", "quantize-fp16")}
    static = steps["quantize-int8-static"][-1]
    assert {"quantized", "warnings"} <= set(static) and "calibrate=3000" in static["warnings"][0]
    assert {"act_range", "act_scale", "act_zero_point", "form", "bits", "granularity", "mode"} <= set(static["quantized"]["conv1"])
    assert len(steps["quantize-binary-pruned"][-1]["warnings"]) == 4
    assert "auto_bits" in steps["quantize-auto"][-1]
    assert steps["quantize-fp16"][-1]["quantized"]["fc1"] == {"bits": 16, "form": "fp16"}
    assert {"teacher_cache", "teacher_cache_seconds"} <= set(steps["distill-soft"][-1])
    assert steps["distill-student"][-1]["student"]["replaces"] == MODEL
    for name in ("quantize-int8-static", "quantize-int8-dynamic"):  # every backend writes and measures its int8 file
        for be, report in reports(name).items():
            art = report["steps"][-1]["int8_artifact"]
            step = len(report["steps"]) - 1  # the quantize step, last (the baseline is steps[0])
            assert art["file"] == f"model-int8-step{step}.{art['format']}" and art["file"] in report["files"], (be, art)
            assert art["codes_equal"] == art["codes_total"] > 0 and 0 <= art["accuracy"] <= 1, (be, art)
            for b in (1, 32):  # the same model as a float32 file in the same runtime, beside the int8 file
                assert art[f"latency_ms_b{b}"] > 0 and art[f"fp32_latency_ms_b{b}"] > 0, (be, art)
                assert art[f"int8_speedup_b{b}"] == round(art[f"fp32_latency_ms_b{b}"] / art[f"latency_ms_b{b}"], 3)


def test_a_layer_left_float_is_reported_alike(tmp_path):
    """``quantize`` on every layer of a model with batch norms (resnet8): the norms stay float,
    named in the ``float_layers`` note and one warning, in the same words on every backend."""
    recipe = "quantize int8 mode=dynamic on all"
    by_backend = {be: _run(recipe, "resnet8", be, tmp_path / be) for be in BACKENDS}
    ref = by_backend[BACKENDS[0]]["steps"][-1]
    assert [f["kind"] for f in ref["float_layers"]] == ["norm"] * 9 and len(ref["warnings"]) == 1
    for be in BACKENDS[1:]:
        diff = differences(ref, by_backend[be]["steps"][-1])
        assert not diff, f"{BACKENDS[0]} vs {be}:\n" + "\n".join(diff)


def test_a_nan_training_fails_with_the_same_error_on_every_backend(tmp_path):
    """A checkpoint whose classifier weights are near float32's largest (finite, so it loads):
    the logits overflow and the first finetune step's loss is NaN; the run fails
    with the same message and hint, and keeps the same failed report, on every backend."""
    import lwdsl
    from lwdsl.backend import get_backend
    from lwdsl.errors import RunError
    from lwdsl.backend.weights import save_weights

    be0 = get_backend(BACKENDS[0])
    state = be0.state(be0.load_model(MODEL, (1, 28, 28), 10))
    state["fc2.weight"][:] = 3e38
    save_weights(tmp_path / "nan.lwz", state)
    recipe = "finetune epochs=1 lr=0.01 batch=256"
    said, failed = {}, {}
    for be in BACKENDS:
        with pytest.raises(RunError) as err:
            lwdsl.run(recipe, MODEL, data=DATA, backend=be, checkpoint=tmp_path / "nan.lwz", quiet=True, latency=False,
                      out=tmp_path / be)
        said[be] = (err.value.message, err.value.hint)
        failed[be] = json.loads((tmp_path / f"{be}.failed" / "report.json").read_text())
        assert not (tmp_path / be).exists()
    ref = said[BACKENDS[0]]
    assert "step 1 (finetune): the loss became nan at epoch 1, step 1 of 8" in ref[0] and "lr=0.01" in ref[1]
    for be in BACKENDS[1:]:
        assert said[be] == ref, (BACKENDS[0], be)
        assert failed[be]["error"] == failed[BACKENDS[0]]["error"]
        diff = differences(failed[BACKENDS[0]], failed[be])
        assert not diff, diff


def test_the_lock_file_versions_name_the_framework_build_and_what_the_run_imported(backend, monkeypatch):
    """One rule on every backend (Backend.versions): its own packages with their build's version
    string, and a package the run imported for a model (transformers, KerasHub, ...) beside them."""
    import importlib
    import sys
    import types

    from lwdsl.backend.protocol import USED_PACKAGES

    versions = backend.versions()
    for name in backend.packages:
        assert versions[name] == str(importlib.import_module(name).__version__)
    monkeypatch.setitem(sys.modules, USED_PACKAGES[-1], types.SimpleNamespace(__version__="9.9.9"))
    assert backend.versions()[USED_PACKAGES[-1]] == "9.9.9"
