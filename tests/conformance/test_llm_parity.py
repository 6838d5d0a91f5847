"""The transformer side on both backends (issue 25): ``tiny-llama`` is the same network on torch
(``transformers.LlamaForCausalLM``) and tensorflow (Keras 3 layers with Hugging Face's names):

- one canonical state loads into either, both ways, with logits equal within float32 rounding;
- ``prune wanda`` and ``prune sparsegpt`` (50% and 2:4) through each backend's handler, from the
  same weights and the same calibration sequences, give the same masks (bit-identical) and
  SparseGPT's updated weights within float32 rounding of the layer inputs (the core computes
  both from each backend's own float32 taps);
- ``quantize int4|int8|int2 method=gptq`` (per row or ``group=G``) and ``quantize int4
  group=G`` (round to nearest), on the narrow grid and ``grid=full``, give the same codes,
  scales, groups and grids (bit-identical; Keras's
  ``[in, out]`` kernels are read and written in the canonical ``[out, in]``), and GPTQ's layer
  objective is below round-to-nearest's on every targeted layer on both;
- the evaluation (next-token accuracy, token cross-entropy) agrees.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("transformers", reason="tiny-llama on torch needs transformers (pip install 'lwdsl[llm]')")

import lwdsl  # noqa: E402
from lwdsl.data.dataset import Dataset  # noqa: E402
from lwdsl.language.specs import PruneSpec  # noqa: E402

from .cases import backend, context  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.tensorflow]

SEQ, VOCAB = 32, 256
MODEL = "tiny-llama?layers=2&hidden=64&heads=4&mlp=128"


def _tokens(seed: int = 0) -> Dataset:
    """Token sequences with structure to learn (a noisy walk over the vocabulary)."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(1, 4, (96, SEQ + 1))
    seqs = (np.cumsum(steps, axis=1) + rng.integers(0, VOCAB, (96, 1))) % VOCAB
    x, y = seqs[:, :-1].astype(np.int64), seqs[:, 1:].astype(np.int64)
    return Dataset("walk", x[:64], y[:64], x[64:], y[64:], VOCAB, task="lm")


@pytest.fixture(scope="module")
def start():
    """A torch tiny-llama's canonical state (transformers' own initialisation, seed 0)."""
    import torch

    torch.manual_seed(0)
    be = backend("torch")
    return be.state(be.load_model(MODEL, (SEQ,), VOCAB))


def _logits(name: str, handle, ids: np.ndarray) -> np.ndarray:
    if name == "torch":
        import torch

        with torch.no_grad():
            return handle.module(torch.from_numpy(ids)).numpy()
    return np.asarray(handle.model(ids, training=False))


@pytest.mark.parametrize("model, outputs", [("tiny-bert?layers=2&hidden=64&heads=4&mlp=128&vocab=256", 3)], ids=["tiny-bert"])
def test_bert_gives_equal_logits_both_ways(model, outputs):
    """BERT's encoder classifier (biases, LayerNorm, GELU, position and token-type embeddings,
    the pooler) is the same network too, in inference mode (dropout off)."""
    import torch

    torch.manual_seed(1)
    ids = _tokens().test_x[:4]
    torch_be, tf_be = backend("torch"), backend("tensorflow")
    t = torch_be.load_model(model, (SEQ,), outputs)
    k = tf_be.load_model(model, (SEQ,), outputs)
    state = torch_be.state(t)
    assert set(state) == set(tf_be.state(k)) and "bert.embeddings.position_embeddings.weight" in state
    tf_be.load_state(k, state)
    a, b = _logits("torch", t, ids), _logits("tensorflow", k, ids)
    assert a.shape == b.shape == (4, outputs)
    assert np.max(np.abs(a - b)) <= 1e-5 * max(1.0, float(np.max(np.abs(a))))
    again = torch_be.load_model(model, (SEQ,), outputs)
    torch_be.load_state(again, tf_be.state(k))
    assert np.array_equal(_logits("torch", again, ids), a)


def test_one_state_gives_equal_logits_both_ways(start):
    ids = _tokens().test_x[:4]
    handles = {}
    for name in ("torch", "tensorflow"):
        be = backend(name)
        handles[name] = be.load_model(MODEL, (SEQ,), VOCAB)
        be.load_state(handles[name], start)
    a, b = _logits("torch", handles["torch"], ids), _logits("tensorflow", handles["tensorflow"], ids)
    assert a.shape == b.shape == (4, SEQ, VOCAB)
    assert np.max(np.abs(a - b)) <= 1e-5 * max(1.0, float(np.max(np.abs(a))))
    # and back: tensorflow's canonical state into a fresh torch model gives torch's logits again
    tf_state = backend("tensorflow").state(handles["tensorflow"])
    assert set(tf_state) == set(start)
    again = backend("torch").load_model(MODEL, (SEQ,), VOCAB)
    backend("torch").load_state(again, tf_state)
    assert np.array_equal(_logits("torch", again, ids), a)
    # the two backends list the same linear layers, in the same order, with the same shapes
    linear = {n: [(i.name, i.shape) for i in backend(n).layers(handles[n]) if i.kind == "linear"] for n in handles}
    assert linear["torch"] == linear["tensorflow"] and len(linear["torch"]) == 2 * 7 + 1


