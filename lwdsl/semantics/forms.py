"""The forms of ``quantize``: one table, from which every list of forms in the code derives.

A form is the recipe's ``quantize`` dtype (``quantize int4``, ``quantize cluster bits=3``). Each
row of :data:`FORMS` says what the form is; the spec's choices and ``FORMS``
(:mod:`lwdsl.language.specs.quantize`), the backends' support tables, :data:`FORM_BITS`,
:data:`LOW_BIT`, :data:`HALF_FORMS`, the forms ``quantize auto`` tries and what an export holds
are all read from it, so a new form is one row here (and its rule in :mod:`.codes` or
:mod:`.casts`).

Imports nothing: the language side (:mod:`lwdsl.language.specs`) reads it without numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = [
    "Form",
    "FORMS",
    "NAMES",
    "FORM_BITS",
    "LOW_BIT",
    "HALF_FORMS",
    "CASTS",
    "AUTO_TRIALS",
    "TRIAL_FORMS",
    "STEP_FORMS",
    "EXPORT_HOLDS",
    "WEIGHT_METHODS",
    "GRIDS",
    "code_bounds",
    "form",
]


@dataclass(frozen=True)
class Form:
    """One ``quantize`` form.

    Attributes:
        name: the recipe's dtype word.
        bits: storage bits per weight; None where a step chooses them (``cluster``: ``bits=``,
            ``auto``: per layer).
        kind: ``integer`` (codes and scales, :func:`lwdsl.semantics.codes.quantize_weight`),
            ``ternary``, ``binary``, ``cluster`` (codebook), ``cast`` (16-bit float weights) or
            ``auto`` (a form per layer).
        modes: the ``form/mode`` words the step can take (``weights_only``, ``qat``, and for
            int8 the activation modes); empty for a form that has no mode.
        low_bit: below 8 bits: weights only (float activations) or trained (``qat``).
        zero_code: a code stands for 0, so pruned weights stay 0 (binary has none).
        auto_trial: ``quantize auto`` measures this form on every layer.
        exports: the export formats whose files hold the form itself (not float32 weights).
    """

    name: str
    bits: Optional[int]
    kind: str
    modes: tuple[str, ...] = ()
    low_bit: bool = False
    zero_code: bool = True
    auto_trial: bool = False
    exports: tuple[str, ...] = ()

    @property
    def cast(self) -> bool:
        """Whether the form casts weights to a 16-bit float (nothing trains it any more)."""
        return self.kind == "cast"


_LOW = ("qat", "weights_only")

#: Every ``quantize`` form, in the order the recipe's choices list them.
FORMS: tuple[Form, ...] = (
    Form("int8", 8, "integer", ("dynamic", "static", "qat", "weights_only"), auto_trial=True,
         exports=("onnx", "tflite", "pt2e")),
    Form("int4", 4, "integer", _LOW, low_bit=True, auto_trial=True),
    Form("int2", 2, "integer", _LOW, low_bit=True, auto_trial=True),
    Form("ternary", 2, "ternary", _LOW, low_bit=True),
    Form("binary", 1, "binary", _LOW, low_bit=True, zero_code=False, auto_trial=True),
    Form("cluster", None, "cluster", _LOW, low_bit=True),
    Form("fp16", 16, "cast", exports=("onnx", "tflite")),
    Form("bf16", 16, "cast", exports=("onnx",)),
    Form("auto", None, "auto"),
)

_BY_NAME = {f.name: f for f in FORMS}

#: Every form's name (the recipe's ``quantize`` dtype words).
NAMES: tuple[str, ...] = tuple(_BY_NAME)

#: Storage bits of each form of integer codes and scales (:func:`lwdsl.semantics.codes.quantize_as`).
FORM_BITS: dict[str, int] = {f.name: f.bits for f in FORMS if f.kind in ("integer", "ternary", "binary")}

#: Weight forms below 8 bits: weights only (float activations), or trained (qat).
LOW_BIT: tuple[str, ...] = tuple(f.name for f in FORMS if f.low_bit)

#: The float casts: dtype -> bits per weight.
HALF_FORMS: dict[str, int] = {f.name: f.bits for f in FORMS if f.cast}

#: The casts' names.
CASTS: tuple[str, ...] = tuple(HALF_FORMS)

#: The forms ``quantize auto`` measures per layer, fewest bits first (float is its reference).
AUTO_TRIALS: tuple[tuple[str, int], ...] = tuple(sorted(((f.name, f.bits) for f in FORMS if f.auto_trial), key=lambda t: t[1]))

#: Their names (the columns of the bits-per-layer table).
TRIAL_FORMS: tuple[str, ...] = tuple(name for name, _ in AUTO_TRIALS)

#: The ``form`` / ``form/mode`` words a step reports (``QuantizeSpec.FORMS``, the support tables).
STEP_FORMS: tuple[str, ...] = tuple(f"{f.name}/{m}" for f in FORMS for m in f.modes) + tuple(f.name for f in FORMS if not f.modes)

#: What a step of an integer form (int8, int4, int2) may add to how its codes are chosen, each a
#: form of the step a backend must run: ``gptq`` (``method=gptq``, calibrated,
#: :mod:`lwdsl.semantics.gptq`), ``group`` (``group=G``: one scale per G inputs of a row) and
#: ``full_grid`` (``grid=full``: codes ``[-2^(b-1), 2^(b-1)-1]``, training clamps to them).
WEIGHT_METHODS: tuple[str, ...] = ("gptq", "group", "full_grid")

#: The integer codes' grids (``quantize int4 grid=...``, :func:`code_bounds`): ``narrow``
#: (the default; symmetric, ``scale = max|w| / qmax``) and ``full`` (all ``2^b`` codes,
#: compressed-tensors' ``scale = max|w| / ((qmax - qmin) / 2)``; :mod:`lwdsl.semantics.codes`).
GRIDS: tuple[str, ...] = ("narrow", "full")


def code_bounds(bits: int, grid: str = "narrow") -> tuple[int, int]:
    """``(qmin, qmax)`` of ``bits``-bit codes on ``grid``: ``[-qmax, qmax]`` narrow, ``[-qmax
    - 1, qmax]`` full (``qmax = 2^(bits-1) - 1``); binary (1 bit, narrow only) ``(-1, 1)``.
    The one clamp every quantizer, snap and state check uses.

    >>> code_bounds(4), code_bounds(4, "full"), code_bounds(2, "full"), code_bounds(8, "full")
    ((-7, 7), (-8, 7), (-2, 1), (-128, 127))
    """
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {', '.join(GRIDS)}, got {grid!r}")
    if int(bits) == 1:
        if grid != "narrow":
            raise ValueError("binary codes (1 bit, ±1) have no full grid")
        return -1, 1
    qmax = 2 ** (int(bits) - 1) - 1
    return (-qmax - 1 if grid == "full" else -qmax), qmax

#: Export formats -> the forms their files hold (int8 codes, 16-bit floats); other formats and
#: forms store the float weights ``codes * scale``.
EXPORT_HOLDS: dict[str, tuple[str, ...]] = {
    fmt: tuple(f.name for f in FORMS if fmt in f.exports) for fmt in dict.fromkeys(x for f in FORMS for x in f.exports)
}


def form(name: str) -> Form:
    """The row of ``name``.

    >>> form("binary").zero_code, form("int4").low_bit, form("bf16").cast
    (False, True, True)
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown quantize form {name!r}; one of {', '.join(NAMES)}") from None
