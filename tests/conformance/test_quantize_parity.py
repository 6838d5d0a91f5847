"""``quantize`` on both backends from one canonical state: bit-identical codes and scales.

Every weight form (int8, int4, int2, ternary, binary) gives the same packed canonical state on
both backends bit for bit (codes packed below 8 bits).

The planted state (ties, exact zeros, equal-norm filters: :func:`cases.planted_state`) loads
into torch and tensorflow; both quantize with the core's rule on the canonical layout, so the
packed canonical states (int8 codes, float32 scales, biases) must be equal bit for bit. Static
activation ranges come from each framework's own forward pass on the same calibration images;
the frameworks' convolutions and matmuls round differently, so the ranges are compared within
``RANGE_RTOL`` of the range's width (measured: at most 6.4e-7 on lenet5 and seedcnn).
"""

from __future__ import annotations

import numpy as np
import pytest

from lwdsl.backend import support_table
from lwdsl.language.specs import QuantizeSpec

from .cases import BACKENDS, SHAPE, backend, compare_states, context, dataset, planted_state

RANGE_RTOL = 1e-5

_NOT_YET = [b for b in BACKENDS if "int8/static" not in support_table(b).runs.get("quantize", ())]
pytestmark = pytest.mark.skipif(bool(_NOT_YET), reason=f"quantize is not in the support table of: {', '.join(_NOT_YET)} yet")


def _run(model: str, spec: QuantizeSpec, prune: float = 0.0):
    from lwdsl.language.specs import PruneSpec

    state = planted_state(model)
    data = dataset(256, 64)
    out = {}
    for name in BACKENDS:
        be = backend(name)
        ctx = context(data)
        handle = be.load_model(model, SHAPE, 10)
        be.load_state(handle, state)
        layers = [i.name for i in be.layers(handle) if i.kind in ("conv", "linear")]
        if prune:
            handle = be.apply(handle, PruneSpec(scope="global", method="l1", amount=prune), layers, ctx)
        before = be.state(handle)
        handle = be.apply(handle, spec, layers, ctx)
        out[name] = {"state": be.state(be.finalize(handle)), "notes": ctx.notes.get("quantized", {}), "before": before,
                     "auto": ctx.notes.get("auto_bits")}
    return out


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(np.uint8)