@pytest.mark.parametrize("spec", [dict(method="wanda", amount=0.5), dict(method="wanda", amount=0.5, nm={"n": 2, "m": 4}),
                                  dict(method="sparsegpt", amount=0.5), dict(method="sparsegpt", amount=0.5, nm={"n": 2, "m": 4}),
                                  dict(method="sparsegpt", amount=0.5, nm={"n": 2, "m": 4}, sequential=True)],
                         ids=["wanda-50", "wanda-2:4", "sparsegpt-50", "sparsegpt-2:4", "sparsegpt-2:4-sequential"])
def test_calibrated_prune_gives_the_same_masks(start, spec):
    data = _tokens()
    step = PruneSpec(**spec, calibrate=32)
    out, notes = {}, {}
    for name in ("torch", "tensorflow"):
        be = backend(name)
        handle = be.load_model(MODEL, (SEQ,), VOCAB)
        be.load_state(handle, start)
        layers = [i.name for i in be.layers(handle) if i.kind == "linear" and i.name != "lm_head"]
        ctx = context(data)
        handle = be.apply(handle, step, layers, ctx)
        out[name], notes[name] = be.state(be.finalize(handle)), ctx.notes
    targeted = [k for k in start if k.endswith("_proj.weight")]
    assert len(targeted) == 14
    for key in targeted:
        a, b = out["torch"][key], out["tensorflow"][key]
        assert np.array_equal(a == 0, b == 0), f"{key}: {int(np.count_nonzero((a == 0) != (b == 0)))} mask entries differ"
        assert np.count_nonzero(a == 0) >= a.size // 2
        if spec["method"] == "wanda":  # kept weights untouched: bit-identical
            assert np.array_equal(a, b)
        else:  # SparseGPT's update solves with each backend's own float32 inputs
            assert np.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert out["torch"]["lm_head.weight"].tolist() == start["lm_head.weight"].tolist()
    assert notes["torch"]["calibration"] == notes["tensorflow"]["calibration"]
    err_t, err_k = notes["torch"]["layer_output_error"], notes["tensorflow"]["layer_output_error"]
    assert set(err_t) == set(err_k) and all(abs(err_t[k] - err_k[k]) <= 1e-5 + 1e-4 * err_t[k] for k in err_t)


@pytest.mark.parametrize("text", ["quantize int4 method=gptq group=32 calibrate=32", "quantize int8 method=gptq calibrate=32",
                                  "quantize int2 method=gptq group=16 calibrate=32 block=24", "quantize int4 group=32",
                                  "quantize int4 method=gptq group=32 calibrate=32 grid=full", "quantize int2 group=16 grid=full"],
                         ids=["gptq-int4-g32", "gptq-int8", "gptq-int2-g16", "rtn-int4-g32", "gptq-int4-g32-full",
                              "rtn-int2-g16-full"])
def test_gptq_and_groups_give_the_same_codes(start, text):
    _same_codes_both_ways(MODEL, start, text, 14)


