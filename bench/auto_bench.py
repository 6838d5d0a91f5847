"""``prune auto`` against ``prune global l1`` at the same overall amount, one-shot, on MNIST.

For each model and amount: the test accuracy right after the prune (no fine-tuning), with the
same cached baseline (``--baseline-epochs``, trained once per model and backend), and each
layer's sparsity. ``prune auto`` chooses per-layer amounts from sensitivity measured on 1000
training images (docs/semantics.md); ``prune global`` cuts all weights by one magnitude.

    python bench/auto_bench.py [--models lenet300,lenet5] [--amounts 50,70,90] [--backend torch]
                               [--baseline-epochs 3] [--data mnist]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lwdsl  # noqa: E402


def _row(model: str, text: str, args: argparse.Namespace) -> tuple[float, float, str]:
    start = time.perf_counter()
    result = lwdsl.run(text, model, backend=args.backend, data=args.data, baseline_epochs=args.baseline_epochs,
                       latency=False, quiet=True)
    seconds = time.perf_counter() - start
    steps = result.report["steps"]
    layers = " ".join(f"{l['name']} {100 * l['sparsity']:.0f}%" for l in steps[-1]["metrics"]["layers"] if l["weights"])
    return steps[0]["metrics"]["accuracy"], steps[-1]["metrics"]["accuracy"], f"{layers} ({seconds:.0f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet300,lenet5")
    parser.add_argument("--amounts", default="50,70,90")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--baseline-epochs", type=int, default=3)
    args = parser.parse_args()
    print(f"one-shot test accuracy on {args.data} ({args.backend}, {args.baseline_epochs}-epoch baselines)")
    print(f"{'model':<9} {'amount':>6} {'baseline':>9} {'auto':>7} {'global':>7}  winner   per-layer sparsity: auto | global")
    for model in args.models.split(","):
        for pct in [int(a) for a in args.amounts.split(",")]:
            base, auto, auto_layers = _row(model, f"prune auto {pct}%", args)
            _, glob, glob_layers = _row(model, f"prune global l1 {pct}%", args)
            gap = 100 * (auto - glob)
            winner = "tie" if abs(gap) < 0.1 else ("auto" if gap > 0 else "global")
            print(f"{model:<9} {pct:>5}% {100 * base:>8.2f}% {100 * auto:>6.2f}% {100 * glob:>6.2f}%  {winner:<7}  "
                  f"{auto_layers} | {glob_layers}")


if __name__ == "__main__":
    main()
