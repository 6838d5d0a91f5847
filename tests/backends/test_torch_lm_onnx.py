"""The ONNX Runtime file of a language model on torch (issue 25): ``export onnx`` of tiny-llama,
tiny-gpt2 and tiny-bert (token ids in, logits out; dynamic batch, the run's fixed sequence
length) in float32, and after ``quantize int8`` (W8A8) the int8 file: lwdsl's codes and input
scales in QDQ form, run by ONNX Runtime's ``MatMulIntegerToFloat`` kernels, its logits those of
lwdsl's simulated W8A8 model."""

from __future__ import annotations

import numpy as np
import pytest

from torch_helpers import torch_backend  # first: skips unless torch is selected and installed

pytest.importorskip("transformers", reason="transformer models need transformers (pip install 'lwdsl[llm]')")
pytest.importorskip("onnxruntime", reason="the ONNX file needs onnxruntime")

import torch  # noqa: E402

import lwdsl  # noqa: E402
from lwdsl.backend import StepContext  # noqa: E402
from lwdsl.data.dataset import Dataset  # noqa: E402
from lwdsl.runner.progress import NullBar  # noqa: E402

VOCAB, SEQ = 96, 16
MODELS = {
    "tiny-llama": "tiny-llama?layers=1&hidden=64&heads=2&mlp=128",
    "tiny-gpt2": "tiny-gpt2?layers=1&hidden=64&heads=2&mlp=128",
    "tiny-bert": "tiny-bert?layers=1&hidden=64&heads=2&mlp=128&vocab=96",
}


def _data(classes: int = 0) -> Dataset:
    """Random token sequences: next-token targets (``task`` lm), or with ``classes`` one label
    per sequence (BERT's sequence classifier; no run feeds it data yet, the engine does)."""
    rng = np.random.default_rng(0)
    seqs = rng.integers(0, VOCAB, (48, SEQ + 1))
    if classes:
        labels = rng.integers(0, classes, 48)
        return Dataset("walk", seqs[:32, :-1], labels[:32], seqs[32:, :-1], labels[32:], classes)
    return Dataset("walk", seqs[:32, :-1], seqs[:32, 1:], seqs[32:, :-1], seqs[32:, 1:], VOCAB, task="lm")


def _ctx(data: Dataset, index: int = 0) -> StepContext:
    return StepContext(data=data, seed=0, index=index, progress=lambda total, desc: NullBar())


def _model(name: str):
    be = torch_backend()
    be.set_seed(0)
    classes = 3 if name == "tiny-bert" else VOCAB
    return be, be.load_model(MODELS[name], (SEQ,), classes)


def _simulated(handle, x: np.ndarray) -> np.ndarray:
    from lwdsl.backends.torch_backend.fakequant import act_hooks

    handle.module.eval()
    with torch.inference_mode(), act_hooks(handle):
        return handle.module(torch.from_numpy(x)).numpy()


