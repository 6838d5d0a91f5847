"""``quantize``: codes and scales from :mod:`lwdsl.semantics.quant`, on the canonical layout.

Forms: ``int8`` (every mode below) and the low-bit forms ``int4``, ``int2``, ``ternary``,
``binary`` (``weights_only`` or ``qat``; activations stay float), all through the core's
:func:`~lwdsl.semantics.quant.quantize_as` (the same call as the torch backend's). A binary
layer has no code 0: its pruning mask is dropped (named with ``ctx.warn``). ``cluster bits=B``
(weight sharing) gets one codebook per layer from :func:`lwdsl.semantics.cluster.cluster_weight`,
code 0 kept for the pruned zeros. ``auto`` takes each
layer's form from :func:`lwdsl.semantics.auto_bits.choose_bits` on the sensitivity
:func:`measure_sensitivity` measures (the model run on the calibration images, one layer at a
time quantized; the numbers are the core's); ``fp16`` and ``bf16`` round
the kernels by :func:`~lwdsl.semantics.quant.cast_weight` (stored in 16 bits, ``qconfig["cast"]``).

For each selected conv/dense layer the kernel is converted to the canonical (PyTorch) layout,
:func:`~lwdsl.semantics.quant.quantize_weight` gives its codes and scales (the one definition
both backends share), and ``codes * scale`` is written back into the Keras variable with the
same conversion the weights use. So identical weights give bit-identical codes and scales on
both frameworks; the handle keeps them (``handle.quant``) and the canonical state stores them
as int8 codes (:func:`lwdsl.semantics.quant.pack_state`).

Modes:

- ``dynamic`` and ``weights_only``: weights only; activations stay float in the model (TFLite
  quantizes them per batch at run time in ``dynamic``: its dynamic-range kernels).
- ``static``: the input of every quantized layer is observed on the calibration images
  (:func:`lwdsl.semantics.order.calibration_indices`) with a core
  :class:`~lwdsl.semantics.quant.RangeObserver`; :func:`~lwdsl.semantics.quant.act_qparams`
  gives uint8 scale and zero point. Evaluation then fake-quantizes those inputs exactly as
  :func:`~lwdsl.semantics.quant.fake_quantize` does (:func:`quantized_forward`).
- ``qat``: weights quantized as above, then ``epochs`` of training through the weight
  quantizer (straight-through estimator, :func:`.train.fit`), then activation ranges
  calibrated as in ``static`` on the trained model.

Layers that cannot be quantized (anything but Conv1D/2D/3D, DepthwiseConv2D and Dense: separable
convolutions, transposed convolutions, embeddings) are named with ``ctx.warn`` and in
``ctx.notes["not_quantized"]``, never left float silently.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from lwdsl.backend import StepContext
from lwdsl.errors import LwdslError
from lwdsl.semantics.auto_bits import TRIAL_FORMS, kl_sensitivity, trial_weight
from lwdsl.semantics.auto_bits import auto_forms as core_auto_forms
from lwdsl.semantics.order import calibration_indices
from lwdsl.semantics.quant import HALF_FORMS, RangeObserver, WeightQuant, act_qparams, cast_weight, quantize_as
from lwdsl.specs import QuantizeSpec, TrainingOptions
from lwdsl.specs.quantize import LOW_BIT

from ._tf import tf, tf_keras
from .fold import fold_batchnorms
from .handle import KerasHandle
from .layers import LayerView, _classes

__all__ = ["quantize", "quantizable", "calibrate", "quantized_forward", "calibration_images", "FakeQuantInput"]

_FORMS = ("int8", "auto") + LOW_BIT + tuple(HALF_FORMS)


def measure_sensitivity(handle: KerasHandle, views: Sequence[LayerView], spec: QuantizeSpec, ctx: StepContext) -> Optional[dict]:
    """``quantize auto``: the logits of the model on the calibration images (inference mode, as
    it evaluates), as it is and with one layer at a time at each candidate's trial weight (the
    core's :func:`~lwdsl.semantics.auto_bits.trial_weight`, written back through the layout
    conversion); the core's :func:`~lwdsl.semantics.auto_bits.kl_sensitivity` of each. None
    without training images."""
    from .train import nhwc

    train_x = getattr(ctx.data, "train_x", None)
    if train_x is None or not len(train_x) or not views:
        return None
    x = nhwc(train_x[calibration_indices(len(train_x), spec.calibrate, ctx.seed)])
    keras_model = quantized_forward(handle)
    forward = tf.function(lambda t: keras_model(t, training=False), reduce_retracing=True)

    def logits() -> np.ndarray:
        return np.concatenate([forward(tf.constant(x[i : i + _CALIB_BATCH])).numpy() for i in range(0, len(x), _CALIB_BATCH)])

    bar = ctx.progress(1 + len(views) * len(TRIAL_FORMS), f"auto: sensitivity on {len(x)} images")
    out: dict[str, dict[str, float]] = {}
    try:
        reference = logits()
        bar.update(1)
        for view in views:
            var = view.weight.variable
            kept = var.numpy().copy()
            w = view.weight.canonical()
            try:
                row = {}
                for form in TRIAL_FORMS:
                    var.assign(np.ascontiguousarray(view.weight.from_canon(trial_weight(w, form, spec.granularity)), dtype=np.float32))
                    row[form] = kl_sensitivity(reference, logits())
                    bar.update(1)
                out[view.name] = row
            finally:
                var.assign(kept)
    finally:
        bar.close()
    return {"sensitivity": out, "images": len(x)}


def auto_forms(weights: dict[str, np.ndarray], spec: QuantizeSpec, ctx: StepContext, measured: Optional[dict] = None) -> dict[str, str]:
    """``quantize auto``: the core's choice per layer (:func:`lwdsl.semantics.auto_bits.auto_forms`
    on the canonical weights and the measured sensitivity, or the weight error without one), put
    in ``ctx.notes["auto_bits"]``; layer -> form."""
    forms, ctx.notes["auto_bits"] = core_auto_forms(weights, float(spec.budget), spec.granularity, measured)
    return forms


_CALIB_BATCH = 256


def quantizable(view: LayerView) -> Optional[str]:
    """Why ``view``'s layer cannot be quantized here (None when it can)."""
    classes = _classes(view.layer)
    if classes & {"SeparableConv1D", "SeparableConv2D"}:  # two kernels in one layer
        return f"{type(view.layer).__name__} is not quantized by the tensorflow backend yet"
    if "Transpose" in type(view.layer).__name__:
        return f"{type(view.layer).__name__} is not quantized by the tensorflow backend yet"
    if not (classes & {"Conv", "Dense"}) or view.weight.name != f"{view.name}.weight":
        return f"a {type(view.layer).__name__} layer ({view.kind}) has no conv or dense kernel to quantize"
    return None


