"""The ``quantize`` op, written once: which layers, the form of each, codes, casts, QAT,
calibration, ``auto``'s sensitivity, and every note and warning a report shows.

The numbers are the core's (:mod:`lwdsl.semantics.quant`, :mod:`lwdsl.semantics.cluster`,
:mod:`lwdsl.semantics.auto_bits`, :mod:`lwdsl.semantics.order`); the flow is here; a backend
gives :class:`QuantizeParts`, the few things only its framework can do (read and write a
layer's weight in the canonical layout, run the model, capture layer inputs, fold batch norms,
give its int8 file's engine). How the model was quantized is kept in the handle's one record,
:class:`lwdsl.backend.handle.QuantState` (:meth:`~lwdsl.backend.handle.QuantState.record`), on
every backend.

Flow of ``quantize FORM`` on the selected layers:

1. layers the backend cannot quantize are named in a warning and in the step's notes
   (``float_layers``: layer, kind, why), never left float silently;
2. batch norms are folded into the layers that will be quantized (before their codes exist);
3. ``fp16``/``bf16``: each weight rounded by :func:`~lwdsl.semantics.quant.cast_weight`; done;
4. ``auto``: the sensitivity of each layer (:func:`measure_sensitivity`) and the core's choice
   of a form per layer (:func:`lwdsl.semantics.auto_bits.auto_forms`); activations stay float;
5. every layer's codes from :func:`~lwdsl.semantics.quant.quantize_as` on its weight as it is
   (masks applied, so pruned weights get code 0; ``group=G``: one scale per G inputs of a
   row; ``grid=full``: codes ``[-2^(b-1), 2^(b-1)-1]``, noted as ``grid``); its weight becomes ``codes * scale``; a binary layer has no code 0, so its pruning
   mask is dropped, with a warning. ``method=gptq``: the calibration examples give each
   layer's ``H = X^T X`` (:func:`lwdsl.backend.calibrated.calibrated_layers`, as ``prune
   sparsegpt``: one pass on the model before the step, or with ``sequential=true`` a pass per
   group of layers on the model already quantized before them), then each layer's codes are :func:`~lwdsl.semantics.gptq.gptq_quantize`'s (the layer's keep mask
   fixes its zeros), and the notes get the calibration and each layer's relative output error
   ``||X (W - W')^T||^2 / ||X W^T||^2`` (``layer_output_error``);
6. ``mode=qat``: ``epochs`` of training through the quantizer (SGD lr 0.01, momentum 0.9,
   batch 64; masters start at the float weights);
7. ``static``/``qat`` int8: each layer's input observed on the calibration images
   (:func:`calibrate`), its uint8 :func:`~lwdsl.semantics.quant.act_qparams` kept;
8. the notes: ``quantized`` (layer -> bits, form, granularity, mode, and the activation range,
   scale and zero point of a calibrated layer), ``auto_bits`` for ``auto``;
9. int8 forms (every quantized layer int8, round to nearest, no groups) of an image model: the
   deployable int8 file written into the run folder and ``int8_artifact``, measured in its runtime beside the same runtime's fp32
   (:func:`lwdsl.backend.engines.int8_artifact` over the backend's :meth:`QuantizeParts.engine`);
   a language model (``task`` lm, token ids in) gets W8A8: the int8 weights and the calibrated
   per-tensor inputs of step 7, fake-quantized as the model evaluates (the note ``w8a8``), and,
   where the backend's engine writes models of token ids (:attr:`Engine.tokens`: torch's ONNX
   file), the same int8 file and ``int8_artifact`` (perplexity, latency beside the runtime's
   fp32), the file holding the same codes and input scales.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..data.stream import prefetched
from ..semantics.auto_bits import TRIAL_FORMS, kl_sensitivity, trial_weight
from ..semantics.auto_bits import auto_forms as core_auto_forms
from ..semantics.forms import FORM_BITS
from ..semantics.gptq import gptq_quantize
from ..semantics.hessian import output_error
from ..semantics.order import calibration_indices
from ..semantics.quant import HALF_FORMS, RangeObserver, WeightQuant, act_qparams, cast_weight, quantize_as
from ..language.specs import QuantizeSpec, TrainingOptions
from ..language.specs.quantize import LOW_BIT
from .calibrated import WeightParts, calibrated_layers
from .context import StepContext
from .engines import Engine, int8_artifact

__all__ = ["QuantizeParts", "quantize_handler", "measure_sensitivity", "calibrate", "CALIBRATION_BATCH", "ONLY_CONV_AND_LINEAR"]

#: Why a selected layer of another kind (a norm, an embedding) stays float, on every backend.
ONLY_CONV_AND_LINEAR = "only conv and linear layers are quantized"

#: Images per forward pass while calibrating and measuring sensitivity.
CALIBRATION_BATCH = 256


class QuantizeParts(WeightParts, ABC):
    """What a backend gives the ``quantize`` flow. Weights are numpy in the canonical
    (PyTorch) layout; images are NCHW float32."""

    @abstractmethod
    def candidates(self, handle: Any, layers: Sequence[str]) -> tuple[list[str], dict[str, tuple[str, str]]]:
        """The selected layers this backend quantizes, in model order, and the others:
        layer -> (its kind, why it cannot be quantized here)."""

    @abstractmethod
    def fold(self, handle: Any, names: Sequence[str], ctx: StepContext) -> None:
        """Fold the batch norms that follow ``names`` into them (:mod:`lwdsl.semantics.fold`)."""

    @abstractmethod
    def drop_mask(self, handle: Any, name: str) -> bool:
        """Forget the layer's pruning mask; True when it had one."""

    @abstractmethod
    def logits(self, handle: Any, x: np.ndarray) -> np.ndarray:
        """The model's outputs on ``x`` as it evaluates (inference mode, calibrated inputs
        fake-quantized)."""

    def fit(self, handle: Any, options: TrainingOptions, ctx: StepContext, *, label: str,
            masters: dict[str, np.ndarray]) -> Any:
        """QAT's training: the backend's :meth:`~lwdsl.backend.Backend.fit`."""
        return ctx.backend.fit(handle, options, ctx, label=label, masters=masters)

    def engine(self) -> Optional[Engine]:
        """The backend's deployable int8 file and its runtime (:class:`~lwdsl.backend.engines.Engine`),
        or None when it has none."""
        return None


