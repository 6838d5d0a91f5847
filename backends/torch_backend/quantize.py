"""``quantize``: weight codes from :mod:`lwdsl.semantics.quant`, activation ranges from its
observers; this module only moves tensors.

Forms: ``int8`` (every mode below) and the low-bit forms ``int4``, ``int2``, ``ternary``,
``binary`` (``weights_only`` or ``qat``; activations stay float): the core's
:func:`~lwdsl.semantics.quant.quantize_as` gives their codes and scales, the .lwz stores them
packed; ``cluster bits=B`` (weight sharing) gets one codebook per layer from
:func:`lwdsl.semantics.cluster.cluster_weight`, code 0 kept for the pruned zeros. A binary
layer has no code 0: its pruning mask is dropped (named with ``ctx.warn``).
``auto`` takes each layer's form from :func:`lwdsl.semantics.auto_bits.choose_bits` on the
sensitivity :func:`measure_sensitivity` measures (the model run on the calibration images with
one layer at a time quantized; the numbers are the core's); ``fp16``
and ``bf16`` round the weights by :func:`~lwdsl.semantics.quant.cast_weight` (stored in 16 bits).

For every selected conv/linear layer: ``q = quantize_weight(w, 8, granularity)`` on the weight
as it is (PyTorch's layout is the canonical one; masks applied, so pruned weights get code 0),
the module's weight becomes ``q.dequantize()`` and ``q`` is kept in ``handle.quant`` (the .lwz
then stores the int8 codes, see layers.py). Per mode:

- ``weights_only`` / ``dynamic``: weights only here; the int8 artifact (int8_engine.py) keeps
  float activations (weights_only) or quantizes them at run time, per batch (dynamic). lwdsl's
  own evaluation runs float activations for both.
- ``static``: calibration on ``calibration_indices(n, calibrate, seed)`` of the training set (all
  of it, with a warning, when ``calibrate`` exceeds it): the model runs in eval mode with the
  quantized weights and float activations, and a forward pre-hook feeds each quantized layer's
  input to a :class:`RangeObserver` (``observer=``); ``act_qparams(lo, hi)`` (uint8) gives the
  layer's input quantization, applied from then on while evaluating and training
  (fakequant.py).
- ``qat``: the weights are quantized as above, then trained ``epochs`` epochs through the
  quantizer (straight-through estimator, scales fixed; SGD lr 0.01 momentum 0.9, batch 64, as
  ``finetune``'s defaults), then the activations are calibrated as in ``static``.

A selected layer that is not conv or linear (a norm, an embedding) is never silently left
float: it is named through ``ctx.warn`` and in ``ctx.notes["float_layers"]``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from lwdsl.backend import StepContext
from lwdsl.semantics.auto_bits import TRIAL_FORMS, kl_sensitivity, trial_weight
from lwdsl.semantics.auto_bits import auto_forms as core_auto_forms
from lwdsl.semantics.order import calibration_indices
from lwdsl.semantics.quant import HALF_FORMS, RangeObserver, act_qparams, cast_weight, quantize_as
from lwdsl.specs import QuantizeSpec, TrainingOptions
from lwdsl.specs.quantize import LOW_BIT

from .fakequant import act_hooks
from .fold import fold_batchnorms
from .handle import TorchModel, weight_of
from .layers import layer_kind, weighted_layers

__all__ = ["quantize", "calibrate", "QUANTIZABLE"]

#: Layer kinds this backend quantizes.
QUANTIZABLE = ("conv", "linear")

_CALIBRATION_BATCH = 256


def calibrate(handle: TorchModel, layers: Sequence[str], spec: QuantizeSpec, ctx: StepContext) -> dict[str, tuple[float, float]]:
    """Observe the inputs of ``layers`` on the calibration images; ``handle.act`` set from them.
    Returns layer -> (lo, hi)."""
    n = len(ctx.data.train_x)
    if spec.calibrate > n:
        ctx.warn(
            f"step {ctx.index + 1} (quantize): calibrate={spec.calibrate} exceeds the {n} training images; "
            f"calibrating on all {n}"
        )
    idx = calibration_indices(n, spec.calibrate, ctx.seed)
    x = torch.as_tensor(ctx.data.train_x)
    observers = {layer: RangeObserver(spec.observer) for layer in layers}

    def observe(layer: str):
        def hook(module: torch.nn.Module, args: tuple) -> None:
            observers[layer].update(args[0].detach().to(torch.float32).numpy())

        return hook

    model = handle.module
    was_training = model.training
    model.eval()
    hooks = [model.get_submodule(layer).register_forward_pre_hook(observe(layer)) for layer in layers]
    steps = -(-len(idx) // _CALIBRATION_BATCH)
    bar = ctx.progress(steps, f"calibrate {len(idx)} images")
    try:
        with torch.inference_mode():
            for start in range(0, len(idx), _CALIBRATION_BATCH):
                model(x[torch.from_numpy(idx[start : start + _CALIBRATION_BATCH])])
                bar.update(1)
    finally:
        bar.close()
        for h in hooks:
            h.remove()
        model.train(was_training)
    handle.calib = (ctx.data.train_x, idx, spec.observer)  # the torch.ao engine's own ranges (ao_engine.py)
    ranges = {}
    for layer in layers:
        lo, hi = observers[layer].range()
        handle.act[layer] = act_qparams(lo, hi)
        ranges[layer] = (lo, hi)
    return ranges


def _set_weight(handle: TorchModel, layer: str, w: np.ndarray) -> None:
    with torch.no_grad():
        weight_of(handle.module, layer).copy_(torch.from_numpy(w))


def measure_sensitivity(handle: TorchModel, names: Sequence[str], spec: QuantizeSpec, ctx: StepContext) -> Optional[dict]:
    """``quantize auto``: the logits of the model on the calibration images (eval mode, as it
    evaluates), as it is and with one layer at a time at each candidate's trial weight (the
    core's :func:`~lwdsl.semantics.auto_bits.trial_weight`); the core's
    :func:`~lwdsl.semantics.auto_bits.kl_sensitivity` of each. None without training images."""
    train_x = getattr(ctx.data, "train_x", None)
    if train_x is None or not len(train_x) or not names:
        return None
    x = torch.as_tensor(train_x[calibration_indices(len(train_x), spec.calibrate, ctx.seed)])
    model = handle.module
    was_training = model.training
    model.eval()

    def logits() -> np.ndarray:
        with torch.inference_mode(), act_hooks(handle):
            return torch.cat([model(x[i : i + _CALIBRATION_BATCH]) for i in range(0, len(x), _CALIBRATION_BATCH)]).numpy()

    bar = ctx.progress(1 + len(names) * len(TRIAL_FORMS), f"auto: sensitivity on {len(x)} images")
    out: dict[str, dict[str, float]] = {}
    try:
        reference = logits()
        bar.update(1)
        for name in names:
            w = weight_of(model, name).detach().numpy().copy()
            try:
                row = {}
                for form in TRIAL_FORMS:
                    _set_weight(handle, name, trial_weight(w, form, spec.granularity))
                    row[form] = kl_sensitivity(reference, logits())
                    bar.update(1)
                out[name] = row
            finally:
                _set_weight(handle, name, w)
    finally:
        bar.close()
        model.train(was_training)
    return {"sensitivity": out, "images": len(x)}


def auto_forms(weights: dict[str, np.ndarray], spec: QuantizeSpec, ctx: StepContext, measured: Optional[dict] = None) -> dict[str, str]:
    """``quantize auto``: the core's choice per layer (:func:`lwdsl.semantics.auto_bits.auto_forms`
    on the canonical weights and the measured sensitivity, or the weight error without one), put
    in ``ctx.notes["auto_bits"]``; layer -> form."""
    forms, ctx.notes["auto_bits"] = core_auto_forms(weights, float(spec.budget), spec.granularity, measured)
    return forms


def _cast(handle: TorchModel, spec: QuantizeSpec, todo: Sequence[str], ctx: StepContext) -> TorchModel:
    """``quantize fp16|bf16``: each weight rounded by the core's :func:`cast_weight` (float32
    holding the half value; biases stay float32); the canonical state stores the 16 bits."""
    notes = {}
    with handle.masks.unpacked():
        for name in todo:
            if name in handle.masks:
                handle.apply_mask(name)
            _set_weight(handle, name, cast_weight(weight_of(handle.module, name).detach().numpy(), spec.dtype))
            handle.quant_mode[name] = spec.dtype  # a cast layer: no codes, so not in handle.quant
            notes[name] = {"bits": 16, "form": spec.dtype}
    ctx.notes["quantized"] = notes
    return handle


def quantize(handle: TorchModel, spec: QuantizeSpec, layers: Sequence[str], ctx: StepContext) -> TorchModel:
    """The ``quantize`` handler (int8: dynamic, static, qat, weights_only; int4, int2, ternary,
    binary, cluster, auto: weights_only, qat; fp16, bf16: casts)."""
    kinds = {name: layer_kind(m) for name, m in weighted_layers(handle.module)}
    chosen = set(layers)
    ordered = [name for name in kinds if name in chosen]
    todo = [name for name in ordered if kinds[name] in QUANTIZABLE]
    left = [name for name in ordered if kinds[name] not in QUANTIZABLE]
    if left:
        what = ", ".join(f"{name} ({kinds[name]})" for name in left)
        ctx.warn(f"step {ctx.index + 1} (quantize {spec.dtype}): the torch backend cannot quantize {what}; they stay float32")
        ctx.notes["float_layers"] = [{"layer": name, "kind": kinds[name], "why": "not conv or linear"} for name in left]
    mode = "weights_only" if spec.weights_only else spec.mode
    low = spec.dtype in LOW_BIT
    fold_batchnorms(handle, todo, ctx)  # conv+bn -> one layer, before its codes are computed
    if spec.dtype in HALF_FORMS:  # folded first, as on tensorflow
        return _cast(handle, spec, todo, ctx)
    forms = {name: spec.dtype for name in todo}
    if spec.dtype == "auto":  # the core picks a form per layer; activations stay float
        with handle.masks.unpacked():
            for name in todo:
                if name in handle.masks:
                    handle.apply_mask(name)
        measured = measure_sensitivity(handle, todo, spec, ctx)
        forms = auto_forms({n: weight_of(handle.module, n).detach().numpy() for n in todo}, spec, ctx, measured)
        todo = [name for name in todo if forms[name] != "float"]
        low, mode = True, ("qat" if mode == "qat" else "weights_only")
    notes: dict[str, dict] = {}
    floats: dict[str, np.ndarray] = {}  # qat: the masters start at the float weights
    with handle.masks.unpacked():
        for name in todo:
            if name in handle.masks:
                handle.apply_mask(name)
            floats[name] = weight_of(handle.module, name).detach().numpy().copy()
            q = quantize_as(floats[name], forms[name], spec.granularity, bits=spec.bits)
            if forms[name] == "binary" and name in handle.masks:
                del handle.masks[name]
                ctx.warn(
                    f"step {ctx.index + 1} (quantize binary): layer {name} was pruned, but binary weights are ±scale "
                    "(no code 0): its pruned weights are non-zero now and its mask is dropped"
                )
            _set_weight(handle, name, q.dequantize())
            handle.quant[name] = q
            handle.quant_mode[name] = "weights_only" if low else mode  # low-bit: float activations
            notes[name] = {"bits": q.bits, "form": forms[name], "granularity": spec.granularity, "mode": mode}
    if mode == "qat" and todo:
        from .train import fit

        opts = TrainingOptions(epochs=spec.epochs, lr=0.01, momentum=0.9)
        fit(handle, opts, ctx, label=f"quantize {spec.dtype} qat ({spec.epochs} epochs)", masters=floats)
    if mode in ("static", "qat") and todo and not low:
        for name, (lo, hi) in calibrate(handle, todo, spec, ctx).items():
            aq = handle.act[name]
            notes[name].update(act_range=[lo, hi], act_scale=aq.scale, act_zero_point=aq.zero_point)
    ctx.notes["quantized"] = notes
    if todo and not low:  # low-bit layers hold int8 containers in that artifact: no gain to report
        from .int8_engine import engine_report

        ctx.notes["int8_artifact"] = engine_report(handle, ctx.data.test_x, ctx.data.test_y)
        why = ctx.notes["int8_artifact"].get("why_not_torch_ao")
        if why and "could not take" in why:
            ctx.warn(f"step {ctx.index + 1} (quantize int8): {why}; the int8 model runs in ONNX Runtime instead")
    return handle
