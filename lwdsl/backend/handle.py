"""The fields every backend's model handle has (:class:`ModelHandle`) and the one record of how
the model was quantized (:class:`QuantState`): the core's ``quantize`` flow writes it
(:meth:`~QuantState.record`), a loaded state restores it (:meth:`~QuantState.restore`), a resume
point keeps it (:meth:`~QuantState.meta`, :meth:`lwdsl.backend.Backend.handle_meta`), and every
state, engine and exporter of both backends reads it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Mapping, Optional

import numpy as np

from ..errors import LwdslError
from ..semantics.forms import HALF_FORMS, LOW_BIT
from ..semantics.order import calibration_indices
from ..semantics.quant import ActQuant, WeightQuant

__all__ = ["ModelHandle", "QuantState", "Settings", "Calibration"]


@dataclass(frozen=True)
class Settings:
    """What an exporter converting the whole model (TFLite) needs of the last int8 step (or of
    the first step, while only low-bit steps ran): its activation mode, granularity,
    calibration count, observer and bits."""

    mode: str
    granularity: Optional[str] = None
    calibrate: Optional[int] = None
    observer: Optional[str] = None
    bits: int = 0


@dataclass(frozen=True, eq=False)
class Calibration:
    """The calibration reference of the last static/qat int8 step: the run's training images (a
    reference to the run's data, never copied: a deep copy of a handle shares it), the count and
    seed of :func:`~lwdsl.semantics.order.calibration_indices`, and the observer (compared by
    identity: :meth:`QuantState.meta` compares what it holds)."""

    train_x: Any
    count: int
    seed: int
    observer: str

    def __deepcopy__(self, memo: dict) -> "Calibration":
        return self

    @cached_property
    def indices(self) -> np.ndarray:
        """The calibration examples' indices into :attr:`train_x`."""
        return calibration_indices(len(self.train_x), self.count, self.seed)

    def key(self) -> str:
        """What a file built on these images depends on (a cache key)."""
        return f":{id(self.train_x)}:{len(self.train_x)}:{self.count}:{self.seed}:{self.observer}"


