"""The compressed-tensors layout of lwdsl's codes in a Hugging Face folder: every number of
``export hf``'s ``quantization_config`` / ``sparsity_config`` and of reading such a folder back.

compressed-tensors (the format ``transformers`` and vLLM load, written by llm-compressor) keeps a
quantized ``nn.Linear`` ``L`` as three tensors instead of ``L.weight``:

- ``L.weight_packed``: int32 ``[out, ceil(in * B / 32)]``, the codes of each row as ``B``-bit
  unsigned fields (``code + 2^(B-1)``) of a little-endian bit stream, element ``i`` of the row
  in bits ``B*i ..`` of it (bit ``k`` is bit ``k % 32`` of word ``k // 32``), the unused high
  bits of a row's last word 0 (:func:`pack_int32`; compressed-tensors' ``pack_to_int32``);
- ``L.weight_scale``: float32, ``[out, in / G]`` (strategy ``group``, ``group_size`` G),
  ``[out, 1]`` (``channel``) or ``[1]`` (``tensor``);
- ``L.weight_shape``: int64 ``[out, in]``.

``transformers`` + ``compressed-tensors`` give the layer ``f32(code) * scale`` (the scale's
dtype), which is lwdsl's ``WeightQuant.dequantize()`` bit for bit: lwdsl's symmetric codes
(zero point 0, narrow range ``[-(2^(B-1)-1), 2^(B-1)-1]``, or with ``grid=full`` the full range
``[-2^(B-1), 2^(B-1)-1]`` compressed-tensors' own quantizers use) are stored unchanged, so
nothing is re-quantized. The ``quantization_config`` written (:func:`quantization_config`) has one config
group per distinct scheme (``num_bits``, ``type`` int, ``symmetric`` true, ``strategy``,
``group_size``, ``dynamic`` false: weight-only, no activation quantization), format
``pack-quantized``, status ``compressed``; its targets are ``["Linear"]`` with an ``ignore``
list of the linear layers left float (``lm_head``, as llm-compressor writes it) when one
scheme covers every quantized layer, else each group names its layers.

The ``sparsity_config`` says what is sparse; compressed-tensors 0.15+ loads no sparse storage
format any more (its ``sparse-24-bitmask`` and ``marlin-24`` compressors were removed), so the
values stay in the dense layout and the config describes them: ``format`` ``dense``,
``sparsity_structure`` ``"2:4"`` when every pruned layer keeps at most 2 of each 4 consecutive
inputs of a row (:func:`structure`), else ``"unstructured"``, ``global_sparsity`` the pruned
weights over all the parameters of the state (a tied tensor once), ``targets``/``ignore`` the
pruned layers as above. compressed-tensors ignores the block when loading; it is read back by
lwdsl (the pruned layers' masks) and by people.

A binary layer (1 bit, codes ±1) is written at ``num_bits`` 2 (compressed-tensors' 1-bit range
is ``[-1, 0]``); a clustered layer (a codebook), a weight that is not 2-d or a row not a whole
number of groups has no compressed-tensors form (:func:`unsupported` says why; the writer
stores it dequantized).

Reading (:func:`read_config`, :func:`decode_layer`): weight-only symmetric integer schemes of
format ``pack-quantized``, ``naive-quantized`` or ``int-quantized`` (strategies tensor,
channel, group), from lwdsl or any other writer. Refused, each with its reason: other
``quant_method`` s, activation or KV-cache quantization, asymmetric zero points, float types,
block strategy, transforms, ``weight_g_idx`` (``actorder=group``), status other than
``compressed``. A layer whose codes use ``-2^(B-1)`` (llm-compressor's int4 uses the full
range ``[-8, 7]``) is recorded on lwdsl's full grid (``grid="full"``: training after it clamps
to ``[-2^(B-1), 2^(B-1)-1]``); a layer whose codes stay within the narrow range is recorded
on the narrow grid (its codes are the same either way).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from ..errors import UsageError
from .codes import WeightQuant
from .packing import pack_fields, unpack_fields

__all__ = [
    "VERSION", "FORMAT", "pack_int32", "unpack_int32", "file_bits", "unsupported", "weight_args", "layer_tensors",
    "structure", "quantization_config", "Scheme", "read_config", "decode_layer", "matches",
]

#: The compressed-tensors release whose layout this follows (the tests load it with that package).
VERSION = "0.20.0"
FORMAT = "pack-quantized"
_READ_FORMATS = ("pack-quantized", "naive-quantized", "int-quantized")


def pack_int32(codes: np.ndarray, bits: int) -> np.ndarray:
    """Signed ``bits``-bit codes ``[rows, cols]`` (int8, in ``[-2^(bits-1), 2^(bits-1)-1]``)
    packed as compressed-tensors' ``weight_packed`` (module layout): int32 ``[rows, ceil(cols
    * bits / 32)]``.

    Raises:
        ValueError: bits outside 1..8, a code outside the range, a weight that is not 2-d.

    >>> pack_int32(np.array([[0, 1, -8, 7, 0, 0, 0, -1]], np.int8), 4).tolist()
    [[2022240408]]
    """
    if not 1 <= int(bits) <= 8:
        raise ValueError(f"pack-quantized holds 1..8-bit codes, got {bits!r}")
    c = np.asarray(codes)
    if c.ndim != 2:
        raise ValueError(f"pack-quantized packs a 2-d [out, in] weight, got shape {c.shape}")
    bits, (rows, cols) = int(bits), c.shape
    offset = 1 << (bits - 1)
    if c.size and (int(c.min()) < -offset or int(c.max()) >= offset):
        raise ValueError(f"codes outside the {bits}-bit range [{-offset}, {offset - 1}]")
    fields = (c.astype(np.int16) + offset).astype(np.uint8)
    words = -(-cols * bits // 32)
    out = np.zeros((rows, words * 4), np.uint8)  # each row's fields in lwdsl's one packer, padded to whole int32 words
    for r in range(rows):
        row = pack_fields(fields[r], bits)
        out[r, : len(row)] = row
    return out.view("<i4").astype(np.int32).reshape(rows, words)


def unpack_int32(packed: np.ndarray, bits: int, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`pack_int32`: int8 codes of ``shape`` ``[rows, cols]``.

    Raises:
        UsageError: the packed tensor does not fit ``shape`` at ``bits`` (a damaged or foreign file).

    >>> unpack_int32(np.array([[2022240408]], np.int32), 4, (1, 8)).tolist()
    [[0, 1, -8, 7, 0, 0, 0, -1]]
    """
    bits = int(bits)
    rows, cols = (int(d) for d in shape)
    p = np.asarray(packed)
    words = -(-cols * bits // 32)
    if p.dtype != np.int32 or p.shape != (rows, words):
        raise UsageError(f"weight_packed is {p.dtype} {tuple(p.shape)}; {bits}-bit codes of shape {(rows, cols)} "
                         f"pack into int32 ({rows}, {words})")
    raw = np.ascontiguousarray(p.astype("<i4")).view(np.uint8).reshape(rows, words * 4)
    fields = np.stack([unpack_fields(raw[r], bits, cols) for r in range(rows)]) if rows else np.zeros((0, cols), np.uint8)
    return (fields.astype(np.int16) - (1 << (bits - 1))).astype(np.int8)


def file_bits(q: WeightQuant) -> int:
    """The ``num_bits`` a layer is written at: its bits, 2 for binary (module docstring)."""
    return max(int(q.bits), 2)


def unsupported(q: WeightQuant, shape: Sequence[int]) -> Optional[str]:
    """Why ``q`` (of a weight of ``shape``) has no compressed-tensors form, or None."""
    if q.codebook is not None:
        return "clustered (a codebook, no scale)"
    if len(shape) != 2 or q.codes.ndim != 2:
        return f"a weight of shape {tuple(shape)}, not [out, in]"
    if q.group is not None and int(shape[1]) % int(q.group):
        return f"{shape[1]} inputs are not a whole number of groups of {q.group} (compressed-tensors needs whole groups)"
    return None


def weight_args(q: WeightQuant) -> dict:
    """compressed-tensors' ``QuantizationArgs`` of ``q``'s weights (as its ``model_dump`` writes them)."""
    if q.group is not None:
        strategy, group = "group", int(q.group)
    else:
        strategy, group = ("tensor" if q.axis is None else "channel"), None
    return {"num_bits": file_bits(q), "type": "int", "symmetric": True, "group_size": group, "strategy": strategy,
            "dynamic": False}


def layer_tensors(q: WeightQuant, shape: Sequence[int]) -> dict[str, np.ndarray]:
    """``weight_packed``, ``weight_scale``, ``weight_shape`` of one layer (numpy, module layout)."""
    scale = np.asarray(q.scale, dtype=np.float32)
    if q.group is not None:
        scale = scale.reshape(int(shape[0]), -1)
    elif q.axis is None:
        scale = scale.reshape(1)
    else:
        scale = scale.reshape(-1, 1)
    return {"weight_packed": pack_int32(q.codes, file_bits(q)), "weight_scale": np.ascontiguousarray(scale),
            "weight_shape": np.asarray([int(d) for d in shape], dtype=np.int64)}


def structure(masks: Mapping[str, np.ndarray]) -> str:
    """``"2:4"`` when every keep mask is 2-d, its inputs a multiple of 4, and each 4 consecutive
    inputs of a row keep at most 2; else ``"unstructured"``.

    >>> structure({"a": np.array([[1, 0, 0, 1, 0, 1, 1, 0]], bool)}), structure({"a": np.ones((1, 4), bool)})
    ('2:4', 'unstructured')
    """
    if not masks:
        return "unstructured"
    for keep in masks.values():
        k = np.asarray(keep, dtype=bool)
        if k.ndim != 2 or k.shape[1] % 4 or (k.reshape(k.shape[0], -1, 4).sum(-1) > 2).any():
            return "unstructured"
    return "2:4"


def _targets(layers: Sequence[str], classes: Mapping[str, Sequence[str]], taken: set[str]) -> tuple[list[str], list[str]]:
    """``(["Linear"], the other linear layers not in taken)`` when every layer is a Linear, else
    ``(layers, [])``."""
    linear = [name for name, mro in classes.items() if "Linear" in mro]
    if layers and all(name in linear for name in layers):
        return ["Linear"], [name for name in linear if name not in taken]
    return list(layers), []


def quantization_config(quants: Mapping[str, WeightQuant], classes: Mapping[str, Sequence[str]],
                        masks: Mapping[str, np.ndarray], params: int) -> dict:
    """The ``quantization_config`` of config.json (module docstring).

    Args:
        quants: the layers written packed, in module order.
        classes: every module of the model as ``transformers`` builds it, in module order ->
            the names of its classes (``type(m).__mro__``): ``Linear`` targets match them.
        masks: layer -> keep mask of every pruned layer (float or packed).
        params: the parameters of the state (for ``global_sparsity``).
    """
    schemes: dict[str, list[str]] = {}
    for name, q in quants.items():
        schemes.setdefault(json.dumps(weight_args(q), sort_keys=True), []).append(name)
    groups, ignore = {}, []
    for i, (key, layers) in enumerate(schemes.items()):
        targets, ignore = _targets(layers, classes, set(quants)) if len(schemes) == 1 else (layers, [])
        groups[f"group_{i}"] = {"targets": targets, "weights": json.loads(key), "input_activations": None,
                                "output_activations": None, "format": FORMAT}
    sparsity: dict = {}
    if masks:
        pruned = sum(int(np.size(k) - np.count_nonzero(k)) for k in masks.values())
        targets, skip = _targets(list(masks), classes, set(masks))
        sparsity = {"format": "dense", "global_sparsity": pruned / max(int(params), 1),
                    "sparsity_structure": structure(masks), "targets": targets, "ignore": skip}
    return {"config_groups": groups, "format": FORMAT, "global_compression_ratio": None, "ignore": ignore,
            "kv_cache_scheme": None, "quant_method": "compressed-tensors", "quantization_status": "compressed",
            "sparsity_config": sparsity, "transform_config": {}, "version": VERSION}


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Scheme:
    """One layer's weights as a folder declares them: ``bits``, ``strategy`` (tensor, channel,
    group), ``group`` (group_size or None), ``format`` (how its tensors are stored)."""

    bits: int
    strategy: str
    group: Optional[int]
    format: str


def matches(name: str, mro: Sequence[str], target: str) -> bool:
    """compressed-tensors' rule: ``re:PATTERN`` matches the name from its start (``re.match``),
    any other target the exact name or a class name of the module."""
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    return target == name or target in mro


def _refuse(where: str, what: str) -> UsageError:
    return UsageError(f"{where}: {what}",
                      hint="lwdsl reads compressed-tensors folders with weight-only symmetric integer schemes "
                           "(pack-quantized, e.g. W4A16/W8A16); dequantize others with their tool first")


def _scheme(group: object, fmt: str, where: str) -> Scheme:
    if not isinstance(group, dict):
        raise _refuse(where, f"a preset name ({group!r}) instead of a scheme; lwdsl reads full schemes")
    for key in ("input_activations", "output_activations"):
        if group.get(key):
            raise _refuse(where, f"{key} are quantized (lwdsl reads weight-only quantization)")
    w = group.get("weights")
    if not isinstance(w, dict):
        raise _refuse(where, "no weights scheme")
    fmt = group.get("format") or fmt
    if fmt not in _READ_FORMATS:
        raise _refuse(where, f"format {fmt!r} (lwdsl reads {', '.join(_READ_FORMATS)})")
    if w.get("type", "int") != "int" or not w.get("symmetric", True) or w.get("dynamic", False):
        raise _refuse(where, f"weights type={w.get('type')!r} symmetric={w.get('symmetric')!r} dynamic="
                             f"{w.get('dynamic')!r} (lwdsl's are int, symmetric, static)")
    strategy, size, bits = w.get("strategy") or "tensor", w.get("group_size"), w.get("num_bits")
    if strategy not in ("tensor", "channel", "group") or (strategy == "group") != isinstance(size, int):
        raise _refuse(where, f"strategy {strategy!r} group_size {size!r} (lwdsl reads tensor, channel and group)")
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise _refuse(where, f"num_bits {bits!r} (lwdsl reads 2..8)")
    if w.get("actorder") == "group":
        raise _refuse(where, "actorder=group (a weight_g_idx permutes the groups; lwdsl's groups are consecutive inputs)")
    return Scheme(bits, strategy, size if strategy == "group" else None, fmt)


def read_config(qc: object, classes: Mapping[str, Sequence[str]], where: str) -> tuple[dict[str, Scheme], list[str], str]:
    """The quantized layers of a folder (name -> :class:`Scheme`, in module order), the layers
    its ``sparsity_config`` names, and that config's structure, from ``quantization_config``.

    Raises:
        UsageError: what lwdsl does not read (module docstring), said with the config's words.
    """
    if not isinstance(qc, dict):
        raise _refuse(where, "quantization_config is not an object")
    method = qc.get("quant_method")
    if method != "compressed-tensors":
        raise _refuse(where, f"quantization_config has quant_method {method!r}; lwdsl reads compressed-tensors only")
    if qc.get("quantization_status", "compressed") != "compressed":
        raise _refuse(where, f"quantization_status {qc.get('quantization_status')!r}: the weights are not stored "
                             "compressed (lwdsl reads status compressed)")
    for key in ("kv_cache_scheme", "transform_config", "moe_sparsity_config"):
        if qc.get(key):
            raise _refuse(where, f"{key} is set (lwdsl reads weight quantization only)")
    fmt = qc.get("format") or "dense"
    order = []
    for gname, group in (qc.get("config_groups") or {}).items():
        scheme = _scheme(group, fmt, f"{where} config group {gname}")
        order.append((list(group.get("targets") or []), scheme))
    ignore = list(qc.get("ignore") or [])
    found: dict[str, Scheme] = {}
    for name, mro in classes.items():
        if any(matches(name, mro, t) for t in ignore):
            continue
        for targets, scheme in order:
            if any(matches(name, mro, t) for t in targets):
                found[name] = scheme
                break
    sparse_conf = qc.get("sparsity_config") or {}
    sparse: list[str] = []
    if isinstance(sparse_conf, dict) and sparse_conf:
        targets, skip = list(sparse_conf.get("targets") or []), list(sparse_conf.get("ignore") or [])
        sparse = [name for name, mro in classes.items() if any(matches(name, mro, t) for t in targets)
                  and not any(matches(name, mro, t) for t in skip)]
    return found, sparse, str((sparse_conf or {}).get("sparsity_structure") or "unstructured")


def decode_layer(tensors: Mapping[str, np.ndarray], scheme: Scheme, where: str) -> tuple[WeightQuant, Optional[str]]:
    """One layer's codes and scales from its tensors (local names: ``weight_packed``,
    ``weight_scale``, ``weight_shape``, or ``weight`` int8 for naive-quantized; scale as float32)
    and, when lwdsl's state cannot record it, why (module docstring). ``dequantize()`` of the
    result is the layer's weight, ``f32(code) * scale``.

    Raises:
        UsageError: missing or extra tensors (``weight_zero_point``, ``weight_g_idx``), shapes
            that disagree with the scheme, codes outside ``num_bits``.
    """
    for extra in ("weight_zero_point", "weight_g_idx"):
        if extra in tensors:
            raise _refuse(where, f"{extra} is stored (lwdsl reads symmetric codes in consecutive groups)")
    if "weight_scale" not in tensors:
        raise _refuse(where, "no weight_scale")
    if scheme.format == "pack-quantized":
        if "weight_packed" not in tensors or "weight_shape" not in tensors:
            raise _refuse(where, "pack-quantized without weight_packed and weight_shape")
        shape = tuple(int(d) for d in np.asarray(tensors["weight_shape"]).reshape(-1))
        if len(shape) != 2:
            raise _refuse(where, f"weight_shape {shape} is not [out, in]")
        codes = unpack_int32(tensors["weight_packed"], scheme.bits, shape)
    else:
        codes = np.asarray(tensors.get("weight"))
        if codes.dtype != np.int8 or codes.ndim != 2:
            raise _refuse(where, f"{scheme.format} weight is {codes.dtype} {codes.shape}, not int8 [out, in]")
        lim = 1 << (scheme.bits - 1)
        if codes.size and (int(codes.min()) < -lim or int(codes.max()) >= lim):
            raise _refuse(where, f"codes outside the {scheme.bits}-bit range")
    rows, cols = codes.shape
    scale = np.asarray(tensors["weight_scale"], dtype=np.float32)
    if scheme.strategy == "group":
        if cols % scheme.group or scale.shape != (rows, cols // scheme.group):
            raise _refuse(where, f"weight_scale {scale.shape} for [{rows}, {cols}] in groups of {scheme.group}")
        q = WeightQuant(codes, scale, scheme.bits, 0, group=scheme.group)
    elif scheme.strategy == "channel":
        if scale.size != rows or (scale.ndim == 2 and scale.shape[1] != 1):
            raise _refuse(where, f"weight_scale {scale.shape} for {rows} output channels")
        q = WeightQuant(codes, scale.reshape(rows), scheme.bits, 0)
    else:
        if scale.size != 1:
            raise _refuse(where, f"weight_scale {scale.shape} for one tensor scale")
        q = WeightQuant(codes, scale.reshape(()), scheme.bits, None)
    if not np.isfinite(scale).all():
        raise _refuse(where, "a weight_scale is NaN or infinite")
    if codes.size and int(codes.min()) == -(1 << (scheme.bits - 1)):  # the full range: lwdsl's full grid
        q = dataclasses.replace(q, grid="full")
    why = None
    if (scale <= 0).any():
        why = "a weight_scale is 0 or negative (lwdsl's scales are positive)"
    return q, why
