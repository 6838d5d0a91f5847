"""AMC's point at small scale (issue 23): Fashion-MNIST LeNet-5, whole filters removed until the
model keeps 25% of its baseline multiply-accumulates, searched per-layer ratios against one
uniform ratio, test accuracy before any fine-tuning, seeds 0-2.

For each seed (its own cached baseline, ``--baseline-epochs``): ``prune auto 75% of=macs``
(the core's greedy search on 2000 training images, or the uniform ratio when that answers more
of them right: the column ``chosen``), then ``prune l1 R structured=filters remove=true except
"fc2"`` with ``R`` the uniform ratio that ``prune auto`` computed for the same target (the same
MAC budget, every group the same ratio). Both: one-shot test accuracy, kept MACs.

    LWDSL_DATA=../shared/data python bench/amc_bench.py [--backend torch] [--seeds 0,1,2]
                                                        [--baseline-epochs 2] [--amount 75]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lwdsl  # noqa: E402


def _run(text: str, seed: int, args: argparse.Namespace):
    return lwdsl.run(text, "lenet5", backend=args.backend, data=args.data, seed=seed, baseline_epochs=args.baseline_epochs,
                     latency=False, quiet=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--baseline-epochs", type=int, default=2)
    parser.add_argument("--amount", type=int, default=75, help="percent of the MACs removed")
    args = parser.parse_args()
    print(f"LeNet-5 on {args.data} ({args.backend}, {args.baseline_epochs}-epoch baselines): `prune auto {args.amount}% of=macs` "
          f"against one uniform filter ratio at the same MAC budget, test accuracy before fine-tuning")
    print(f"{'seed':>4} {'baseline':>9} {'auto':>7} {'chosen':>8} {'uniform':>8} {'ratio':>6} {'gain':>6}  kept MACs auto / uniform"
          f"  removed per group (auto | uniform)")
    gains, autos, unis = [], [], []
    for seed in [int(s) for s in args.seeds.split(",")]:
        start = time.perf_counter()
        auto = _run(f"prune auto {args.amount}% of=macs", seed, args)
        steps = auto.report["steps"]
        notes = steps[1]["auto_channels"]
        ratio = notes["uniform"]["ratio"]
        uni = _run(f"prune l1 {ratio!r} structured=filters remove=true except \"fc2\"", seed, args)
        seconds = time.perf_counter() - start
        base, a, u = steps[0]["metrics"]["accuracy"], steps[1]["metrics"]["accuracy"], uni.report["steps"][1]["metrics"]["accuracy"]
        gains.append(100 * (a - u))
        autos.append(a)
        unis.append(u)
        groups = " ".join(f"{g['group']} {g['removed']}/{g['channels']}" for g in notes["groups"])
        ugroups = " ".join(f"{g['group']} {g['uniform']}/{g['channels']}" for g in notes["groups"])
        print(f"{seed:>4} {100 * base:>8.2f}% {100 * a:>6.2f}% {notes['chosen']:>8} {100 * u:>7.2f}% {ratio:>6.3f} "
              f"{gains[-1]:>+6.2f}  {notes['kept'] / notes['baseline']:.4f} / {notes['uniform']['macs'] / notes['baseline']:.4f}"
              f"  {groups} | {ugroups}  ({seconds:.0f} s)", flush=True)
    n = len(gains)
    print(f"mean: auto {100 * sum(autos) / n:.2f}%, uniform {100 * sum(unis) / n:.2f}%, auto - uniform {sum(gains) / n:+.2f} points "
          f"(issue 23 asks >= +1)")


if __name__ == "__main__":
    main()
