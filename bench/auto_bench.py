"""``prune auto`` against ``prune global l1`` at the same overall amount, on MNIST: one-shot
and after the same fine-tuning.

For each model and amount: the test accuracy right after the prune (one-shot) and after
``--finetune`` epochs of ``finetune`` (the same for both; 0 skips it), with the same cached
baseline (``--baseline-epochs``, trained once per model and backend), and each layer's
sparsity. ``prune auto`` chooses per-layer counts on 2000 training images (the global, uniform
and sensitivity allocations compared, then exchanges between layers; docs/semantics.md);
``prune global`` cuts all weights by one magnitude. Winner: a gap under 0.1 point is a tie.

    python bench/auto_bench.py [--models lenet300,lenet5,seedcnn] [--amounts 50,70,90]
                               [--backend torch] [--baseline-epochs 3] [--finetune 1] [--data mnist]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lwdsl  # noqa: E402


def _row(model: str, text: str, args: argparse.Namespace) -> tuple[float, float, float, str]:
    if args.finetune:
        text += f"\nfinetune epochs={args.finetune}"
    start = time.perf_counter()
    result = lwdsl.run(text, model, backend=args.backend, data=args.data, baseline_epochs=args.baseline_epochs,
                       latency=False, quiet=True)
    seconds = time.perf_counter() - start
    steps = result.report["steps"]
    layers = " ".join(f"{l['name']} {100 * l['sparsity']:.0f}%" for l in steps[1]["metrics"]["layers"] if l["weights"])
    start_name = (steps[1].get("auto_prune") or {}).get("start")
    tuned = steps[-1]["metrics"]["accuracy"] if args.finetune else float("nan")
    where = f" from {start_name}" if start_name else ""
    return steps[0]["metrics"]["accuracy"], steps[1]["metrics"]["accuracy"], tuned, f"{layers}{where} ({seconds:.0f} s)"


def _winner(auto: float, glob: float) -> str:
    gap = 100 * (auto - glob)
    return "tie" if abs(gap) < 0.1 else ("auto" if gap > 0 else "global")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet300,lenet5,seedcnn")
    parser.add_argument("--amounts", default="50,70,90")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--baseline-epochs", type=int, default=3)
    parser.add_argument("--finetune", type=int, default=1, help="fine-tuning epochs after the prune (0: one-shot only)")
    args = parser.parse_args()
    print(f"test accuracy on {args.data} ({args.backend}, {args.baseline_epochs}-epoch baselines): one-shot, and after "
          f"`finetune epochs={args.finetune}`")
    print(f"{'model':<9} {'amount':>6} {'baseline':>9} | {'auto':>7} {'global':>7} {'winner':<7}| {'auto':>7} {'global':>7} "
          f"{'winner':<7}| per-layer sparsity: auto | global")
    for model in args.models.split(","):
        for pct in [int(a) for a in args.amounts.split(",")]:
            base, auto, auto_ft, auto_layers = _row(model, f"prune auto {pct}%", args)
            _, glob, glob_ft, glob_layers = _row(model, f"prune global l1 {pct}%", args)
            print(f"{model:<9} {pct:>5}% {100 * base:>8.2f}% | {100 * auto:>6.2f}% {100 * glob:>6.2f}% {_winner(auto, glob):<7}| "
                  f"{100 * auto_ft:>6.2f}% {100 * glob_ft:>6.2f}% {_winner(auto_ft, glob_ft):<7}| {auto_layers} | {glob_layers}",
                  flush=True)


if __name__ == "__main__":
    main()
