"""How big a run's ``model.lwz`` is: int4 g32 alone against 2:4 + int4 g32 (lwdsl's N:M layout).

Runs ``quantize int4 group=32`` and ``prune nm=2:4 | quantize int4 group=32`` on every linear
layer (``lm_head`` included; ``--except-head`` keeps it float) through ``lwdsl.run`` (torch,
``--baseline-epochs 0``: size does not depend on training) and prints, for both, the run
folder's ``model.lwz`` and what its arrays take: the quantized layers' codes, their position
metadata (the N:M layout's ``.positions`` and ``.nm``, the bitmaps of the older sparse layout),
their scales (float32, with ``.shape``, ``.bits``, ``.group``), the float tensors (the
embedding, ``lm_head`` when float, norms) and the archive's own bytes (one header a tensor).
``--method gptq`` uses SparseGPT 2:4 and GPTQ on ``--calibrate`` pydoc sequences, ``rtn`` (the
default) magnitude 2:4 and round to nearest: the layout and so the size are the same.

The last line says what the same files would take with 16-bit scales (half the scale bytes;
not a lwdsl option).

    python bench/lwz_size.py [--model 'tiny-llama?layers=16&hidden=512&heads=8&mlp=1376'] [--method rtn|gptq] [--except-head]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import lwdsl  # noqa: E402

PARTS = ("codes", "positions", "scales", "float", "archive")


def breakdown(path: Path) -> dict[str, int]:
    """Bytes of ``path`` by part (module docstring): each array's data, its ``.npy`` header
    and the zip's records counted as ``archive``."""
    out = dict.fromkeys(PARTS, 0)
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            name = info.filename[: -len(".npy")]
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
                header = f.tell()
            data = info.file_size - header
            out["archive"] += header
            if name == "__meta__":
                out["archive"] += data
            elif name.endswith(".weight.codes"):
                out["codes"] += data
            elif name.endswith((".weight.positions", ".weight.nm", ".weight.nonzero")):
                out["positions"] += data
            elif name.endswith((".weight.scale", ".weight.shape", ".weight.bits", ".weight.group")):
                out["scales"] += data
            else:
                out["float"] += data
    out["archive"] += path.stat().st_size - sum(out.values())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--method", choices=("rtn", "gptq"), default="rtn")
    parser.add_argument("--calibrate", type=int, default=16)
    parser.add_argument("--except-head", action="store_true")
    args = parser.parse_args()
    skip = ' except "lm_head"' if args.except_head else ""
    if args.method == "gptq":
        quant = f"quantize int4 method=gptq group=32 calibrate={args.calibrate}{skip}"
        prune = f"prune sparsegpt 50% nm=2:4 calibrate={args.calibrate}{skip}"
    else:
        quant, prune = f"quantize int4 group=32 on linear{skip}", f"prune nm=2:4 on linear{skip}"
    recipes = {"int4 g32": f"{quant}\n", "2:4 + int4 g32": f"{prune}\n{quant}\n"}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, recipe in recipes.items():
            out = Path(tmp) / label.replace(":", "").replace(" ", "").replace("+", "")
            start = time.perf_counter()
            result = lwdsl.run(recipe, args.model, data="pydoc", baseline_epochs=0, quiet=True, latency=False, out=out)
            took = time.perf_counter() - start
            path = out / "model.lwz"
            rows[label] = {"lwz": path.stat().st_size, **breakdown(path), "seconds": round(took, 1),
                           "weights": sum(q.codes.size for q in result.model.quant.values()), "layers": len(result.model.quant)}
    base, sparse = rows["int4 g32"], rows["2:4 + int4 g32"]
    print(f"model {args.model}, {base['layers']} int4 layers ({base['weights']:,} weights), lm_head "
          f"{'float' if args.except_head else 'int4'}, method {args.method}, load {os.getloadavg()[0]:.2f}")
    print("| bytes | model.lwz | codes | positions | scales | float tensors | archive | run s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, b in rows.items():
        print(f"| {label} | {b['lwz']:,} | {b['codes']:,} | {b['positions']:,} | {b['scales']:,} | {b['float']:,} | {b['archive']:,} | {b['seconds']} |")
    layers = [sum(b[p] for p in ("codes", "positions", "scales")) for b in (base, sparse)]
    print(f"2:4 + int4 against int4: model.lwz {sparse['lwz'] / base['lwz'] - 1:+.1%} ({sparse['lwz'] / base['lwz']:.4f}), "
          f"the quantized layers (codes + positions + scales) {layers[1] / layers[0] - 1:+.1%}, "
          f"float tensors {base['float'] / base['lwz']:.1%} of the int4 file")
    half = [b["lwz"] - b["scales"] // 2 for b in (base, sparse)]
    print(f"with 16-bit scales (not an option): {half[0]:,} and {half[1]:,} bytes, {half[1] / half[0] - 1:+.1%}")


if __name__ == "__main__":
    main()
