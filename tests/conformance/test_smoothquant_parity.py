"""``smoothquant`` and a language model's W8A8 ``quantize int8`` on both backends, from one
canonical state (torch's tiny-llama initialisation with planted x100 outliers,
tests/contract/llm_smooth.py) and the same calibration sequences:

- the scales are the core's from each backend's own float32 taps: the activation maxima agree
  within float32 rounding, so the scales (notes) and the smoothed weights agree within
  ``RTOL``; from one smoothed state (torch's, loaded into both) the int8 weight codes and
  scales are bit-identical and the calibrated per-tensor input scales agree within ``RTOL``;
- W8A8 without smoothquant: codes bit-identical, input ranges within ``RTOL``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="tiny-llama on torch needs transformers (pip install 'lwdsl[llm]')")

from lwdsl.language.specs import QuantizeSpec, SmoothQuantSpec  # noqa: E402
from lwdsl.semantics.state import ACT_SCALE, CODES, SCALE  # noqa: E402

from tests.contract.llm_smooth import MODEL, SEQ, VOCAB, plant_outliers, patterns  # noqa: E402

from .cases import backend, context  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.tensorflow]

#: float32 rounding of two frameworks' forward passes (their matmuls and norms round differently).
RTOL = 1e-5


@pytest.fixture(scope="module")
def start():
    import torch

    torch.manual_seed(0)
    be = backend("torch")
    return plant_outliers(be.state(be.load_model(MODEL, (SEQ,), VOCAB)))


def _apply(name: str, state: dict, *specs):
    be = backend(name)
    handle = be.load_model(MODEL, (SEQ,), VOCAB)
    be.load_state(handle, state)
    notes = []
    for i, spec in enumerate(specs):
        kind = "norm" if spec.op == "smoothquant" else "linear"
        ctx = context(patterns(), index=i)
        handle = be.apply(handle, spec, [layer.name for layer in be.layers(handle) if layer.kind == kind], ctx)
        notes.append(ctx.notes)
    return be.state(be.finalize(handle)), notes


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(np.abs(a.astype(np.float64) - b) <= RTOL * np.maximum(np.abs(a), np.abs(b)) + 1e-30))


def test_smoothquant_gives_the_same_scales_and_weights(start):
    spec = SmoothQuantSpec(alpha=0.5, calibrate=32)
    (st, (nt,)), (sk, (nk,)) = _apply("torch", start, spec), _apply("tensorflow", start, spec)
    pt, pk = nt["smoothquant"]["pairs"], nk["smoothquant"]["pairs"]
    assert list(pt) == list(pk) and len(pt) == 4
    for norm in pt:
        assert pt[norm]["linears"] == pk[norm]["linears"]
        for key in ("scale_min", "scale_max", "act_absmax", "act_absmax_after"):
            assert pt[norm][key] == pytest.approx(pk[norm][key], rel=RTOL), (norm, key)
    assert set(st) == set(sk)
    changed = [k for k in st if not np.array_equal(st[k], start[k])]
    assert len(changed) == 2 * (4 + 3)  # per layer: 2 norms, q, k, v, gate, up
    for key in st:
        assert _close(st[key], sk[key]), key
    exact = sum(np.array_equal(st[k], sk[k]) for k in changed)
    worst = max(float(np.max(np.abs(st[k].astype(np.float64) - sk[k]) / np.maximum(np.abs(st[k]), 1e-30))) for k in changed)
    print(f"\nsmoothed tensors bit-identical on both backends: {exact} of {len(changed)}; worst relative difference {worst:.2e}")


@pytest.mark.parametrize("smooth", [False, True], ids=["w8a8", "smoothed-w8a8"])
def test_w8a8_gives_the_same_codes(start, smooth):
    state = _apply("torch", start, SmoothQuantSpec(alpha=0.5, calibrate=32))[0] if smooth else start
    spec = QuantizeSpec(dtype="int8", calibrate=32)
    (st, (nt,)), (sk, (nk,)) = _apply("torch", state, spec), _apply("tensorflow", state, spec)
    assert "w8a8" in nt and "w8a8" in nk
    # torch writes the language model's int8 ONNX Runtime file (the same codes); tensorflow has none and says so
    assert "int8_artifact" in nt and "int8_artifact" not in nk
    assert "no int8 engine file for a language model on this backend" in nk["w8a8"]
    codes = [k for k in st if k.endswith(CODES)]
    assert len(codes) == 15  # every linear layer, the head included
    for key in codes:
        assert np.array_equal(st[key], sk[key]), key
        base = key[: -len(CODES)]  # <layer>.weight
        layer = base[: -len(".weight")]
        assert np.array_equal(st[base + SCALE], sk[base + SCALE]), base
        assert _close(st[layer + ACT_SCALE], sk[layer + ACT_SCALE]), layer