def measure_sensitivity(parts: QuantizeParts, handle: Any, names: Sequence[str], spec: QuantizeSpec,
                        ctx: StepContext) -> Optional[dict]:
    """``quantize auto``: the logits of the model on the calibration images, as it is and with
    one layer at a time at each candidate's trial weight
    (:func:`~lwdsl.semantics.auto_bits.trial_weight`); the core's
    :func:`~lwdsl.semantics.auto_bits.kl_sensitivity` of each. None without training images."""
    train_x = getattr(ctx.data, "train_x", None)
    if train_x is None or not len(train_x) or not names:
        return None
    x = train_x[calibration_indices(len(train_x), spec.calibrate, ctx.seed)]

    def logits() -> np.ndarray:
        return np.concatenate([np.asarray(parts.logits(handle, x[i : i + CALIBRATION_BATCH]))
                               for i in range(0, len(x), CALIBRATION_BATCH)])

    bar = ctx.progress(1 + len(names) * len(TRIAL_FORMS), f"auto: sensitivity on {len(x)} images")
    out: dict[str, dict[str, float]] = {}
    try:
        reference = logits()
        bar.update(1)
        for name in names:
            w = parts.weight(handle, name)
            try:
                row = {}
                for form in TRIAL_FORMS:
                    parts.set_weight(handle, name, trial_weight(w, form, spec.granularity))
                    row[form] = kl_sensitivity(reference, logits())
                    bar.update(1)
                out[name] = row
            finally:
                parts.set_weight(handle, name, w)
    finally:
        bar.close()
    return {"sensitivity": out, "images": len(x)}


