"""lwdsl.semantics.quant, kept for old imports, and the quantization modules it re-exports.

The numbers are tested per module: test_codes (weight codes and scales), test_activations,
test_casts, test_packing (the one bit packer), test_state (the state format and its load
checks), test_forms (the table of forms).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from lwdsl.semantics import quant as Q

SEMANTICS = Path(Q.__file__).parent

#: The quantization modules, each importing only the ones before it (and cluster, between
#: packing and codes: its indices are packed by packing, codes clusters with it).
ORDER = ["forms", "packing", "nm_layout", "code_layouts", "cluster", "codes", "casts", "activations", "state"]

#: Every name ``from lwdsl.semantics.quant import X`` gave before the split.
BEFORE = {
    "WeightQuant", "int8_only", "quantize_weight", "ActQuant", "act_qparams", "fake_quantize", "RangeObserver",
    "agreement", "codes_with_scale", "snap", "pack_state", "unpack_state", "check_state", "DamagedTensor",
    "unpack_act", "unpack_casts", "quantize_ternary", "quantize_binary", "quantize_as", "pack_codes", "unpack_codes",
    "FORM_BITS", "HALF_FORMS", "half_bits", "half_values", "cast_weight", "requantize", "CODEBOOK", "NONZERO",
    "sparse_pays", "CODES", "SCALE", "BITS", "SHAPE", "ACT_SCALE", "ACT_ZERO_POINT", "CLUSTER_BITS",
    "cluster_weight", "nearest_codes", "pack_indices", "unpack_indices",
}  # fmt: skip


def test_every_old_name_is_still_exported():
    assert BEFORE <= set(Q.__all__)
    for name in Q.__all__:
        assert hasattr(Q, name), name
    namespace: dict = {}
    exec("from lwdsl.semantics.quant import *", namespace)
    assert BEFORE <= set(namespace)


def test_quant_defines_nothing_itself():
    tree = ast.parse(Path(Q.__file__).read_text())
    defined = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert not defined
    for name in Q.__all__:
        obj = getattr(Q, name)
        if hasattr(obj, "__module__") and callable(obj):
            assert obj.__module__ != Q.__name__, name


@pytest.mark.parametrize("module", ["quant"] + ORDER)
def test_module_imports_numpy_only(module):
    code = f"import sys, lwdsl.semantics.{module}; print([m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def _semantics_imports(module: str) -> set[str]:
    tree = ast.parse((SEMANTICS / f"{module}.py").read_text())
    out = set()
    for node in ast.walk(tree):  # imports inside functions count too
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lwdsl.semantics."):
            out.add(node.module.split(".")[2])
    return out


def test_quantization_modules_import_one_way():
    bad = []
    for rank, module in enumerate(ORDER):
        for imported in _semantics_imports(module):
            if imported in ORDER and ORDER.index(imported) >= rank:
                bad.append(f"{module} imports {imported}")
            elif imported not in ORDER:
                bad.append(f"{module} imports {imported}, outside the quantization modules")
    assert not bad, "; ".join(bad)


def test_each_module_is_one_job_of_a_few_hundred_lines():
    for module in ORDER + ["quant"]:
        assert len((SEMANTICS / f"{module}.py").read_text().splitlines()) <= 400, module

