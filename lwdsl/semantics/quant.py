"""Kept for old imports: ``from lwdsl.semantics.quant import X`` works for every name it ever
exported. New code imports from the module that defines the name:

- :mod:`.forms`: the one table of ``quantize`` forms (``FORM_BITS``, ``HALF_FORMS``, ...);
- :mod:`.packing`: the one bit packer (``pack_codes``, ``unpack_codes``, cluster indices);
- :mod:`.codes`: weight codes and scales (``WeightQuant``, ``quantize_weight``, ``quantize_as``,
  ternary, binary, ``code_bounds``, ``codes_with_scale``, ``snap``, ``requantize``, ``agreement``, ``int8_only``);
- :mod:`.activations`: ``ActQuant``, ``act_qparams``, ``fake_quantize``, ``RangeObserver``;
- :mod:`.casts`: ``half_bits``, ``half_values``, ``cast_weight``;
- :mod:`.state`: the state format (``pack_state``, ``unpack_state``, sparse packing,
  ``check_state`` and ``DamagedTensor``, ``unpack_casts``, ``unpack_act``).
"""

from __future__ import annotations

from .activations import ActQuant, RangeObserver, act_qparams, fake_quantize
from .casts import cast_weight, half_bits, half_values
from .cluster import CLUSTER_BITS, cluster_weight, nearest_codes
from .codes import (
    WeightQuant,
    agreement,
    code_bounds,
    codes_with_scale,
    int8_only,
    quantize_as,
    quantize_binary,
    quantize_ternary,
    quantize_weight,
    requantize,
    snap,
)
from .forms import FORM_BITS, HALF_FORMS
from .packing import pack_codes, pack_indices, unpack_codes, unpack_indices
from .state import (
    ACT_SCALE,
    ACT_ZERO_POINT,
    BITS,
    CODEBOOK,
    CODES,
    NONZERO,
    SCALE,
    SHAPE,
    DamagedTensor,
    check_state,
    pack_state,
    sparse_pays,
    unpack_act,
    unpack_casts,
    unpack_state,
)

__all__ = [
    "WeightQuant",
    "int8_only",
    "quantize_weight",
    "ActQuant",
    "act_qparams",
    "fake_quantize",
    "RangeObserver",
    "agreement",
    "codes_with_scale",
    "code_bounds",
    "snap",
    "pack_state",
    "unpack_state",
    "check_state",
    "DamagedTensor",
    "unpack_act",
    "unpack_casts",
    "quantize_ternary",
    "quantize_binary",
    "quantize_as",
    "pack_codes",
    "unpack_codes",
    "FORM_BITS",
    "HALF_FORMS",
    "half_bits",
    "half_values",
    "cast_weight",
    "requantize",
    "CODEBOOK",
    "NONZERO",
    "sparse_pays",
    "CODES",
    "SCALE",
    "BITS",
    "SHAPE",
    "ACT_SCALE",
    "ACT_ZERO_POINT",
    "CLUSTER_BITS",
    "cluster_weight",
    "nearest_codes",
    "pack_indices",
    "unpack_indices",
]