def calibrate(parts: QuantizeParts, handle: Any, names: Sequence[str], spec: QuantizeSpec,
              ctx: StepContext) -> dict[str, tuple[float, float]]:
    """Observe the inputs of ``names`` on the calibration images
    (:func:`~lwdsl.semantics.order.calibration_indices`) with the spec's core
    :class:`~lwdsl.semantics.quant.RangeObserver`; the handle's record keeps each layer's
    :func:`~lwdsl.semantics.quant.act_qparams`. Returns layer -> (lo, hi)."""
    n = len(ctx.data.train_x)
    if spec.calibrate > n:
        ctx.warn(f"step {ctx.index + 1} (quantize): calibrate={spec.calibrate} exceeds the {n} training images; "
                 f"calibrating on all {n}")
    idx = calibration_indices(n, spec.calibrate, ctx.seed)
    observers = {name: RangeObserver(spec.observer) for name in names}
    what = "examples" if getattr(ctx.data, "task", "classify") == "lm" else "images"
    bar = ctx.progress(-(-len(idx) // CALIBRATION_BATCH), f"calibrate {len(idx)} {what}")
    keys = (idx[start : start + CALIBRATION_BATCH] for start in range(0, len(idx), CALIBRATION_BATCH))
    try:
        for _, batch in prefetched(ctx.data.train_x, keys):
            for name, seen in zip(names, parts.layer_inputs(handle, names, batch)):
                observers[name].update(np.asarray(seen, dtype=np.float32))
            bar.update(1)
    finally:
        bar.close()
    ranges = {}
    for name in names:
        lo, hi = observers[name].range()
        handle.qstate.act[name] = act_qparams(lo, hi, 8)
        ranges[name] = (float(lo), float(hi))
    return ranges


def quantize_handler(parts: QuantizeParts) -> Callable[..., Any]:
    """The ``quantize`` handler over a backend's :class:`QuantizeParts`."""

    def quantize(handle: Any, spec: QuantizeSpec, layers: Sequence[str], ctx: StepContext) -> Any:
        """The ``quantize`` handler (int8: dynamic, static, qat, weights_only; int4, int2,
        ternary, binary, cluster, auto: weights_only, qat; fp16, bf16: casts)."""
        step = f"step {ctx.index + 1} (quantize {spec.dtype})"
        todo, left = parts.candidates(handle, layers)
        if left:
            by_why: dict[str, list[str]] = {}
            for name, (kind, why) in left.items():
                by_why.setdefault(why, []).append(f"{name} ({kind})")
            what = "; ".join(f"{', '.join(names)}: {why}" for why, names in by_why.items())
            ctx.warn(f"{step}: {len(left)} selected layer{'s stay' if len(left) > 1 else ' stays'} float32, not quantized: {what}")
            ctx.notes["float_layers"] = [{"layer": name, "kind": kind, "why": why} for name, (kind, why) in left.items()]
        mode = "weights_only" if spec.weights_only else spec.mode
        parts.fold(handle, todo, ctx)  # conv+bn -> one layer, before its codes are computed
        notes: dict[str, dict[str, Any]] = {}
        if spec.dtype in HALF_FORMS:  # a cast: float32 weights holding the half values
            for name in todo:
                parts.set_weight(handle, name, cast_weight(parts.weight(handle, name), spec.dtype))
                notes[name] = {"bits": 16, "form": spec.dtype}
            handle.qstate.record(spec, {name: spec.dtype for name in todo}, {}, "cast", ctx)
            ctx.notes["quantized"] = notes
            return handle
        low = spec.dtype in LOW_BIT
        floats = {name: parts.weight(handle, name) for name in todo}  # masks applied; qat's masters start here
        forms = {name: spec.dtype for name in todo}
        if spec.dtype == "auto":  # the core picks a form per layer; activations stay float
            measured = measure_sensitivity(parts, handle, todo, spec, ctx)
            forms, ctx.notes["auto_bits"] = core_auto_forms(floats, float(spec.budget), spec.granularity, measured)
            todo = [name for name in todo if forms[name] != "float"]
            forms = {name: forms[name] for name in todo}
            low, mode = True, ("qat" if mode == "qat" else "weights_only")
        if low:
            mode = "qat" if mode == "qat" else "weights_only"  # low-bit layers keep float activations
        quants: dict[str, WeightQuant] = {}
        errors: dict[str, float] = {}
        if spec.method == "gptq":  # calibrated layer by layer (the calibrated prune methods' flow)
            order = calibrated_layers(parts, handle, todo, spec.calibration_count(), ctx,
                                      f"quantize {spec.dtype} method=gptq", "gptq", spec.sequential)
        else:
            order = ((name, None) for name in todo)
        for name, gram in order:
            if gram is not None:
                q = gptq_quantize(floats[name], gram.h, FORM_BITS[forms[name]], spec.group, parts.keep_mask(handle, name),
                                  damp=spec.damp, block=spec.block, what=f"{step} layer {name}", grid=spec.grid)
                errors[name] = round(output_error(floats[name], q.dequantize(), gram.h), 8)
            else:
                q = quantize_as(floats[name], forms[name], spec.granularity, bits=spec.bits, group=spec.group,
                                grid=spec.grid)
            if forms[name] == "binary" and parts.drop_mask(handle, name):
                ctx.warn(f"{step}: layer {name} was pruned, but binary weights are ±scale (no code 0): "
                         "its pruned weights are non-zero now and its mask is dropped")
            parts.set_weight(handle, name, q.dequantize())
            quants[name] = q
            notes[name] = {"bits": q.bits, "form": forms[name], "granularity": spec.granularity, "mode": mode}
            if spec.method != "rtn" or spec.group is not None:
                notes[name].update(method=spec.method, **({"group": spec.group} if spec.group is not None else {}))
            if q.grid != "narrow":
                notes[name]["grid"] = q.grid
        if spec.method == "gptq" and todo:
            ctx.notes["calibration"].update(damp=spec.damp, block=spec.block)
            ctx.notes["layer_output_error"] = errors
        handle.qstate.record(spec, forms, quants, "weights_only" if low else mode, ctx)
        if mode == "qat" and todo:
            epochs = f"{spec.epochs} epoch{'s' if spec.epochs != 1 else ''}"
            parts.fit(handle, spec.training_options(), ctx,
                      label=f"quantize {spec.dtype} qat ({epochs})", masters={n: floats[n] for n in todo})
        if mode in ("static", "qat") and todo and not low:
            for name, (lo, hi) in calibrate(parts, handle, todo, spec, ctx).items():
                aq = handle.act[name]
                notes[name].update(act_range=[lo, hi], act_scale=float(aq.scale), act_zero_point=int(aq.zero_point))
        ctx.notes["quantized"] = notes
        # low-bit and grouped layers have no int8 kernels; method=gptq (weight-only) writes no int8 file
        lm = getattr(ctx.data, "task", "classify") == "lm"
        engine = parts.engine() if todo and not low and spec.group is None and spec.method == "rtn" else None
        if engine is not None and lm and not engine.tokens:
            engine = None
        if lm and mode in ("static", "qat") and todo and not low:  # W8A8: int8 weights, int8 inputs
            ctx.notes["w8a8"] = ("int8 per-channel weights and a per-tensor 8-bit input (scale, zero point) of every "
                                 "quantized linear, fake-quantized in the model; "
                                 + (f"the int8 {engine.format} file holds the same codes and scales (int8_artifact)"
                                    if engine is not None else "no int8 engine file for a language model on this backend"))
        if engine is not None:
            report = int8_artifact(engine, handle, ctx, step)
            if report is not None:
                ctx.notes["int8_artifact"] = report
        return handle

    return quantize
