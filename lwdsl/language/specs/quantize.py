"""``quantize``: lower the precision of weights (and activations).

Several ``quantize`` steps with different selectors give mixed precision; ``quantize auto``
allocates bits per layer within ``budget`` (average bits per weight).

Forms: ``int8`` in every mode, ``static`` by default (activations calibrated on ``calibrate``
training images: the model runs on int8 kernels end to end; ``dynamic`` convolutions were
slower than float in both runtimes, see docs/semantics.md); the low-bit weight forms (``int4``, ``int2``, ``ternary``,
``binary``) and ``auto`` quantize weights only and keep float activations, either once
(``weights_only``, their default) or trained through the quantizer (``mode=qat``); ``dynamic``
and ``static`` need int8 activation kernels and are refused for them. ``fp16`` and ``bf16``
cast the weights. ``auto`` picks binary, int2, int4, int8 or float per layer
(:mod:`lwdsl.semantics.auto_bits`). ``cluster bits=B`` is weight sharing (Han et al. 2016): one
codebook of ``2^B`` values per layer, code 0 kept for the zeros (:mod:`lwdsl.semantics.cluster`);
it is a low-bit weight form (weights only or qat), always one codebook per tensor.
The numbers are :mod:`lwdsl.semantics.codes`'s; the forms are :mod:`lwdsl.semantics.forms`'s table.

How the integer codes are chosen (``int8``, ``int4``, ``int2``): ``method=rtn`` (the default:
round to nearest, :func:`lwdsl.semantics.codes.quantize_weight`) or ``method=gptq`` (GPTQ,
Frantar et al. 2023: calibrated on ``calibrate=N`` training examples, default 128; the codes
minimise the layer's output error, :mod:`lwdsl.semantics.gptq`; ``damp=``, ``block=`` as
SparseGPT's), per output channel or with ``group=G`` (one scale per ``G`` consecutive inputs of
each row). Both are weight-only on linear layers (the default selector is ``on linear``); a
pruned layer's zeros stay zero.

``grid=`` (the integer forms' weight-only codes, rtn or gptq): ``narrow`` (the default: codes
``[-qmax, qmax]``, ``scale = max|w| / qmax``, the symmetric range int8 kernels take) or ``full``
(all ``2^b`` codes ``[-qmax - 1, qmax]``, ``scale = max|w| / (qmax + 1/2)``: compressed-tensors'
and llm-compressor's rule; lower rounding error at 4 and 2 bits, docs/semantics.md). Refused
with int8 activations (``static``, ``dynamic``), ``mode=qat`` and the int8 exports (their
kernels re-quantize by the narrow rule), and for forms without integer codes.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, model_validator

from ...semantics.forms import CASTS, EXPORT_HOLDS, GRIDS, LOW_BIT, NAMES, STEP_FORMS, WEIGHT_METHODS
from ...semantics.precision import PRECISIONS
from .base import StepSpec, TrainingOptions

__all__ = ["QuantizeSpec", "LOW_BIT", "EXPORT_HOLDS"]

# LOW_BIT (weight forms below 8 bits: weights only, float activations, or trained with qat) and
# EXPORT_HOLDS (export format -> the quantize dtypes its files hold: the ONNX QDQ model and
# TFLite store int8 codes, the engines' kernels, and the casts as 16-bit weights, ONNX as float16
# and bfloat16 initializers, TFLite float16 only, its converter having no bfloat16 weights;
# ``torch``, ``keras`` and ``saved_model`` store the float weights ``codes * scale``, and the .lwz
# beside them the packed codes) come from the forms table (:mod:`lwdsl.semantics.forms`), as every
# list of forms here.


#: Why a ``quantize`` has no meaning for a layer kind a selector may name.
_NO_MEANING = {
    "norm": "a norm layer holds a scale and shift per channel, not a weight matrix (int8 static folds batch norms "
    "into the conv before them)",
    "embedding": "the backends quantize conv and linear weights only (an embedding would stay float32)",
}


class QuantizeSpec(StepSpec):
    """Quantize the selected layers.

    Example: ``quantize int8``, ``quantize int8 mode=static calibrate=512``,
    ``quantize int4 weights_only on linear``, ``quantize auto budget=6``, ``quantize cluster bits=4``,
    ``quantize int4 method=gptq group=32 except "lm_head"``, ``quantize int4 group=32 grid=full``.
    """

    positional: ClassVar[tuple[str, ...]] = ("dtype",)
    default_kinds: ClassVar[tuple[str, ...]] = ("conv", "linear")
    summary: ClassVar[str] = "lower precision: int8/4/2, binary, ternary, cluster, fp16/bf16; PTQ or QAT"
    FORMS: ClassVar[tuple[str, ...]] = STEP_FORMS + WEIGHT_METHODS
    #: The integer forms whose codes ``method=`` and ``group=`` choose.
    INTEGER: ClassVar[tuple[str, ...]] = ("int8", "int4", "int2")

    op: Literal["quantize"] = "quantize"
    dtype: Literal[NAMES] = Field(  # type: ignore[valid-type]
        description="target precision; auto picks per layer within budget; cluster shares 2^bits values per layer"
    )
    mode: Literal["dynamic", "static", "qat"] = Field(
        default="static",
        description="static: activations calibrated on training images (the default: int8 kernels end to end); "
        "dynamic: quantized at run time; qat: trained",
    )
    weights_only: bool = Field(default=False, description="quantize weights, keep float activations")
    granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    calibrate: int = Field(default=256, ge=1, le=1_000_000,
                           description="static: calibration samples; gptq: calibration examples (default 128 there)")
    observer: Literal["minmax", "percentile", "mse"] = Field(default="minmax", description="static/qat: range estimate")
    epochs: int = Field(default=1, ge=1, le=10_000, description="qat: training epochs")
    precision: Literal[PRECISIONS] = Field(  # type: ignore[valid-type]
        default="fp32", description="qat: fp32; bf16 or fp16 autocast (fp16 GPU only), float32 master weights"
    )
    budget: Optional[float] = Field(
        default=None, ge=1, le=32, description="auto: average bits per weight (1: binary, up to 32: float)"
    )
    bits: Optional[int] = Field(
        default=None, ge=2, le=8, description="cluster: codebook of 2^bits values per layer, code 0 kept for 0.0 (default 4)"
    )
    method: Literal["rtn", "gptq"] = Field(
        default="rtn", description="int8/int4/int2 codes: rtn (round to nearest) or gptq (calibrated, minimises each "
        "linear layer's output error)")
    group: Optional[int] = Field(default=None, ge=1, le=65_536,
                                 description="int8/int4/int2: one scale per GROUP consecutive inputs of each output row")
    grid: Literal[GRIDS] = Field(  # type: ignore[valid-type]
        default="narrow", description="int8/int4/int2 weights only: narrow codes [-qmax, qmax] or full [-qmax-1, qmax] "
        "(compressed-tensors' range)")
    damp: float = Field(default=0.01, gt=0, le=1, description="gptq: dampening, a fraction of the mean of diag(X^T X)")
    block: int = Field(default=128, ge=1, le=65_536, description="gptq: columns quantized and updated together")
    sequential: bool = Field(default=False, description="gptq: calibrate each layer on the model already quantized "
                             "before it (a pass per group of layers sharing an input), not all on the model as it was")

    @model_validator(mode="before")
    @classmethod
    def _low_bit_default(cls, data: Any) -> Any:
        """A low-bit form without ``mode=`` or ``weights_only`` quantizes weights only."""
        weights_only = isinstance(data, dict) and (data.get("dtype") in LOW_BIT + ("auto",) or data.get("method") == "gptq"
                                                   or data.get("group") is not None or data.get("grid") == "full")
        if weights_only and "mode" not in data and "weights_only" not in data:
            data = {**data, "weights_only": True}
        if isinstance(data, dict) and data.get("dtype") == "cluster":  # one codebook per layer
            if data.get("granularity", "per_tensor") != "per_tensor":
                raise ValueError(
                    "quantize cluster shares one codebook per layer (Han et al.): granularity=per_channel does not "
                    "apply; leave granularity out, or use quantize int4 granularity=per_channel"
                )
            bits = data.get("bits")  # absent or None (a spec built in Python): the default
            data = {**data, "granularity": "per_tensor", "bits": 4 if bits is None else bits}
        return data

    @model_validator(mode="after")
    def _check(self) -> "QuantizeSpec":
        self._check_method()
        if self.dtype in LOW_BIT + ("auto",) and not self.weights_only and self.mode in ("dynamic", "static"):
            raise ValueError(
                f"{self.dtype} quantizes weights only (activations stay float): mode={self.mode} needs int8 "
                f"activations; write `quantize {self.dtype}` (weights only) or `quantize {self.dtype} mode=qat`, "
                f"or quantize int8 mode={self.mode}"
            )
        if self.bits is not None and self.dtype != "cluster":
            raise ValueError(f"bits= goes only with quantize cluster; quantize {self.dtype} has its bits in its name")
        if (self.dtype == "auto") != (self.budget is not None):
            raise ValueError("quantize auto needs budget=BITS, and budget= goes only with auto")
        if self.dtype in CASTS and "mode" in self.model_fields_set:
            raise ValueError(f"{self.dtype} is a cast: mode={self.mode} does not apply")
        if "epochs" in self.model_fields_set and self.mode != "qat":
            raise ValueError("epochs= applies only with mode=qat")
        if "precision" in self.model_fields_set and not self.trains():
            raise ValueError("precision= applies only to a quantize that trains (mode=qat, not weights_only)")
        named = [k for k in ("norm", "embedding") if self.selector is not None and k in self.selector.on]
        if named:
            raise ValueError(
                f"`on {named[0]}`: {_NO_MEANING[named[0]]}; quantize works on conv and linear "
                "layers (write `on conv`, `on linear`, layer names, or leave `on` out)"
            )
        return self

    def _check_method(self) -> None:
        """``method=``, ``group=``, ``grid=``, ``damp=``, ``block=`` and ``calibrate=``."""
        set_ = self.model_fields_set
        if "grid" in set_ and self.dtype not in self.INTEGER:
            raise ValueError(f"grid= chooses the range of integer codes: it goes with {', '.join(self.INTEGER)}, not "
                             f"quantize {self.dtype}")
        if self.grid == "full" and not self.weights_only:
            why = ("is built on the narrow grid only" if self.mode == "qat" else
                   "needs int8 activation kernels, which take narrow symmetric weights [-127, 127]")
            raise ValueError(f"grid=full quantizes weights only: mode={self.mode} {why}; leave mode= out "
                             f"(`quantize {self.dtype} grid=full`) or write grid=narrow")
        gptq, grouped = self.method == "gptq", self.group is not None
        if (gptq or grouped) and self.dtype not in self.INTEGER:
            what = "method=gptq" if gptq else "group="
            raise ValueError(f"{what} chooses integer codes: it goes with {', '.join(self.INTEGER)}, not quantize {self.dtype}")
        if (gptq or grouped) and not self.weights_only:
            what = "method=gptq" if gptq else f"group={self.group}"
            raise ValueError(f"{what} quantizes weights only (activations stay float): mode={self.mode} does not apply; "
                             f"leave mode= out (`quantize {self.dtype} {what}`)")
        if grouped and self.granularity != "per_channel":
            raise ValueError("group= splits each output channel's row into groups: granularity=per_tensor does not apply")
        for name in ("damp", "block", "sequential"):
            if name in set_ and not gptq:
                raise ValueError(f"{name}= only applies to quantize ... method=gptq")
        if self.selector is not None and (gptq or grouped):
            named = [k for k in self.selector.on if k not in ("linear", "all") and isinstance(k, str)]
            if named:
                raise ValueError(f"`on {named[0]}`: method=gptq and group= work on linear layers (a weight [out, in]); "
                                 "write `on linear`, layer names, or leave `on` out")

    def calibration_count(self) -> int:
        """The examples GPTQ calibrates on: ``calibrate=``, or 128 (SparseGPT's default) when not given."""
        return self.calibrate if "calibrate" in self.model_fields_set or self.method != "gptq" else 128

    @classmethod
    def kinds_by_default(cls, fields: dict) -> tuple[str, ...]:
        if fields.get("method") == "gptq" or fields.get("group") is not None:
            return ("linear",)  # method=gptq and group= work on linear layers
        return cls.default_kinds

    def layer_kinds(self) -> Optional[tuple[str, ...]]:
        if self.method == "gptq" or self.group is not None:
            return ("linear",)  # X W^T and groups of a row's inputs: a linear layer's [out, in] weight
        return None

    def trains(self) -> bool:
        return self.mode == "qat" and not self.weights_only and self.dtype not in CASTS

    def training_options(self) -> Optional[TrainingOptions]:
        """``mode=qat``'s training: ``epochs`` of SGD at lr 0.01, momentum 0.9, batches of 64, at
        ``precision``."""
        return TrainingOptions(epochs=self.epochs, lr=0.01, momentum=0.9, precision=self.precision) if self.trains() else None

    def is_cast(self) -> bool:
        """Whether the step casts the weights to a 16-bit float (``fp16``, ``bf16``): a model
        nothing trains any more (see :meth:`StepSpec.trains`)."""
        return self.dtype in CASTS

    def export_refusal(self, fmt: str) -> Optional[str]:
        """Why an ``export fmt`` after this step cannot hold its form (None when it can)."""
        holds = EXPORT_HOLDS.get(fmt)
        if holds is not None and self.dtype in holds and self.grid == "full":
            return (f"export {fmt} stores int8 codes for kernels that take the narrow range [-127, 127]: it cannot hold "
                    "grid=full codes (-128); drop grid=full (or export torch or hf, which hold them)")
        if holds is not None and self.dtype in holds and self.group is not None:
            return (f"export {fmt} stores int8 codes with one scale per output channel: it cannot hold group={self.group} "
                    "scales; drop group= (or export torch, which stores codes * scale)")
        if holds is None or self.dtype in holds:
            return None
        if fmt == "pt2e":
            return (f"export pt2e holds int8 models (PT2E's x86 int8 form) or float ones: it cannot hold {self.dtype} weights; "
                    "write `export onnx` or `export torch` for them")
        if self.dtype == "bf16":
            return (f"export {fmt} cannot hold bf16 weights (TFLite has float16 weights, no bfloat16); "
                    "write `quantize fp16` for a float16 .tflite")
        return f"export {fmt} stores int8 codes, 16-bit floats or float32 weights: it cannot hold {self.dtype} weights"

    def forms(self) -> tuple[str, ...]:
        if self.dtype in CASTS + ("auto",):
            return (self.dtype,)
        extra = ((("gptq",) if self.method == "gptq" else ()) + (("group",) if self.group is not None else ())
                 + (("full_grid",) if self.grid == "full" else ()))
        return (f"{self.dtype}/{'weights_only' if self.weights_only else self.mode}",) + extra