@dataclass
class QuantState:
    """How the model was quantized, as both backends keep it.

    Attributes:
        quant: layer -> its weight codes and scales; the layer's weight holds exactly
            ``dequantize()`` of them.
        act: layer -> the input (activation) quantization of a static/qat layer.
        mode: layer -> the mode it got (dynamic, static, qat, weights_only), or ``fp16``/``bf16``
            for a cast layer (no codes).
        settings: the model-level :class:`Settings` (None until a quantize step with codes).
        calib: the :class:`Calibration` of the last static/qat int8 step (None for a model
            loaded already quantized).
    """

    quant: dict[str, WeightQuant] = field(default_factory=dict)
    act: dict[str, ActQuant] = field(default_factory=dict)
    mode: dict[str, str] = field(default_factory=dict)
    settings: Optional[Settings] = None
    calib: Optional[Calibration] = None

    @property
    def casts(self) -> dict[str, str]:
        """The layers cast by ``quantize fp16|bf16`` (not quantized to codes since): layer -> form."""
        return {layer: m for layer, m in self.mode.items() if m in HALF_FORMS}

    @property
    def model_mode(self) -> Optional[str]:
        """The settings' mode while the model has codes (None: float, or cast only)."""
        return self.settings.mode if self.quant and self.settings is not None else None

    def calibration_images(self) -> np.ndarray:
        """The images of the last static/qat step's calibration (a converter's representative
        data set).

        Raises:
            LwdslError: there are none at hand (a model loaded already quantized).
        """
        if self.calib is None:
            raise LwdslError("the calibration images are not at hand (a model loaded already quantized)")
        return self.calib.train_x[self.calib.indices]

    def digest(self) -> str:
        """What a file built from the model depends on beside its weights (a cache key): the
        modes, input quantization, settings, quantized layers and calibration images."""
        acts = sorted((k, a.scale, a.zero_point) for k, a in self.act.items())
        return repr((sorted(self.mode.items()), acts, self.settings, sorted(self.quant))) + (self.calib.key() if self.calib else "")

    def input_quantized(self) -> list[str]:
        """The quantized layers whose inputs are quantized too (calibrated, or dynamic)."""
        return sorted(n for n in self.quant if n in self.act or self.mode.get(n) == "dynamic")

    def record(self, spec: Any, forms: Mapping[str, str], quants: Mapping[str, WeightQuant], act_mode: str, ctx: Any) -> None:
        """Keep a quantize step (``spec``): each layer's form (``forms``: a cast's ``fp16``/``bf16``,
        with no codes), its codes (``quants``), the mode its activations get (``act_mode``:
        dynamic, static, qat, weights_only; ``cast`` for a cast), the model-level settings (a
        low-bit step keeps an int8 step's: low-bit layers keep float activations) and, for
        static/qat, the calibration reference of ``ctx``'s run. A layer quantized or cast
        again forgets its old codes and input quantization. Called after the weights are
        written, before QAT and calibration."""
        for name, form in forms.items():
            self.act.pop(name, None)
            if name in quants:
                self.quant[name] = quants[name]
                self.mode[name] = act_mode
            else:  # a cast layer: no codes, its form is its mode
                self.quant.pop(name, None)
                self.mode[name] = form
        if act_mode == "cast":
            return
        low = spec.dtype in LOW_BIT or spec.dtype == "auto"
        if not low or self.settings is None:
            bits = list(quants.values())[-1].bits if quants else 0
            self.settings = Settings(act_mode, spec.granularity, spec.calibrate, spec.observer, bits)
        if act_mode in ("static", "qat"):
            self.calib = Calibration(ctx.data.train_x, spec.calibrate, ctx.seed, spec.observer)

    def weight_only(self, quant: Mapping[str, WeightQuant]) -> None:
        """Keep codes read from a file (a compressed-tensors folder) as ``quantize`` keeps
        weight-only codes."""
        self.quant.update(quant)
        self.mode.update({layer: "weights_only" for layer in quant})
        if quant:
            self.settings = Settings("weights_only", bits=max(q.bits for q in quant.values()))

    def restore(self, packed: Any, halves: Optional[Mapping[str, str]] = None) -> None:
        """What a loaded state holds (:class:`lwdsl.backend.weights.Unpacked`): its codes, input
        ranges and casts (with ``halves``: layers a framework's file holds in 16 bits). A layer
        that keeps its codes keeps its mode, a new one is ``static`` with input ranges, else
        ``weights_only``; the settings and the calibration reference stay."""
        casts = {**packed.casts, **{k: d for k, d in (halves or {}).items() if k not in packed.quant}}
        old = {layer: m for layer, m in self.mode.items() if m not in HALF_FORMS}  # a cast layer has no codes
        self.quant.clear()
        self.quant.update(packed.quant)
        self.act.clear()
        self.act.update(packed.act)
        self.mode.clear()
        self.mode.update({layer: old.get(layer, "static" if layer in self.act else "weights_only") for layer in self.quant})
        self.mode.update(casts)  # cast layers stay cast

    def copy(self) -> "QuantState":
        return QuantState(dict(self.quant), dict(self.act), dict(self.mode), self.settings, self.calib)

    def meta(self) -> dict[str, Any]:
        """What a resumed run needs beside the state's codes and ranges, as JSON."""
        c = self.calib
        return {"mode": dict(self.mode), "settings": None if self.settings is None else asdict(self.settings),
                "calib": None if c is None else {"count": c.count, "seed": c.seed, "observer": c.observer}}

    def set_meta(self, meta: Mapping[str, Any], train_x: Any = None) -> None:
        """Put back what :meth:`meta` gave, after the state was loaded; the calibration
        reference indexes ``train_x`` (the resumed run's training images) when given."""
        self.mode.update(meta.get("mode") or {})
        if meta.get("settings"):
            self.settings = Settings(**meta["settings"])
        c = meta.get("calib")
        if c and train_x is not None:
            self.calib = Calibration(train_x, int(c["count"]), int(c["seed"]), str(c["observer"]))


@dataclass(kw_only=True)
class ModelHandle:
    """The fields every backend's model handle has (keyword-only, after the backend's own):
    ``losses`` (the cross-entropy of every optimizer step of the most recent training),
    ``folded`` (layer -> the batch norm folded into it) and ``qstate`` (the :class:`QuantState`);
    ``quant`` and ``act`` read its codes and input quantization. Masks stay each backend's
    own (torch packs them in bits, Keras keeps its layout)."""

    losses: list[float] = field(default_factory=list)
    folded: dict[str, str] = field(default_factory=dict)
    qstate: QuantState = field(default_factory=QuantState)

    @property
    def quant(self) -> dict[str, WeightQuant]:
        return self.qstate.quant

    @property
    def act(self) -> dict[str, ActQuant]:
        return self.qstate.act
