"""The one quantization record (:class:`lwdsl.backend.handle.QuantState`) on every backend: the
same quantize steps leave the same record (each layer's mode, casts, the model-level settings,
the calibration reference), a saved state and a resume point keep it."""

from __future__ import annotations

import json

import pytest

import lwdsl
from lwdsl.backend import get_backend
from lwdsl.language.specs import QuantizeSpec

from .helpers import make_ctx, make_data

SHAPE, LAYERS, CONV, FC = (1, 28, 28), ["conv1", "conv2", "fc1", "fc2"], ["conv1", "conv2"], ["fc1", "fc2"]


def _settings(mode: str, bits: int, calibrate: int = 32) -> dict:
    return {"mode": mode, "granularity": "per_channel", "calibrate": calibrate, "observer": "minmax", "bits": bits}


def _int8(mode: str) -> QuantizeSpec:
    return QuantizeSpec(dtype="int8", mode=mode, calibrate=32)


STATIC_CALIB = {"count": 32, "seed": 0, "observer": "minmax"}

#: name -> (steps: (spec, layers), the record they leave: modes, settings, calibration, layers with input ranges)
RECIPES = {
    "int8 static": ([(_int8("static"), LAYERS)], dict.fromkeys(LAYERS, "static"), _settings("static", 8), STATIC_CALIB, LAYERS),
    "int8 dynamic": ([(_int8("dynamic"), LAYERS)], dict.fromkeys(LAYERS, "dynamic"), _settings("dynamic", 8), None, []),
    "int4 weights_only": ([(QuantizeSpec(dtype="int4"), LAYERS)], dict.fromkeys(LAYERS, "weights_only"),
                          _settings("weights_only", 4, 256), None, []),
    "fp16": ([(QuantizeSpec(dtype="fp16"), LAYERS)], dict.fromkeys(LAYERS, "fp16"), None, None, []),
    # low-bit layers keep float activations: the int8 step's settings stay, whichever came first
    "int4 | int8": ([(QuantizeSpec(dtype="int4"), FC), (_int8("static"), CONV)],
                    {**dict.fromkeys(FC, "weights_only"), **dict.fromkeys(CONV, "static")}, _settings("static", 8), STATIC_CALIB, CONV),
    "int8 | int4": ([(_int8("static"), LAYERS), (QuantizeSpec(dtype="int4"), FC)],
                    {**dict.fromkeys(CONV, "static"), **dict.fromkeys(FC, "weights_only")}, _settings("static", 8), STATIC_CALIB, CONV),
    # a cast layer forgets its codes and input range
    "int8 | fp16": ([(_int8("static"), LAYERS), (QuantizeSpec(dtype="fp16"), ["fc2"])],
                    {**dict.fromkeys(["conv1", "conv2", "fc1"], "static"), "fc2": "fp16"}, _settings("static", 8), STATIC_CALIB,
                    ["conv1", "conv2", "fc1"]),
}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_the_same_quantize_steps_leave_the_same_record_on_every_backend(backend, recipe, tmp_path):
    steps, modes, settings, calib, ranged = RECIPES[recipe]
    be, data = backend, make_data(n_train=64, n_test=32)
    h = be.load_model("lenet5", SHAPE, 10)
    for spec, layers in steps:
        h = be.apply(h, spec, layers, make_ctx(data))
    q = h.qstate
    assert q.meta() == {"mode": modes, "settings": settings, "calib": calib}
    assert be.handle_meta(h) == q.meta()
    assert q.casts == {n: m for n, m in modes.items() if m == "fp16"}
    assert set(h.quant) == {n for n, m in modes.items() if m != "fp16"} and sorted(h.act) == ranged
    if calib is not None:
        assert q.calib.train_x is data.train_x and len(q.calibration_images()) == 32  # a reference to the run's images
    # a copy holds the same record; the saved state brings back codes, ranges and casts
    assert be.copy_model(h).qstate.meta() == q.meta()
    back = be.load_model("lenet5", SHAPE, 10)
    be.load_state(back, be.state(h))
    assert back.qstate.casts == q.casts and set(back.quant) == set(h.quant) and sorted(back.act) == ranged
    loaded = {n: m if m == "fp16" else "static" if n in ranged else "weights_only" for n, m in modes.items()}
    assert back.qstate.mode == loaded  # a file holds no mode: input ranges make a layer static
    assert back.qstate.settings is None and back.qstate.calib is None  # nor the step's settings
    be.set_handle_meta(back, json.loads(json.dumps(be.handle_meta(h))), data)  # as a resume point keeps it
    assert back.qstate.meta() == q.meta()
    if calib is not None:
        assert back.qstate.calibration_images().tobytes() == q.calibration_images().tobytes()


DATA = "synthetic:1,12,12:4"


def _run(recipe: str, backend_name: str, out, **kw):
    return lwdsl.run(recipe, "lenet300", data=DATA, quiet=True, latency=False, baseline_epochs=1, out=out, backend=backend_name, **kw)


def test_a_resume_point_keeps_the_record_and_the_int8_export(backend_name, kit, tmp_path, monkeypatch):
    """A run stopped after ``quantize int8`` resumes with the same record (modes, settings, the
    calibration reference on the resumed run's images), so its export writes the int8 file the
    uninterrupted run writes (the tensorflow backend wrote a float32 .tflite before)."""
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    recipe = f"quantize int8 mode=static calibrate=32 | export {kit.engine().format}"
    whole = _run(recipe, backend_name, tmp_path / "whole")
    be = get_backend(backend_name)
    real, calls = be.apply, []

    def apply(*a, **k):
        calls.append(1)
        if len(calls) > 1:  # Ctrl-C as the export begins
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(be, "apply", apply)
    with pytest.raises(KeyboardInterrupt):
        _run(recipe, backend_name, tmp_path / "cut")
    monkeypatch.undo()
    point = json.loads((tmp_path / "cut.resume" / "progress.json").read_text())
    assert point["done"] == 1 and point["meta"] == be.handle_meta(whole.model)
    assert point["meta"]["settings"]["mode"] == "static" and set(point["meta"]["mode"].values()) == {"static"}
    resumed = _run(recipe, backend_name, tmp_path / "cut", resume=True)
    (want,), (got,) = whole.report["steps"][-1]["artifacts"], resumed.report["steps"][-1]["artifacts"]
    assert got["int8_ops"] == want["int8_ops"] > 0 and got["ops"] == want["ops"] and got["size_bytes"] == want["size_bytes"]
    assert be.handle_meta(resumed.model) == be.handle_meta(whole.model)