def _quantized(name: str, recipe: str = "quantize int8 calibrate=16"):
    be, handle = _model(name)
    data = _data(3 if name == "tiny-bert" else 0)
    layers = [layer.name for layer in be.layers(handle) if layer.kind == "linear"]
    steps = lwdsl.parse(recipe).steps
    notes = {}
    for i, step in enumerate(steps):
        ctx = _ctx(data, i)
        chosen = [layer.name for layer in be.layers(handle)] if step.op == "smoothquant" else layers
        handle = be.apply(handle, step, chosen, ctx)
        notes.update(ctx.notes)
    return handle, layers, notes, data


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_float_file_gives_torch_logits_at_any_batch(name):
    """Float32 ``export onnx`` of each transformer: token ids (int64) in, logits out, a dynamic
    batch; ONNX Runtime's logits equal torch's within float32 rounding, and every linear layer's
    weight is found under its own name (what the int8 rewrite looks for)."""
    from lwdsl.backends.torch_backend.int8_engine import ONNX, session

    be, handle = _model(name)
    model = ONNX.export(handle)
    names = {t.name for t in model.graph.initializer}
    linears = [layer.name for layer in be.layers(handle) if layer.kind == "linear"]
    assert all(f"{n}.weight_t" in names or f"{n}.weight" in names for n in linears)
    sess = session(model.SerializeToString())
    assert sess.get_inputs()[0].type == "tensor(int64)"
    x = _data().test_x[:5]
    with torch.inference_mode():
        ref = handle.module.eval()(torch.from_numpy(x)).numpy()
    got = sess.run(None, {"input": x})[0]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, recipe", [
    ("tiny-llama", "quantize int8 calibrate=16"),
    pytest.param("tiny-llama", "smoothquant alpha=0.5 calibrate=16\nquantize int8 calibrate=16", marks=pytest.mark.slow),
    pytest.param("tiny-gpt2", "quantize int8 calibrate=16", marks=pytest.mark.slow),
    pytest.param("tiny-bert", "quantize int8 calibrate=16", marks=pytest.mark.slow),
])
def test_the_w8a8_file_holds_lwdsl_codes_and_scales_and_runs_int8(name, recipe):
    """After ``quantize int8`` the file is a real int8 ONNX Runtime artifact: every linear layer's
    int8 codes are lwdsl's (per channel), each layer's input is quantized with lwdsl's calibrated
    scale and zero point, and ONNX Runtime runs every one in an int8 kernel (no weighted op left
    float). Its logits are the simulated W8A8 model's: the same uint8 inputs and int8 weights, an
    exact int32 sum in ORT against a float32 one in torch, so they differ only where float32
    rounding moves a later layer's input across a rounding boundary (one code step); the bound
    below is 1e-3 of the logits' range, measured at about 2e-7 absolute on tiny-llama."""
    from onnx import numpy_helper

    from lwdsl.backend.engines import codes_agreement
    from lwdsl.backends.torch_backend.int8_engine import ONNX, build_onnx, session

    handle, layers, notes, data = _quantized(name, recipe)
    assert set(handle.quant) == set(layers) and set(handle.act) == set(layers)
    model, info = build_onnx(handle)
    assert info["int8"] == {layer: "static" for layer in layers} and not info["float"]
    built = ONNX.build(handle)
    equal, total, _ = codes_agreement(built.codes, handle.quant)
    assert equal == total == sum(q.codes.size for q in handle.quant.values())
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    scales = {(float(inits[n.input[1]]), int(inits[n.input[2]])) for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert scales == {(float(aq.scale), int(aq.zero_point)) for aq in handle.act.values()}
    inv = ONNX.inventory(built.data, handle)
    assert inv.int8_ops == len(layers) and inv.float_ops == 0, inv.ops
    x = data.test_x
    got = session(built.data).run(None, {"input": x})[0]
    ref = _simulated(handle, x)
    assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max()
    if name != "tiny-bert":  # a language model: the step's own note says the file is there
        art = notes["int8_artifact"]
        assert art["codes_equal"] == art["codes_total"] and art["int8_ops"] == len(layers) and art["float_ops"] == 0
        assert "perplexity" in art and art["fp32_latency_ms_b1"] > 0 and "the int8 onnx file" in notes["w8a8"]


def test_the_file_perplexity_is_the_simulated_models():
    """The perplexity the step notes for the int8 file (ONNX Runtime) is the one lwdsl's own
    evaluation gives the simulated W8A8 model, on the same test sequences."""
    from lwdsl.backends.torch_backend.train import evaluate

    handle, _, notes, data = _quantized("tiny-llama")
    _, loss = evaluate(handle, _ctx(data))
    assert notes["int8_artifact"]["perplexity"] == pytest.approx(float(np.exp(loss)), rel=1e-4)


@pytest.mark.slow  # a second quantized model and its file
def test_weights_only_int8_keeps_float_kernels_and_says_so():
    """``quantize int8 weights_only``: the file holds lwdsl's int8 weights, the kernels are float
    (no input scales to run int8 with), each layer named with why."""
    from lwdsl.backends.torch_backend.int8_engine import ONNX

    handle, layers, notes, _ = _quantized("tiny-llama", "quantize int8 weights_only")
    built = ONNX.build(handle)
    assert not handle.act and set(built.runs_float) == set(layers)
    assert all("weights_only" in why for why in built.runs_float.values())
    assert "w8a8" not in notes