def _same_codes_both_ways(model: str, start: dict, text: str, count: int) -> None:
    """``text`` on every linear layer but the head of ``model`` from ``start`` on both backends:
    the same codes, scales and groups, the same .lwz, the same notes; GPTQ below round to nearest."""
    from lwdsl.backend.calibrated import gram_matrices
    from lwdsl.backends.tf_backend.quantize import KerasQuantizeParts
    from lwdsl.backends.torch_backend.quantize import TorchQuantizeParts
    from lwdsl.semantics.forms import FORM_BITS
    from lwdsl.semantics.hessian import output_error
    from lwdsl.semantics.quant import quantize_weight

    data = _tokens()
    (step,) = lwdsl.parse(text).steps
    parts = {"torch": TorchQuantizeParts(), "tensorflow": KerasQuantizeParts()}
    out, notes, quants, grams = {}, {}, {}, {}
    for name in ("torch", "tensorflow"):
        be = backend(name)
        handle = be.load_model(model, (SEQ,), VOCAB)
        be.load_state(handle, start)
        layers = [i.name for i in be.layers(handle) if i.kind == "linear" and i.name != "lm_head"]
        if step.method == "gptq":  # this backend's own calibration inputs, on the step's examples
            grams[name], _ = gram_matrices(parts[name], handle, layers, 32, context(data), "test")
        ctx = context(data)
        handle = be.apply(handle, step, layers, ctx)
        quants[name] = {k: handle.quant[k] for k in layers}
        out[name], notes[name] = be.state(be.finalize(handle)), ctx.notes
    assert len(quants["torch"]) == count and list(quants["torch"]) == list(quants["tensorflow"])
    for k, a in quants["torch"].items():
        b = quants["tensorflow"][k]
        assert (a.bits, a.group, a.axis, a.grid) == (b.bits, b.group, b.axis, b.grid) == (FORM_BITS[step.dtype], step.group, 0,
                                                                                       step.grid)
        assert np.array_equal(a.scale.view(np.uint32), b.scale.view(np.uint32)), k
        assert np.array_equal(a.codes, b.codes), f"{k}: {int(np.count_nonzero(a.codes != b.codes))} codes differ"
        if step.method == "rtn":
            assert np.array_equal(a.codes, quantize_weight(start[f"{k}.weight"], a.bits, group=step.group, grid=step.grid).codes)
    assert set(out["torch"]) == set(out["tensorflow"])  # the .lwz: the same packed codes, scales, groups, the rest as it was
    assert [key for key, value in out["torch"].items() if not np.array_equal(value, out["tensorflow"][key])] == []
    assert notes["torch"]["quantized"] == notes["tensorflow"]["quantized"]
    if step.grid == "full":  # the full grid's extra code is used, and the .lwz says the grid
        assert all(q.codes.min() == q.bounds()[0] for q in quants["torch"].values())
        assert all(f"{k}.weight.qmin" in out["torch"] for k in quants["torch"])
    if step.method == "gptq":
        assert notes["torch"]["calibration"] == notes["tensorflow"]["calibration"]
        for name in ("torch", "tensorflow"):  # the layer objective: GPTQ below round to nearest, every layer
            worse = []
            for k, q in quants[name].items():
                w, h = start[f"{k}.weight"], grams[name][k].h
                gptq = output_error(w, q.dequantize(), h)
                assert gptq == pytest.approx(notes[name]["layer_output_error"][k], abs=1e-8)
                if not gptq < output_error(w, quantize_weight(w, q.bits, group=step.group, grid=step.grid).dequantize(), h):
                    worse.append(k)
            assert not worse, f"{name}: GPTQ not below round to nearest on {worse}"


def test_evaluation_agrees(start):
    data = _tokens()
    figures = {}
    for name in ("torch", "tensorflow"):
        be = backend(name)
        handle = be.load_model(MODEL, (SEQ,), VOCAB)
        be.load_state(handle, start)
        figures[name] = be.evaluate(handle, context(data))
    (acc_t, loss_t), (acc_k, loss_k) = figures["torch"], figures["tensorflow"]
    assert acc_t == acc_k and abs(loss_t - loss_k) <= 1e-5 * loss_t
    assert loss_t == pytest.approx(np.log(VOCAB), rel=0.1)  # an untrained model: about uniform


def test_self_distillation_of_a_language_model_agrees(start):
    """``distill T=2 alpha=0.5`` of tiny-llama into itself (the teacher: the model before the
    step), SGD, 4 steps: the soft term is one KL per position averaged over the tokens, as the
    cross-entropy; both backends end within float32 rounding of each other."""
    from lwdsl.language.specs import DistillSpec

    data = _tokens()
    spec = DistillSpec(T=2.0, alpha=0.5, epochs=1, lr=0.05, momentum=0.0, batch=16)
    out, losses = {}, {}
    for name in ("torch", "tensorflow"):
        be = backend(name)
        handle = be.load_model(MODEL, (SEQ,), VOCAB)
        be.load_state(handle, start)
        teacher = be.load_model(MODEL, (SEQ,), VOCAB)
        be.load_state(teacher, start)
        ctx = dataclasses.replace(context(data), original=teacher)
        handle = be.apply(handle, spec, [i.name for i in be.layers(handle)], ctx)
        out[name] = be.state(be.finalize(handle))
        losses[name] = be.evaluate(handle, context(data))[1]
    moved = max(float(np.max(np.abs(out["torch"][k] - start[k]))) for k in start)
    assert moved > 1e-4  # the step trained
    worst = max(float(np.max(np.abs(out["torch"][k] - out["tensorflow"][k]))) for k in start)
    assert worst <= 1e-4, worst
    assert abs(losses["torch"] - losses["tensorflow"]) <= 1e-4 * losses["torch"]