def _same_state(runs: dict) -> tuple[dict, dict]:
    """The torch and tensorflow states of ``runs``, after asserting they hold the same arrays,
    with the same dtypes and shapes, bit for bit."""
    st, sk = runs["torch"]["state"], runs["tensorflow"]["state"]
    assert set(st) == set(sk)
    for k in st:
        a, b = np.asarray(st[k]), np.asarray(sk[k])
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(_bits(a), _bits(b)), k
    return st, sk


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("mode", ["dynamic", "static"])
@pytest.mark.parametrize("model", ["lenet5", "seedcnn"])
def test_codes_and_scales_are_bit_identical(model, mode, granularity):
    runs = _run(model, QuantizeSpec(dtype="int8", mode=mode, granularity=granularity, calibrate=128))
    st, sk = runs["torch"]["state"], runs["tensorflow"]["state"]
    assert set(st) == set(sk)
    packed = [k for k in st if k.endswith(".weight.codes")]
    assert packed, "no layer was quantized"
    acts = [k for k in st if ".act." in k]
    assert bool(acts) == (mode == "static")
    for k in st:
        if ".act." in k:  # from each framework's own forward pass: compared below, within RANGE_RTOL
            continue
        a, b = np.asarray(st[k]), np.asarray(sk[k])
        assert a.dtype == b.dtype and a.shape == b.shape, (k, a.dtype, b.dtype, a.shape, b.shape)
        assert np.array_equal(_bits(a), _bits(b)), k
    floats = {k: v for k, v in st.items() if np.asarray(v).dtype == np.float32 and not k.endswith(".scale")}
    assert compare_states(floats, {k: sk[k] for k in floats}).ok
    nt, nk = runs["torch"]["notes"], runs["tensorflow"]["notes"]
    assert set(nt) == set(nk) == {k[: -len(".weight.codes")] for k in packed}
    for layer in nt:
        assert nt[layer]["bits"] == nk[layer]["bits"] == 8
        if mode != "static":
            continue
        (lt, ht), (lk, hk) = nt[layer]["act_range"], nk[layer]["act_range"]
        width = max(ht - lt, 1e-12)
        assert abs(lt - lk) <= RANGE_RTOL * width and abs(ht - hk) <= RANGE_RTOL * width, (layer, nt[layer], nk[layer])
        # the canonical state carries the input quantization (uint8 scale and zero point)
        at, ak = float(st[f"{layer}.act.scale"]), float(sk[f"{layer}.act.scale"])
        assert abs(at - ak) <= RANGE_RTOL * at and abs(int(st[f"{layer}.act.zero_point"]) - int(sk[f"{layer}.act.zero_point"])) <= 1


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_finetune_after_quantize_trains_the_same_function(mode):
    """After ``quantize int8``, ``finetune`` trains through the quantizer on both backends (weights
    snapped at fixed scales; static layers' inputs fake-quantized), so the losses agree. The
    tensorflow handle gets the torch handle's activation parameters, so both train through the
    very same grid (the calibrated ranges themselves differ by framework rounding, see above)."""
    from lwdsl.language.specs import FinetuneSpec

    state = planted_state("lenet5", seed=1, trainable=True)
    data = dataset(640, 64)
    handles, losses = {}, {}
    for name in BACKENDS:
        be = backend(name)
        handle = be.load_model("lenet5", SHAPE, 10)
        be.load_state(handle, state)
        layers = [i.name for i in be.layers(handle) if i.kind in ("conv", "linear")]
        handle = be.apply(handle, QuantizeSpec(dtype="int8", mode=mode, calibrate=128), layers, context(data))
        if name == "tensorflow" and mode == "static":
            handle.act.update(handles["torch"].act)
        handle = be.apply(handle, FinetuneSpec(epochs=1, lr=0.01, batch=32), layers, context(data))
        handles[name], losses[name] = handle, np.asarray(handle.losses[:20])
    rel = np.abs(losses["torch"] - losses["tensorflow"]) / np.abs(losses["torch"])
    # the first loss comes before any update: the same weights through the same grid, so only
    # framework rounding separates them (measured 1.8e-6; 4.5e-5 when one side skipped the
    # activation fake quantization); later steps may flip a rounding at a grid boundary
    assert losses["torch"].size == 20 and rel[0] <= 1e-5 and rel.max() <= 1e-3, rel


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("dtype", ["int4", "int2", "ternary", "binary"])
@pytest.mark.parametrize("model", ["lenet5", "seedcnn"])
def test_low_bit_codes_and_scales_are_bit_identical(model, dtype, granularity):
    """Packed codes, scales, bits and shapes equal bit for bit, and equal the core's own on the
    planted weights (pruned half: zeros stay code 0 where the form has one)."""
    from lwdsl.semantics.quant import FORM_BITS, quantize_as, unpack_state

    runs = _run(model, QuantizeSpec(dtype=dtype, granularity=granularity), prune=0.5)
    st, sk = _same_state(runs)
    floats, quants = unpack_state(st)
    assert quants and all(q.bits == FORM_BITS[dtype] for q in quants.values())
    assert all(st[f"{layer}.weight.codes"].dtype == np.uint8 for layer in quants)
    before = runs["torch"]["before"]
    assert compare_states(before, runs["tensorflow"]["before"]).ok
    for layer, q in quants.items():
        w = before[f"{layer}.weight"]
        want = quantize_as(w, dtype, granularity)  # the core's codes on the pruned weights
        assert np.array_equal(want.codes, q.codes) and want.scale.tobytes() == q.scale.tobytes(), layer
        assert np.array_equal(floats[f"{layer}.weight"], want.dequantize())
        if dtype != "binary":  # pruned zeros keep code 0; binary has none
            assert (q.codes[w == 0] == 0).all() and (w == 0).any()
        else:
            assert set(np.unique(q.codes)) <= {-1, 1}
    nt, nk = runs["torch"]["notes"], runs["tensorflow"]["notes"]
    assert {k: v["bits"] for k, v in nt.items()} == {k: v["bits"] for k, v in nk.items()}


