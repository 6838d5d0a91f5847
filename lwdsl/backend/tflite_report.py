"""What a ``.tflite`` file holds, framework-free: its ops with dtypes and the weights read back
(:class:`TfliteReport`, filled by the tensorflow backend's LiteRT reader), and what lwdsl says
about it: the notes of an ``export tflite`` artifact (code and float16 agreement with the
canonical weights, the layers the converter left float32), the layers LiteRT runs on float
weights and the engine's op inventory. ``backends/tf_backend/tflite_engine.py`` keeps the
converter and the interpreter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import numpy as np

from lwdsl.semantics.quant import agreement, half_bits

from .engines import NOT_QUANTIZED, Inventory, codes_agreement

__all__ = ["WEIGHTED", "DYNAMIC_SMALL", "OpInfo", "TfliteReport", "layer_of", "tflite_notes", "runs_float",
           "tflite_inventory"]

#: The TFLite ops that hold a layer's weights.
WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D"}

#: Why the converter's dynamic-range mode leaves a small layer float32.
DYNAMIC_SMALL = "the converter's dynamic-range mode keeps weights under 1024 elements in float"


@dataclass
class OpInfo:
    op: str
    layer: Optional[str]  # the Keras layer its weights came from (weighted ops)
    inputs: tuple[str, ...]  # dtypes: activation, weights, bias
    outputs: tuple[str, ...]


@dataclass
class TfliteReport:
    """What a ``.tflite`` file holds: its ops with dtypes, the int8 weights per layer (mapped
    back to the canonical layout) and their scales."""

    ops: list[OpInfo] = field(default_factory=list)
    codes: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> canonical int8 codes
    scales: dict[str, np.ndarray] = field(default_factory=dict)
    float_layers: list[str] = field(default_factory=list)  # weighted layers left float32
    halves: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> canonical float16 bits (uint16)


def layer_of(tensor_name: str, names: list[str]) -> Optional[str]:
    """The one layer of ``names`` a tensor's name scopes point at, else None. Keras 3 traces the
    model again for the converter, so each scope may carry a ``_N`` suffix (``conv1_1`` for
    ``conv1``): a part matches its name with and without one such suffix."""
    parts = {p for chunk in tensor_name.split(";") for p in chunk.split("/")}
    parts |= {re.sub(r"_\d+$", "", p) for p in parts}
    hits = [n for n in names if n in parts]
    return hits[0] if len(hits) == 1 else None


def tflite_notes(info: TfliteReport, size: int, kind: str, quant: Mapping[str, Any], casts: Mapping[str, Any],
                 canonical: Callable[[str], Optional[np.ndarray]], warn: Callable[[str], None]) -> dict[str, Any]:
    """The notes of one ``.tflite`` artifact of ``size`` bytes converted as ``kind``: mode, weighted
    ops with dtypes, and the agreement of its int8 (or float16) weights with the canonical codes
    ``quant`` (or the 16-bit patterns of the ``casts`` layers' ``canonical(name)`` weights), per
    layer. A quantized layer the file keeps in float32 is named with ``warn``."""
    notes: dict[str, Any] = {"size_bytes": size, "tflite_mode": kind}
    notes["ops"] = [
        {"op": o.op, **({"layer": o.layer} if o.layer else {}), "inputs": list(o.inputs), "outputs": list(o.outputs)}
        for o in info.ops
        if o.op in WEIGHTED
    ]
    left = [name for name in info.float_layers if name in quant]
    if kind == "fp16":
        equal = total = 0
        per_half = {}
        for name in casts:
            got = info.halves.get(name)
            weights = canonical(name) if got is not None else None
            if weights is None:
                continue
            e, t = agreement(got, half_bits(weights, "fp16"))
            per_half[name] = [e, t]
            equal, total = equal + e, total + t
        notes["half_agreement"] = {"equal": equal, "total": total, "layers": per_half}
        others = sorted(set(info.halves) - set(casts))
        if others:
            warn(f"export tflite: the float16 file stores every kernel in float16, also those of layers "
                 f"{', '.join(others)}, which the model keeps float32 (quantize fp16 selected only some layers)")
            notes["float16_by_converter"] = others
    elif kind != "float32":
        for name in left:
            why = f" ({DYNAMIC_SMALL})" if kind == "dynamic-range" else ""
            warn(f"export tflite: quantized layer '{name}' stays float32 in the .tflite file{why}")
        notes["float_layers"] = left
        equal, total, per_layer = codes_agreement(info.codes, quant)
        notes["code_agreement"] = {"equal": equal, "total": total, "layers": per_layer}
        extra = sorted(set(info.codes) - set(quant))
        if extra:
            notes["quantized_by_converter"] = extra  # not selected, yet int8 in full-integer mode
    return notes


def runs_float(info: TfliteReport, quant: Mapping[str, Any], dynamic: bool) -> dict[str, str]:
    """Each weighted layer whose op LiteRT runs on float weights, with why."""
    out = {}
    for o in info.ops:
        if o.op in WEIGHTED and o.layer and len(o.inputs) > 1 and o.inputs[1] != "int8":
            if o.layer not in quant:
                out[o.layer] = NOT_QUANTIZED
            else:
                out[o.layer] = DYNAMIC_SMALL if dynamic else f"the converter kept its {o.inputs[1]} weights"
    return out


def tflite_inventory(info: TfliteReport) -> Inventory:
    """The ops of a ``.tflite`` file by kind and dtypes, and how many weighted ops run int8 / float weights."""
    ops: dict[str, int] = {}
    int8_ops = float_ops = 0
    for o in info.ops:
        if o.op in WEIGHTED and len(o.inputs) > 1:  # input and weight dtypes: int8 x int8, float32 x int8 (hybrid)
            key = f"{o.op} ({o.inputs[0]} x {o.inputs[1]})"
            int8_ops += o.inputs[1] == "int8"
            float_ops += o.inputs[1] != "int8"
        else:
            key = f"{o.op} ({o.inputs[0] if o.inputs else '-'})"
        ops[key] = ops.get(key, 0) + 1
    return Inventory(dict(sorted(ops.items())), int(int8_ops), int(float_ops))
