"""Deep Compression (Han et al. 2016) on MNIST: prune, retrain, weight sharing, beside the paper.

For each model (``lenet300``: LeNet-300-100, ``lenet5``: the Caffe LeNet-5) one fp32 baseline is
trained once by the torch backend and cached (``$LWDSL_CACHE/baselines/deep-compression-*``);
both backends then run ``recipes/deep-compression-<model>.lw`` from that same checkpoint. Printed
per model and backend:

- ``fp32 bytes``: 4 bytes per parameter (weights and biases) of the model;
- ``gzip``: bytes of the run's saved ``model.lwz`` (codes packed to ``bits`` per weight, sparsely
  where pruned: the bitmap of the non-zero codes and those codes; the codebooks, biases) after
  gzip -9, and ``fp32 / gzip``;
- ``huffman``: the size Han et al. count, computed from the same file: per clustered layer the
  positions of the non-zero codes as gaps (relative indices) and the non-zero codes, each
  Huffman-coded with its own code table, plus the tables (5 bytes a symbol: value and code
  length), the codebook (4 bytes a value), the shape (8 bytes a dimension), and every tensor
  left float at 4 bytes a value; ``fp32 / huffman``;
- test-set error of the baseline (``before``, measured by that backend) and after the recipe.

Paper: LeNet-5 39x, 0.80% -> 0.74%; LeNet-300-100 40x, 1.64% -> 1.58% (both with Huffman).

    LWDSL_DATA=../shared/data python bench/deep_compression.py [--models lenet300,lenet5]
        [--backends torch,tensorflow] [--baseline-epochs E] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import heapq
import os
import tempfile
import time
from collections import Counter
from pathlib import Path


import numpy as np  # noqa: E402

import lwdsl  # noqa: E402
from lwdsl.semantics.quant import unpack_state  # noqa: E402
from lwdsl.backend.weights import gzip_size, load_weights, save_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"lenet300": (1.64, 1.58, 40), "lenet5": (0.80, 0.74, 39)}
BASELINE_EPOCHS = {"lenet300": 12, "lenet5": 8}
BASELINE = {"lenet300": "finetune epochs={e} lr=0.05 momentum=0.9 schedule=cosine",
            "lenet5": "finetune epochs={e} lr=0.02 momentum=0.9 schedule=cosine"}


def huffman_bits(symbols: np.ndarray) -> tuple[int, int]:
    """(bits of the Huffman-coded stream, distinct symbols) for a 1-d integer array."""
    counts = Counter(np.asarray(symbols).reshape(-1).tolist())
    if len(counts) <= 1:
        return sum(counts.values()), len(counts)  # one symbol: 1 bit each
    heap = [(n, i, 0) for i, n in enumerate(counts.values())]  # (weight, tie-break, bits so far)
    heapq.heapify(heap)
    total, order = 0, len(heap)
    while len(heap) > 1:  # every merge adds one bit to every symbol below it: total += a + b
        a, _, _ = heapq.heappop(heap)
        b, _, _ = heapq.heappop(heap)
        total += a + b
        heapq.heappush(heap, (a + b, order, 0))
        order += 1
    return total, len(counts)


def huffman_bytes(path: Path) -> int:
    """Han et al.'s storage of a saved model (module docstring), in bytes."""
    state, _ = load_weights(path)
    flat, quants = unpack_state(state)
    total = 0
    for key, value in flat.items():
        layer = key[: -len(".weight")] if key.endswith(".weight") else None
        q = quants.get(layer) if layer else None
        if q is None:
            total += 4 * int(np.size(value))
            continue
        codes = np.asarray(q.codes).reshape(-1)
        where = np.flatnonzero(codes)
        gaps = np.diff(np.concatenate([[-1], where]))
        bits = 0
        for stream in (gaps, codes[where]):
            b, distinct = huffman_bits(stream)
            bits += b
            total += 5 * distinct
        total += -(-bits // 8) + 8 * codes.ndim + 4 * (q.codebook.size if q.codebook is not None else np.size(q.scale))
    return total


def baseline(model: str, epochs: int) -> Path:
    """The fp32 baseline both backends start from: trained once by torch, cached."""
    cache = Path(os.environ.get("LWDSL_CACHE") or Path.home() / ".cache" / "lwdsl") / "baselines"
    path = cache / f"deep-compression-torch-{model}-mnist-e{epochs}.lwz"
    if not path.exists():
        t0 = time.perf_counter()
        result = lwdsl.run(BASELINE[model].format(e=epochs), model, backend="torch", data="mnist",
                           baseline_epochs=0, quiet=True, latency=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_weights(path, result.backend.state(result.model))
        print(f"baseline {model}: trained {epochs} epochs in {time.perf_counter() - t0:.0f} s -> {path}", flush=True)
    return path


def one(model: str, backend: str, ckpt: Path, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lwdsl-dc-") as tmp:
        result = lwdsl.run(ROOT / "recipes" / f"deep-compression-{model}.lw", model, backend=backend, data="mnist",
                           checkpoint=ckpt, quiet=True, latency=False, out=Path(tmp) / "run", seed=seed)
        lwz = result.run_dir / "model.lwz"
        steps = result.report["steps"]
        base, final = steps[0]["metrics"], steps[-1]["metrics"]
        return {
            "fp32": 4 * base["params"], "gzip": gzip_size(lwz), "huffman": huffman_bytes(lwz),
            "before": 100 * (1 - base["accuracy"]), "after": 100 * (1 - final["accuracy"]),
            "nonzero": final["nonzero_params"], "params": base["params"], "seconds": time.perf_counter() - t0,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backends", default="torch,tensorflow")
    ap.add_argument("--models", default="lenet300,lenet5")
    ap.add_argument("--baseline-epochs", type=int, default=0, help="0: 12 for lenet300, 8 for lenet5")
    ap.add_argument("--seeds", default="0", help="run seeds (data order of every retraining), e.g. 0,1,2; one baseline for all")
    args = ap.parse_args()
    rows = []
    for model in args.models.split(","):
        ckpt = baseline(model, args.baseline_epochs or BASELINE_EPOCHS[model])
        for be in args.backends.split(","):
            for seed in (int(v) for v in args.seeds.split(",")):
                r = one(model, be, ckpt, seed)
                rows.append((model, be, seed, r))
                print(f"done {model} on {be}, seed {seed}, in {r['seconds']:.0f} s", flush=True)
    print()
    print(f"{'model':9} {'backend':10} {'seed':>4} {'fp32 bytes':>10} {'gzip':>7} {'x':>5} {'huffman':>7} {'x':>5} "
          f"{'non-zero':>8} {'error before':>12} {'after':>6} {'lost':>5}  paper (Huffman)")
    for model, be, seed, r in rows:
        pb, pa, px = PAPER[model]
        print(f"{model:9} {be:10} {seed:4} {r['fp32']:10,} {r['gzip']:7,} {r['fp32'] / r['gzip']:5.1f} {r['huffman']:7,} "
              f"{r['fp32'] / r['huffman']:5.1f} {100 * r['nonzero'] / r['params']:7.2f}% {r['before']:11.2f}% "
              f"{r['after']:5.2f}% {r['after'] - r['before']:+5.2f}  {px}x, {pb:.2f}% -> {pa:.2f}%")


if __name__ == "__main__":
    main()