@pytest.mark.parametrize("dtype", ["int4", "ternary", "binary"])
def test_low_bit_qat_trains_the_same_function(dtype):
    """``quantize DTYPE mode=qat`` trains through the weight quantizer (fixed scales, straight
    through) on both backends: the losses agree like fine-tuning's, and the first (before any
    update) within framework rounding."""
    state = planted_state("lenet5", seed=1, trainable=True)
    data = dataset(640, 64)
    losses = {}
    for name in BACKENDS:
        be = backend(name)
        handle = be.load_model("lenet5", SHAPE, 10)
        be.load_state(handle, state)
        layers = [i.name for i in be.layers(handle) if i.kind in ("conv", "linear")]
        handle = be.apply(handle, QuantizeSpec(dtype=dtype, mode="qat", epochs=1), layers, context(data))
        losses[name] = np.asarray(handle.losses[:20])
        assert len(handle.losses) == 10  # 640 images, batch 64
    rel = np.abs(losses["torch"] - losses["tensorflow"]) / np.abs(losses["torch"])
    assert losses["torch"].size == 10 and rel[0] <= 1e-5 and rel.max() <= 1e-3, rel


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("model", ["lenet5", "seedcnn"])
def test_casts_are_bit_identical(model, dtype):
    """fp16/bf16: the same 16-bit weights on both backends, the core's rounding of the pruned
    weights (pruned zeros stay +0)."""
    from lwdsl.semantics.quant import half_bits

    runs = _run(model, QuantizeSpec(dtype=dtype), prune=0.5)
    st, sk = _same_state(runs)
    cast = [k for k in st if k.endswith(f".weight.{dtype}")]
    assert cast and not any(k.endswith(".weight") for k in st if k[: -len(".weight")] + f".weight.{dtype}" in st)
    before = runs["torch"]["before"]
    for k in cast:
        w = before[k[: -len(dtype) - 1]]
        assert st[k].dtype == np.uint16 and np.array_equal(st[k], half_bits(w, dtype))
        assert (st[k][w == 0] == 0).all()
    assert {v["bits"] for v in runs["tensorflow"]["notes"].values()} == {16}


