"""Sensitivity, ``prune auto``'s allocation and the level search give the same numbers and the
same masks on torch and tensorflow from the same planted weights."""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.backend.sensitivity import measure_sensitivity
from lwdsl.language.specs import FinetuneSpec, PruneSpec

from .cases import BACKENDS, SHAPE, backend, compare_states, context, dataset, planted_state

pytestmark = [pytest.mark.torch, pytest.mark.tensorflow]


_TRAINED: dict = {}


def trained_state(model: str) -> dict:
    """The planted weights trained a little by one backend (torch), so that the probes change
    the answers (an untrained net answers one class whatever is pruned); both backends then
    start from this same state."""
    if model not in _TRAINED:
        be = backend("torch")
        handle = _loaded("torch", model, planted_state(model, trainable=True))
        be.apply(handle, FinetuneSpec(epochs=3, lr=0.05, batch=32), [], context(dataset(512, 64)))
        _TRAINED[model] = be.state(handle)
    return _TRAINED[model]


def _loaded(name: str, model: str, state: dict) -> object:
    be = backend(name)
    handle = be.load_model(model, SHAPE, 10)
    be.load_state(handle, state)
    return handle


@pytest.mark.parametrize("model", ["lenet300"])  # lenet5's conv layers: its curves in prune auto's notes, below
def test_sensitivity_is_the_same_on_both_backends(model):
    state = trained_state(model)
    data = dataset(256, 256)
    out = {}
    for name in BACKENDS:
        be = backend(name)
        handle = _loaded(name, model, state)
        layers = [i.name for i in be.layers(handle) if i.kind in ("conv", "linear")]
        out[name] = measure_sensitivity(be, handle, layers, context(data), amounts=(0.3, 0.6, 0.9),
                                        forms=("int8", "int4", "int2"), samples=200)
    t, f = out["torch"], out["tensorflow"]
    assert t["baseline"]["accuracy"] == f["baseline"]["accuracy"]
    for a, b in zip(t["layers"], f["layers"]):
        assert (a["layer"], a["weights"]) == (b["layer"], b["weights"])
        for p, q in zip(a["prune"] + a["bits"], b["prune"] + b["bits"]):
            assert p["accuracy"] == q["accuracy"], (a["layer"], p)
            assert p["loss"] == pytest.approx(q["loss"], rel=1e-4, abs=1e-6)
    accs = {p["accuracy"] for r in t["layers"] for p in r["prune"]}
    assert len(accs) > 1  # the probes change the answers: the comparison is not of constants


@pytest.mark.slow  # 56 evaluations a backend: ~20-40 s on 2 shared cores
def test_prune_auto_chooses_the_same_amounts_and_masks():
    state = trained_state("lenet5")
    data = dataset(256, 64)
    notes, states = {}, {}
    for name in BACKENDS:
        be = backend(name)
        handle = _loaded(name, "lenet5", state)
        ctx = context(data)
        layers = [i.name for i in be.layers(handle) if i.kind in ("conv", "linear")]
        handle = be.apply(handle, PruneSpec(method="auto", amount=0.7), layers, ctx)
        notes[name], states[name] = ctx.notes["auto_prune"], be.state(be.finalize(handle))
    assert notes["torch"] == notes["tensorflow"]  # threshold, counts, reasons and every probe's accuracy
    assert len({r["amount"] for r in notes["torch"]["layers"]}) > 1  # not uniform: the sensitivity decided
    outcome = compare_states(states["torch"], states["tensorflow"])
    assert outcome.ok, outcome.detail


def test_level_search_takes_the_same_path():
    state = trained_state("lenet300")
    data = dataset(128, 256)
    notes, states = {}, {}
    for name in BACKENDS:
        be = backend(name)
        handle = _loaded(name, "lenet300", state)
        ctx = context(data)
        handle = be.apply(handle, PruneSpec(method="l1", amount="auto", drop=2.0, epochs=0), ["fc1", "fc2", "fc3"], ctx)
        notes[name], states[name] = ctx.notes["level_search"], be.state(be.finalize(handle))
    t, f = notes["torch"], notes["tensorflow"]
    assert [(x["level"], x["within"], x["accuracy"]) for x in t["trajectory"]] == \
        [(x["level"], x["within"], x["accuracy"]) for x in f["trajectory"]]
    assert t["chosen"] == f["chosen"]
    outcome = compare_states(states["torch"], states["tensorflow"])
    assert outcome.ok, outcome.detail
    assert np.isclose(t["baseline_accuracy"], f["baseline_accuracy"])


@pytest.mark.slow  # two searches of ~30-70 evaluations a backend
def test_prune_auto_of_macs_removes_the_same_filters():
    state = trained_state("lenet5")
    data = dataset(256, 64)
    notes, states = {}, {}
    for name in BACKENDS:
        be = backend(name)
        handle = _loaded(name, "lenet5", state)
        ctx = context(data)
        layers = [i.name for i in be.layers(handle) if i.kind in ("conv", "linear")]
        handle = be.apply(handle, PruneSpec(method="auto", amount=0.75, of="macs"), layers, ctx)
        notes[name], states[name] = ctx.notes["auto_channels"], be.state(be.finalize(handle))
    t, f = notes["torch"], notes["tensorflow"]
    for key in ("baseline", "target", "kept", "chosen", "groups", "left_whole"):
        assert t[key] == f[key], key
    assert [(s["group"], s["channels"], s["macs"], s["accuracy"]) for s in t["steps"]] == \
        [(s["group"], s["channels"], s["macs"], s["accuracy"]) for s in f["steps"]]
    assert t["search"]["accuracy"] == f["search"]["accuracy"] and t["uniform"]["accuracy"] == f["uniform"]["accuracy"]
    outcome = compare_states(states["torch"], states["tensorflow"])
    assert outcome.ok, outcome.detail
