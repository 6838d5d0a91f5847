"""Parse + validate time of a generated 1,000-step recipe, and the wall time of `lwdsl check`.

    .venv/bin/python bench/parse_bench.py [--steps 1000] [--runs 7]

Prints figures only; no assertion (timings belong in benchmarks, not tests).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LWDSL = str(Path(sys.executable).with_name("lwdsl"))  # the console script beside this Python

#: Steps that may follow each other in any number (no quantize: it may come once per layer).
STEPS = [
    "prune global l1 {p}%",
    "prune l2 0.{d} structured=filters on conv",
    'prune l1 0.{d} on "features.*" except norm expect>=1',
    "prune nm=2:4 on linear",
    "regularize epochs=1 l1=1e-4",
    "finetune epochs={d} lr=0.01 schedule=cosine",
    "prune l1 $amount on linear",
]


def generated_recipe(steps: int) -> str:
    lines = ['lwdsl 1', 'recipe "bench"', "target lenet5 on mnist", "let amount = 30%", ""]
    for i in range(steps):
        lines.append(STEPS[i % len(STEPS)].format(p=1 + i % 90, d=1 + i % 9) + ("  # note" if i % 10 == 0 else ""))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    import lwdsl

    text = generated_recipe(args.steps)
    lwdsl.parse(text)  # warm: grammar loaded, adapters built
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        recipe = lwdsl.parse(text)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"parse + validate, {len(recipe.steps)} steps: median {median * 1000:.1f} ms "
          f"({median / len(recipe.steps) * 1e6:.0f} us a step, {args.runs} runs)")

    recipes = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "recipes").glob("*.lw"))
    walls = []
    for _ in range(max(3, args.runs // 2)):
        start = time.perf_counter()
        subprocess.run([LWDSL, "check", *recipes], cwd=ROOT, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
    print(f"lwdsl check recipes/*.lw ({len(recipes)} files), wall: median {statistics.median(walls) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