@pytest.mark.parametrize("budget", [1.5, 3, 6])
@pytest.mark.parametrize("model", ["lenet5", "seedcnn"])
def test_auto_chooses_the_same_forms_and_codes(model, budget):
    """``quantize auto``: each backend measures the sensitivity (KL of its own logits on the same
    calibration images, rounded to 4 significant digits by the core); the measurements agree
    within float32 rounding, and the core's choice from them, the forms and the stored codes are
    identical, within the budget."""
    from lwdsl.semantics.auto_bits import TRIAL_FORMS, choose_bits
    from lwdsl.semantics.quant import unpack_state

    runs = _run(model, QuantizeSpec(dtype="auto", budget=budget), prune=0.5)
    at, ak = runs["torch"]["auto"], runs["tensorflow"]["auto"]
    assert at["sensitivity"] == ak["sensitivity"] == "kl" and at["calibration_images"] == ak["calibration_images"]
    for rt, rk in zip(at["layers"], ak["layers"]):
        assert rt["layer"] == rk["layer"]
        for f in TRIAL_FORMS:
            assert rt["sensitivity"][f] == pytest.approx(rk["sensitivity"][f], rel=2e-3, abs=1e-9), (rt["layer"], f)
    st, sk = _same_state(runs)
    nt, nk = runs["torch"]["notes"], runs["tensorflow"]["notes"]
    assert {k: v["form"] for k, v in nt.items()} == {k: v["form"] for k, v in nk.items()}
    before = runs["torch"]["before"]
    layers = [k[: -len(".weight")] for k in before if k.endswith(".weight")]
    sens = {r["layer"]: r["sensitivity"] for r in at["layers"]}
    want = {c.layer: c.form for c in choose_bits({n: before[f"{n}.weight"] for n in layers}, budget, sensitivity=sens)}
    assert {k: v["form"] for k, v in nt.items()} == {n: f for n, f in want.items() if f != "float"}
    _, quants = unpack_state(st)
    total = sum(before[f"{n}.weight"].size for n in layers)
    bits = sum(quants[n].bits * before[f"{n}.weight"].size if n in quants else 32 * before[f"{n}.weight"].size for n in layers)
    assert bits <= budget * total


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("model", ["lenet5", "seedcnn"])
def test_cluster_codes_and_codebooks_are_bit_identical(model, bits):
    """``quantize cluster``: packed codes, codebooks, bits and shapes equal bit for bit on both
    backends, and equal the core's :func:`lwdsl.semantics.cluster.cluster_weight` on the pruned
    planted weights (ties included); the pruned zeros keep code 0, whose value is +0.0."""
    from lwdsl.semantics.cluster import cluster_weight
    from lwdsl.semantics.quant import unpack_state

    runs = _run(model, QuantizeSpec(dtype="cluster", bits=bits), prune=0.5)
    st, sk = _same_state(runs)
    floats, quants = unpack_state(st)
    assert quants and all(q.bits == bits and q.codebook.size == 2**bits for q in quants.values())
    assert not any(k.endswith(".weight.scale") for k in st)  # the codebook replaces the scales
    before = runs["torch"]["before"]
    for layer, q in quants.items():
        w = before[f"{layer}.weight"]
        codes, book = cluster_weight(w, bits)
        assert np.array_equal(codes, q.codes) and book.tobytes() == q.codebook.tobytes(), layer
        assert np.array_equal(_bits(floats[f"{layer}.weight"]), _bits(book[codes]))
        assert (w == 0).any() and (q.codes[w == 0] == 0).all() and (q.codes[w != 0] != 0).all()
        assert _bits(q.codebook[:1]).tolist() == [0, 0, 0, 0]  # +0.0: pruned weights stay exact zeros
        assert len(np.unique(q.codes)) > 2 ** (bits - 1)  # most of the codebook is in use


def test_cluster_finetune_trains_the_same_function():
    """``finetune`` after ``quantize cluster`` trains through the fixed codebook on both backends
    (nearest codebook value, straight through): the losses agree like fine-tuning's, the first
    within framework rounding, and the trained weights stay on the codebook."""
    from lwdsl.language.specs import FinetuneSpec

    state = planted_state("lenet5", seed=1, trainable=True)
    data = dataset(640, 64)
    losses, books = {}, {}
    for name in BACKENDS:
        be = backend(name)
        handle = be.load_model("lenet5", SHAPE, 10)
        be.load_state(handle, state)
        layers = [i.name for i in be.layers(handle) if i.kind in ("conv", "linear")]
        handle = be.apply(handle, QuantizeSpec(dtype="cluster", bits=4), layers, context(data))
        books[name] = {k: q.codebook.tobytes() for k, q in handle.quant.items()}
        codes = {k: q.codes.copy() for k, q in handle.quant.items()}
        handle = be.apply(handle, FinetuneSpec(epochs=1, lr=0.05, batch=32), layers, context(data))
        losses[name] = np.asarray(handle.losses[:20])
        for k, q in handle.quant.items():
            assert q.codebook.tobytes() == books[name][k]  # fixed while training
        assert sum(int((q.codes != codes[k]).sum()) for k, q in handle.quant.items()) > 0  # the codes moved
    assert books["torch"] == books["tensorflow"]
    rel = np.abs(losses["torch"] - losses["tensorflow"]) / np.abs(losses["torch"])
    assert losses["torch"].size == 20 and rel[0] <= 1e-5 and rel.max() <= 1e-3, rel