def _write(view: LayerView, q: WeightQuant) -> None:
    var = view.weight.variable
    var.assign(np.ascontiguousarray(view.weight.from_canon(q.dequantize()), dtype=np.float32))


def calibration_images(handle: KerasHandle, ctx: StepContext) -> np.ndarray:
    """The calibration images (NCHW) of the handle's static/qat quantization for ``ctx``'s run."""
    n = len(ctx.data.train_x)
    count = int(handle.qconfig.get("calibrate", 256))
    return ctx.data.train_x[calibration_indices(n, count, ctx.seed)]


def _inputs_model(model: Any, layers: Sequence[Any]) -> Any:
    """A model with ``model``'s inputs whose outputs are the inputs of ``layers``."""
    outs = []
    for layer in layers:
        t = layer.get_input_at(0)
        if isinstance(t, (list, tuple)):
            raise LwdslError(f"layer '{layer.name}' takes several inputs: its input cannot be calibrated")
        outs.append(t)
    return tf_keras.Model(model.inputs, outs)


def calibrate(handle: KerasHandle, names: Sequence[str], images: np.ndarray, observer: str, ctx: StepContext) -> dict[str, tuple[float, float]]:
    """``(lo, hi)`` of each named layer's input over ``images`` (NCHW) by a core observer."""
    from .train import nhwc

    vm = handle.view_map()
    probe = _inputs_model(handle.model, [vm[n].layer for n in names])
    forward = tf.function(lambda t: probe(t, training=False), reduce_retracing=True)
    observers = {n: RangeObserver(observer) for n in names}
    x = nhwc(images)
    bar = ctx.progress(-(-len(x) // _CALIB_BATCH), "calibrate")
    try:
        for start in range(0, len(x), _CALIB_BATCH):
            outs = forward(tf.constant(x[start : start + _CALIB_BATCH]))
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            for n, o in zip(names, outs):
                observers[n].update(o.numpy())
            bar.update(1)
    finally:
        bar.close()
    return {n: observers[n].range() for n in names}


@tf_keras.utils.register_keras_serializable(package="lwdsl")
class FakeQuantInput(tf_keras.layers.Layer):
    """Fake-quantizes its input as :func:`lwdsl.semantics.quant.fake_quantize` does, then calls
    ``inner`` (the quantized layer, shared): ``(clip(round(x / scale) + zp, qmin, qmax) - zp) *
    scale`` in float32 (``tf.round`` rounds half to even, as ``np.rint``). Gradients pass
    straight through."""

    def __init__(self, inner: Any, scale: float, zero_point: int, qmin: int = 0, qmax: int = 255, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = inner
        self.scale, self.zero_point, self.qmin, self.qmax = float(scale), int(zero_point), int(qmin), int(qmax)

    def build(self, input_shape: Any) -> None:
        # variables, not constants: in a graph TensorFlow turns ``x / constant`` into a multiply
        # by the reciprocal, which rounds differently from the core's float32 division
        self._scale = self.add_weight("act_scale", (), initializer=tf_keras.initializers.Constant(np.float32(self.scale)), trainable=False)
        self._zp = self.add_weight("act_zero_point", (), initializer=tf_keras.initializers.Constant(np.float32(self.zero_point)), trainable=False)
        super().build(input_shape)

    def fake(self, x: Any) -> Any:
        """The fake-quantized input (float32)."""
        if not self.built:
            self.build(x.shape)
        s, zp = self._scale, self._zp
        q = tf.clip_by_value(tf.round(x / s) + zp, np.float32(self.qmin), np.float32(self.qmax))
        return (q - zp) * s

    def call(self, x: Any) -> Any:
        @tf.custom_gradient
        def straight_through(t: Any) -> Any:  # exactly fake(t) forward (t + (fake - t) is not)
            return self.fake(t), lambda g: g

        return self.inner(straight_through(x))

    def get_config(self) -> dict:  # pragma: no cover - never saved: evaluation only
        raise NotImplementedError("the fake-quantized forward model is not saved")


_FORWARD: dict[int, tuple[Any, Any, tuple]] = {}


def quantized_forward(handle: KerasHandle) -> Any:
    """The handle's model with every statically quantized layer's input fake-quantized (its
    layers and weights shared with ``handle.model``); the model itself when ``act`` is empty."""
    if not handle.act:
        return handle.model
    key = tuple(sorted((k, a.scale, a.zero_point) for k, a in handle.act.items()))
    hit = _FORWARD.get(id(handle))
    if hit is not None and hit[0] is handle.model and hit[2] == key:
        return hit[1]
    act = handle.act

    def clone(layer: Any) -> Any:
        a = act.get(layer.name)
        if a is None:
            return layer
        return FakeQuantInput(layer, a.scale, a.zero_point, a.qmin, a.qmax, name=f"{layer.name}_fq")

    model = tf_keras.models.clone_model(handle.model, clone_function=clone)
    _FORWARD.clear()
    _FORWARD[id(handle)] = (handle.model, model, key)
    return model


def quantize(handle: KerasHandle, spec: QuantizeSpec, layers: Sequence[str], ctx: StepContext) -> KerasHandle:
    """The ``quantize`` handler (int8: dynamic, static, qat, weights_only; int4, int2, ternary,
    binary, cluster, auto: weights_only, qat; fp16, bf16: casts; per channel or tensor)."""
    if spec.dtype not in _FORMS:  # the support table refuses it first; kept for direct calls
        raise LwdslError(f"the tensorflow backend cannot run quantize {spec.dtype}")
    low = spec.dtype in LOW_BIT
    wanted = set(layers)
    chosen, skipped = [], {}
    for view in handle.views():
        if view.name not in wanted:
            continue
        why = quantizable(view)
        if why is None:
            chosen.append(view)
        else:
            skipped[view.name] = why
    for name, why in skipped.items():
        ctx.warn(f"quantize: layer '{name}' stays float32: {why}")
    if skipped:
        ctx.notes["not_quantized"] = dict(skipped)
    if fold_batchnorms(handle, [v.name for v in chosen], ctx):  # conv+bn -> one layer, before its codes
        vm = handle.view_map()
        chosen = [vm[v.name] for v in chosen]
    mode = "weights_only" if spec.weights_only else spec.mode
    if spec.dtype in HALF_FORMS:  # a cast: the core's rounding, float32 kernels holding it
        casts = dict(handle.qconfig.get("cast", {}))
        for view in chosen:
            view.weight.variable.assign(
                np.ascontiguousarray(view.weight.from_canon(cast_weight(view.weight.canonical(), spec.dtype)), dtype=np.float32)
            )
            casts[view.name] = spec.dtype
        handle.apply_masks()
        handle.qconfig = {**handle.qconfig, "cast": casts}
        noted = ctx.notes.setdefault("quantized", {})
        for view in chosen:
            noted[view.name] = {"bits": 16, "form": spec.dtype}
        return handle
    forms = {view.name: spec.dtype for view in chosen}
    if spec.dtype == "auto":  # the core picks a form per layer; activations stay float
        handle.apply_masks()
        measured = measure_sensitivity(handle, chosen, spec, ctx)
        forms = auto_forms({view.name: view.weight.canonical() for view in chosen}, spec, ctx, measured)
        chosen = [view for view in chosen if forms[view.name] != "float"]
        low, mode = True, ("qat" if mode == "qat" else "weights_only")
    bits = 0
    floats: dict[str, np.ndarray] = {}  # qat: the masters start at the float weights
    for view in chosen:
        floats[view.name] = view.weight.canonical()
        q = quantize_as(floats[view.name], forms[view.name], spec.granularity, bits=spec.bits)
        bits = q.bits
        if forms[view.name] == "binary" and view.name in handle.masks:
            del handle.masks[view.name]
            ctx.warn(
                f"quantize binary: layer '{view.name}' was pruned, but binary weights are ±scale (no code 0): "
                "its pruned weights are non-zero now and its mask is dropped"
            )
        _write(view, q)
        handle.quant[view.name] = q
        handle.act.pop(view.name, None)
    handle.apply_masks()  # codes of pruned weights are 0 already; keeps -0.0 out
    if not low or not handle.qconfig.get("mode"):  # low-bit layers keep float activations: an int8 step's config stays
        handle.qconfig = {
            **({"cast": handle.qconfig["cast"]} if "cast" in handle.qconfig else {}),
            "mode": "weights_only" if low else mode,
            "granularity": spec.granularity,
            "calibrate": spec.calibrate,
            "observer": spec.observer,
            "bits": bits,
        }
    if mode in ("static", "qat") and not low:  # the .tflite artifact's representative data set (tflite_engine)
        handle.qconfig["images"] = calibration_images(handle, ctx)
    names = [v.name for v in chosen]
    if mode == "qat" and names:
        from .train import fit

        options = TrainingOptions(epochs=spec.epochs)
        fit(handle, options, ctx, label=f"quantize {spec.dtype} qat ({spec.epochs} epoch{'s' if spec.epochs != 1 else ''})",
            masters=floats)
    ranges: dict[str, tuple[float, float]] = {}
    if mode in ("static", "qat") and names and not low:
        n = len(ctx.data.train_x)
        if spec.calibrate > n:
            ctx.warn(f"quantize: calibrate={spec.calibrate} exceeds the {n} training images; calibrating on all {n}")
        ranges = calibrate(handle, names, calibration_images(handle, ctx), spec.observer, ctx)
        for name, (lo, hi) in ranges.items():
            handle.act[name] = act_qparams(lo, hi, 8)
    noted = ctx.notes.setdefault("quantized", {})
    for name in names:  # the same shape as the torch backend's notes, for conformance
        entry: dict[str, Any] = {"bits": handle.quant[name].bits, "form": forms[name]}
        if name in ranges:
            entry["act_range"] = [float(ranges[name][0]), float(ranges[name][1])]
        noted[name] = entry
    return handle