@pytest.mark.parametrize("name", ["torch", "tensorflow"])
def test_the_soft_term_of_sequences_is_the_mean_kl_per_token(name):
    """``[B, L, V]`` logits: T^2 KL summed over the vocabulary, averaged over the B*L positions
    (numpy reference); ``[B, V]`` logits keep the batch mean."""
    from lwdsl.backend.losses import soft_target_loss

    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)

    def reference(a, b, T=2.0):
        la = a / T - np.log(np.exp(a / T).sum(-1, keepdims=True))
        lb = b / T - np.log(np.exp(b / T).sum(-1, keepdims=True))
        return T * T * float((np.exp(lb) * (lb - la)).sum(-1).mean())

    if name == "torch":
        import torch

        from lwdsl.backends.torch_backend.distill import TorchOps as Ops

        wrap = torch.from_numpy
    else:
        from lwdsl.backends.tf_backend._tf import tf
        from lwdsl.backends.tf_backend.distill import TfOps as Ops

        wrap = tf.constant
    for a, b in ((s, t), (s[:, 0], t[:, 0])):
        got = float(soft_target_loss(Ops(), wrap(a), wrap(b), 2.0))
        assert got == pytest.approx(reference(a, b), rel=1e-5)


GPT2 = "tiny-gpt2?layers=2&hidden=64&heads=4&mlp=128"


@pytest.fixture(scope="module")
def gpt2_start():
    """A torch tiny-gpt2's canonical state (transformers' initialisation, seed 2) with every
    tensor moved by seeded noise: biases and norms away from 0 and 1, so a layout slip shows."""
    import torch

    torch.manual_seed(2)
    be = backend("torch")
    state = be.state(be.load_model(GPT2, (SEQ,), VOCAB))
    rng = np.random.default_rng(2)
    return {k: (v + rng.normal(0.0, 0.02, v.shape)).astype(np.float32) for k, v in state.items()}


def test_gpt2_one_state_gives_equal_logits_both_ways(gpt2_start):
    """GPT-2 (``Conv1D`` projections: ``Conv1DLinear`` on torch, ``Dense`` on tensorflow, both
    ``[out, in]`` canonical; ``c_attn``'s fused q, k, v; learned positions; LayerNorm; gelu_new)."""
    ids = _tokens().test_x[:4]
    handles = {}
    for name in ("torch", "tensorflow"):
        be = backend(name)
        handles[name] = be.load_model(GPT2, (SEQ,), VOCAB)
        assert set(be.state(handles[name])) == set(gpt2_start)
        be.load_state(handles[name], gpt2_start)
    a, b = _logits("torch", handles["torch"], ids), _logits("tensorflow", handles["tensorflow"], ids)
    assert a.shape == b.shape == (4, SEQ, VOCAB)
    assert np.max(np.abs(a - b)) <= 1e-5 * max(1.0, float(np.max(np.abs(a))))
    tf_state = backend("tensorflow").state(handles["tensorflow"])
    assert all(np.array_equal(tf_state[k], gpt2_start[k]) for k in gpt2_start)  # the conversion both ways is exact
    again = backend("torch").load_model(GPT2, (SEQ,), VOCAB)
    backend("torch").load_state(again, tf_state)
    assert np.array_equal(_logits("torch", again, ids), a)
    linear = {n: [(i.name, i.shape) for i in backend(n).layers(handles[n]) if i.kind == "linear"] for n in handles}
    assert linear["torch"] == linear["tensorflow"] and linear["torch"][0] == ("transformer.h.0.attn.c_attn", (192, 64))


def test_gpt2_gptq_gives_the_same_codes(gpt2_start):
    _same_codes_both_ways(GPT2, gpt2_start, "quantize int4 method=gptq group=32 calibrate=32", 8)


def test_gpt2_fine_tuning_agrees(gpt2_start):
    """``finetune`` of tiny-gpt2 from one state, SGD, 4 steps: the two backends' weights end within
    float32 rounding of each other (7e-9 measured: the gradients of the same network)."""
    from lwdsl.language.specs import FinetuneSpec

    data = _tokens()
    spec = FinetuneSpec(epochs=1, lr=0.05, momentum=0.0, batch=16)
    out = {}
    for name in ("torch", "tensorflow"):
        be = backend(name)
        handle = be.load_model(GPT2, (SEQ,), VOCAB)
        be.load_state(handle, gpt2_start)
        handle = be.apply(handle, spec, [i.name for i in be.layers(handle)], context(data))
        out[name] = be.state(be.finalize(handle))
    moved = max(float(np.max(np.abs(out["torch"][k] - gpt2_start[k]))) for k in gpt2_start)
    assert moved > 1e-4  # the step trained
    worst = max(float(np.max(np.abs(out["torch"][k] - out["tensorflow"][k]))) for k in gpt2_start)
    assert worst <= 1e-4, worst
