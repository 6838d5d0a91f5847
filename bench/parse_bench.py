"""Start-up of `lwdsl check` beside bare Python, parse + validate time of a generated 1,000-step
recipe, and the wall time of `lwdsl check` on every shipped recipe.

    .venv/bin/python bench/parse_bench.py [--steps 1000] [--runs 7] [--startup-runs 15] [--startup-only]

Start-up: each command is a fresh process, timed as wall seconds around ``subprocess.run``; the
commands take turns round by round (so a change of load falls on all of them alike), after one
untimed round that warms the file cache and writes the parser tables' cache. The median of the
rounds is printed with the minimum and maximum, and the load average before and after (the
machine's other work is in every figure). lwdsl's bytecode is compiled first, as ``pip install``
does: with ``PYTHONDONTWRITEBYTECODE`` set and no ``__pycache__``, every start would compile the
sources again (about 50 ms), which no installed lwdsl does.

Prints figures only; no assertion (timings belong in benchmarks, not tests).
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
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


def _startup(runs: int) -> None:
    import lwdsl

    compileall.compile_dir(str(Path(lwdsl.__file__).parent), quiet=1)
    recipe = str(ROOT / "recipes" / "lenet5-mnist.lw")
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import lwdsl'": [sys.executable, "-c", "import lwdsl"],
        "lwdsl check recipes/lenet5-mnist.lw": [LWDSL, "check", recipe],
        "lwdsl check --backend torch (same)": [LWDSL, "check", "--backend", "torch", recipe],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    before = os.getloadavg()
    for round_ in range(runs + 1):
        for name, command in commands.items():
            used = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
            wall = time.perf_counter() - start
            now = resource.getrusage(resource.RUSAGE_CHILDREN)
            if round_:  # the first round warms the caches
                times[name].append(wall)
                cpu[name].append(now.ru_utime - used.ru_utime + now.ru_stime - used.ru_stime)
    after = os.getloadavg()
    print(f"start-up of a fresh process: median (min-max) wall seconds of {runs} rounds, taking turns, and median CPU "
          f"seconds (user + system: what the machine's other work barely changes); load average {before[0]:.2f} before, "
          f"{after[0]:.2f} after, {os.cpu_count()} CPUs")
    base = statistics.median(times["python -c pass"])
    for name, values in times.items():
        median = statistics.median(values)
        extra = f"  +{median - base:.3f} s over bare Python" if name != "python -c pass" else ""
        print(f"  {name:38s} {median:.3f} s ({min(values):.3f}-{max(values):.3f}), CPU {statistics.median(cpu[name]):.3f} s{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--startup-runs", type=int, default=15, help="rounds of the start-up timing (at least 10)")
    parser.add_argument("--startup-only", action="store_true", help="only the start-up figures")
    args = parser.parse_args()

    _startup(max(args.startup_runs, 10))
    if args.startup_only:
        return

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