def test_cluster_snap_is_the_cores_in_both_frameworks():
    """The training snap of a clustered layer (torch ``snap_levels_t``, TensorFlow
    ``snap_levels_tf``) gives the core's ``codebook[nearest_codes(w)]`` bit for bit, on random
    weights and on planted ties (midpoints between codebook values, the values themselves,
    zeros, values beyond both ends)."""
    import tensorflow as tf
    import torch

    from backends.tf_backend.train import _keras_scale, snap_levels_tf
    from backends.torch_backend.fakequant import snap_t
    from lwdsl.semantics.cluster import nearest_codes
    from lwdsl.semantics.quant import quantize_as

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (64, 50)).astype(np.float32)
    w[np.abs(w) < 0.08] = 0
    q = quantize_as(w, "cluster", bits=3)
    book = q.codebook
    mids = ((book[1:-1].astype(np.float64) + book[2:]) / 2).astype(np.float32)
    x = rng.normal(0, 0.12, (64, 50)).astype(np.float32)
    plant = np.concatenate([mids, book, np.float32([0.0, -0.0, 1.0, -1.0]), mids / 2, -mids / 2])
    x.flat[: plant.size] = plant
    want = book[nearest_codes(x, book)]
    got_t = snap_t(torch.from_numpy(x), q).numpy()
    got_k = snap_levels_tf(tf.constant(x), tf.constant(_keras_scale(None, q))).numpy()
    assert got_t.tobytes() == want.tobytes() and got_k.tobytes() == want.tobytes()
    assert np.isin(want, book).all() and len(np.unique(want)) == len(np.unique(book))


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("dtype", ["int8", "int4", "int2"])
def test_full_grid_codes_and_scales_are_bit_identical(dtype, granularity):
    """``grid=full``: the same packed state on both backends bit for bit (its ``.qmin`` too), the
    core's full-grid codes of the pruned weights, the lowest code -2^(b-1) used."""
    from lwdsl.semantics.quant import FORM_BITS, quantize_as, unpack_state

    runs = _run("seedcnn", QuantizeSpec(dtype=dtype, granularity=granularity, grid="full"), prune=0.5)
    st, _ = _same_state(runs)
    _, quants = unpack_state(st)
    assert quants and all(q.grid == "full" and int(st[f"{k}.weight.qmin"]) == -(2 ** (FORM_BITS[dtype] - 1))
                          for k, q in quants.items())
    for layer, q in quants.items():
        want = quantize_as(runs["torch"]["before"][f"{layer}.weight"], dtype, granularity, grid="full")
        assert np.array_equal(want.codes, q.codes) and want.scale.tobytes() == q.scale.tobytes(), layer
    assert min(int(q.codes.min()) for q in quants.values()) == -(2 ** (FORM_BITS[dtype] - 1))
    assert runs["torch"]["notes"] == runs["tensorflow"]["notes"]
    assert all(n["grid"] == "full" for n in runs["torch"]["notes"].values())


