"""Reproduce the setting of Han et al. 2015 (Learning both Weights and Connections) on MNIST.

Paper: LeNet-300-100 1.64% -> 1.59% error at 12x fewer weights; LeNet-5 (Caffe) 0.80% -> 0.77%
at 12x. For each backend this trains a baseline (SGD lr 0.01, momentum 0.9, cosine schedule), runs
recipes/han2015-*.lw from it and prints baseline error, error after, and the compression ratio
of non-zero parameters (weights and biases), side by side for the backends.

    LWDSL_DATA=../shared/data .venv/bin/python bench/han2015.py [--backends torch,tensorflow]
        [--models lenet300,lenet5] [--baseline-epochs 12]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lwdsl
from lwdsl.backend.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"lenet300": (1.64, 1.59, 12), "lenet5": (0.80, 0.77, 12)}


def baseline(model: str, backend: str, epochs: int, folder: Path) -> Path:
    """Train a strong baseline with a recipe of one finetune step and save it as .lwz."""
    result = lwdsl.run(
        f"finetune epochs={epochs} lr=0.01 momentum=0.9 schedule=cosine",
        model,
        backend=backend,
        data="mnist",
        baseline_epochs=1,
        quiet=True,
        latency=False,
    )
    path = folder / f"{backend}-{model}.lwz"
    save_weights(path, result.backend.state(result.model))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backends", default="torch,tensorflow")
    ap.add_argument("--models", default="lenet300,lenet5")
    ap.add_argument("--baseline-epochs", type=int, default=12)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for backend in args.backends.split(","):
                t0 = time.perf_counter()
                ckpt = baseline(model, backend, args.baseline_epochs, Path(tmp))
                result = lwdsl.run(
                    ROOT / "recipes" / f"han2015-{model}.lw", model, backend=backend, data="mnist",
                    checkpoint=ckpt, quiet=True, latency=False,
                )
                s = result.report["summary"]
                rows.append((model, backend, 100 * (1 - s["accuracy_before"]), 100 * (1 - s["accuracy_after"]),
                             s["nonzero_compression"], s["size_gzip_ratio"], time.perf_counter() - t0))
                print(f"done {model} on {backend} in {rows[-1][-1]:.0f} s", flush=True)
    print()
    print(f"{'model':9} {'backend':10} {'error before':>12} {'error after':>11} {'lost (pt)':>9} "
          f"{'nonzero x':>9} {'gzip x':>7} {'paper':>22}")
    for model, backend, eb, ea, cr, gz, _ in rows:
        pb, pa, pc = PAPER[model]
        print(f"{model:9} {backend:10} {eb:11.2f}% {ea:10.2f}% {ea - eb:9.2f} {cr:9.1f} {gz:7.1f} "
              f"{f'{pb:.2f}% -> {pa:.2f}% at {pc}x':>22}")


if __name__ == "__main__":
    main()