def test_full_grid_snap_is_the_cores_in_both_frameworks():
    """The training snap at fixed scales clamps to the layer's grid in both frameworks (torch
    ``snap_t``, TensorFlow ``snap_tf`` with the core's ``WeightQuant.bounds()``): the core's
    ``snap(w, scale, bits, grid)`` bit for bit, ties and values beyond both ends planted."""
    import tensorflow as tf
    import torch

    from backends.tf_backend.train import snap_tf
    from backends.torch_backend.fakequant import snap_t
    from lwdsl.semantics.quant import quantize_weight, snap

    rng = np.random.default_rng(0)
    for bits, grid in ((4, "full"), (2, "full"), (4, "narrow")):
        q = quantize_weight(rng.normal(0, 0.1, (32, 40)).astype(np.float32), bits, grid=grid)
        scale = q.scale.reshape(-1, 1)
        x = rng.normal(0, 0.2, (32, 48)).astype(np.float32)
        steps = np.arange(-10, 10.5, 0.5, dtype=np.float32)  # every half step, beyond qmin and qmax too
        x[:, : steps.size] = steps * scale
        want = snap(x, q.scale, bits, grid)
        got_t = snap_t(torch.from_numpy(x), q).numpy()
        got_k = snap_tf(tf.constant(x), tf.constant(scale), bits, q.bounds()).numpy()
        assert got_t.tobytes() == want.tobytes() and got_k.tobytes() == want.tobytes(), (bits, grid)
        lo, hi = q.bounds()
        assert np.rint(want / scale).min() == lo and np.rint(want / scale).max() == hi


def test_finetune_after_a_full_grid_quantize_keeps_its_grid():
    """``finetune`` after ``quantize int2 grid=full`` trains on the full grid on both backends: the
    losses agree like fine-tuning's, the codes stay in [-2, 1] with -2 used, the grid is kept."""
    from lwdsl.language.specs import FinetuneSpec

    state = planted_state("lenet5", seed=1, trainable=True)
    data = dataset(640, 64)
    losses, codes = {}, {}
    for name in BACKENDS:
        be = backend(name)
        handle = be.load_model("lenet5", SHAPE, 10)
        be.load_state(handle, state)
        layers = [i.name for i in be.layers(handle) if i.kind in ("conv", "linear")]
        handle = be.apply(handle, QuantizeSpec(dtype="int2", grid="full"), layers, context(data))
        before = {k: q.codes.copy() for k, q in handle.quant.items()}
        handle = be.apply(handle, FinetuneSpec(epochs=1, lr=0.1, batch=32), layers, context(data))
        losses[name] = np.asarray(handle.losses[:20])
        assert all(q.grid == "full" and q.codes.min() >= -2 and q.codes.max() <= 1 for q in handle.quant.values())
        assert sum(int((q.codes != before[k]).sum()) for k, q in handle.quant.items()) > 0  # the codes moved
        codes[name] = sum(int((q.codes == -2).sum()) for q in handle.quant.values())
        assert codes[name] > 0
    rel = np.abs(losses["torch"] - losses["tensorflow"]) / np.abs(losses["torch"])
    assert losses["torch"].size == 20 and rel[0] <= 1e-5 and rel.max() <= 1e-3, rel


@pytest.mark.parametrize("spec", [QuantizeSpec(dtype="int4", granularity="per_tensor"), QuantizeSpec(dtype="cluster", bits=3)],
                         ids=["int4-per-tensor", "cluster-3"])
def test_sparse_packed_state_is_bit_identical_and_round_trips_through_lwz(spec, tmp_path):
    """A model pruned to 10% stores its big layers' codes sparsely (bitmap of the non-zero codes and
    those codes only) in the same bytes on both backends; each backend loads the other's ``.lwz``
    back to the same codes, scales (per tensor stays 0-d) and packed state."""
    from lwdsl.semantics.quant import sparse_pays, unpack_state
    from lwdsl.backend.weights import gzip_size, save_weights

    runs = _run("lenet5", spec, prune=0.9)
    st, sk = _same_state(runs)
    _, quants = unpack_state(st)
    sparse = {layer for layer in quants if f"{layer}.weight.nonzero" in st}
    assert "fc1" in sparse  # 400,000 weights, 10% kept
    assert sparse == {layer for layer, q in quants.items() if sparse_pays(q.codes.size, int(np.count_nonzero(q.codes)), q.bits)}
    for name, other in (("torch", "tensorflow"), ("tensorflow", "torch")):
        path = tmp_path / f"{other}.lwz"
        save_weights(path, runs[other]["state"])
        be = backend(name)
        back = be.state(be.load_model("lenet5", SHAPE, 10, checkpoint=path))
        assert set(back) == set(st)
        for k in st:
            assert np.array_equal(_bits(np.asarray(back[k])), _bits(np.asarray(st[k]))) and np.shape(back[k]) == np.shape(st[k]), (name, k)
    # the same model stored with all codes packed is larger after gzip
    from lwdsl.semantics import quant as Q

    dense = dict(st)
    for layer in sparse:
        dense.pop(f"{layer}.weight.nonzero")
        pack = Q.pack_indices if quants[layer].codebook is not None else Q.pack_codes
        dense[f"{layer}.weight.codes"] = pack(quants[layer].codes, quants[layer].bits)
    save_weights(tmp_path / "dense.lwz", dense)
    assert gzip_size(tmp_path / "torch.lwz") < gzip_size(tmp_path / "dense.lwz")


def test_nm_pruned_int4_state_is_the_n_m_layout_in_the_same_bytes_on_both_backends(tmp_path):
    """``prune nm=2:4`` then ``quantize int4``: both backends store every pruned, quantized layer in
    the N:M layout (kept codes and each group's rank, from the masks they hold) in the same
    bytes; each loads the other's ``.lwz`` back to the same codes, scales and masks (the file
    gives them back: ``unpack_keep``, a kept weight of code 0 included)."""
    from lwdsl.backend.weights import load_weights, save_weights
    import lwdsl
    from lwdsl.semantics.quant import unpack_state
    from lwdsl.semantics.state import unpack_keep

    prune, quantize = lwdsl.parse("prune nm=2:4\nquantize int4").steps
    state, data, out, masks = planted_state("lenet5"), dataset(256, 64), {}, {}
    for name in BACKENDS:
        be, ctx = backend(name), context(data)
        handle = be.load_model("lenet5", SHAPE, 10)
        be.load_state(handle, state)
        layers = [i.name for i in be.layers(handle) if i.kind in ("conv", "linear")]
        handle = be.apply(be.apply(handle, prune, layers, ctx), quantize, layers, ctx)
        out[name], masks[name] = be.state(handle), be.masks_of(handle)  # before finalize: masks held
    st, sk = out["torch"], out["tensorflow"]
    assert set(st) == set(sk) and [k for k in st if not np.array_equal(_bits(np.asarray(st[k])), _bits(np.asarray(sk[k])))] == []
    nm = {k[: -len(".weight.nm")] for k in st if k.endswith(".weight.nm")}
    assert {"fc1", "fc2"} <= nm and all(st[f"{layer}.weight.nm"].tolist() == [2, 4] for layer in nm)
    keep = unpack_keep(st)
    _, quants = unpack_state(st)
    assert all(np.array_equal(keep[layer], masks["torch"][layer]) for layer in nm)
    assert any(((quants[layer].codes == 0) & keep[layer]).any() for layer in nm)  # kept weights of code 0 stay kept
    for name, other in (("torch", "tensorflow"), ("tensorflow", "torch")):
        path = tmp_path / f"{other}.lwz"
        save_weights(path, out[other])
        be = backend(name)
        back = be.load_model("lenet5", SHAPE, 10, checkpoint=path)
        _, again = unpack_state(load_weights(path)[0])
        assert all(np.array_equal(again[k].codes, quants[k].codes) and again[k].scale.tobytes() == quants[k].scale.tobytes() for k in quants)
        assert all(np.array_equal(back.quant[k].codes, quants[k].codes) for k in quants)
        got = be.masks_of(back)  # the N:M layers' masks come back with the file
        assert set(got) == nm and all(np.array_equal(got[layer], masks["torch"][layer]) for layer in nm)
