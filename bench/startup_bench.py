"""Start-up of the tensorflow backend: importing it and building lenet5, Keras 3 against Keras 2.

Each measurement is a fresh Python process (nothing cached in memory; the OS file cache is warm
after the first round), alternating the two sides round by round. The Keras 2 side is lwdsl's
tree before the Keras 3 port (``--keras2-tree``: a checkout of that commit, with
``lwdsl/backends`` linked to its ``backends``), run with ``TF_USE_LEGACY_KERAS=1`` as it was.

    git archive f18a0b9 | tar -x -C /tmp/k2 && ln -s /tmp/k2/backends /tmp/k2/lwdsl/backends
    python bench/startup_bench.py --keras2-tree /tmp/k2 [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CODE = r"""
import sys, time, json
t0 = time.perf_counter()
from lwdsl.backend import get_backend
be = get_backend("tensorflow")
be.set_seed(0)
t1 = time.perf_counter()
h = be.load_model("lenet5", (1, 28, 28), 10)
t2 = time.perf_counter()
import lwdsl
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "lwdsl": lwdsl.__file__, "model": type(h.model).__module__}))
"""


def one(tree: str | None) -> dict:
    env = dict(os.environ)
    cwd = None
    if tree:
        env["TF_USE_LEGACY_KERAS"] = "1"
        env["PYTHONPATH"] = tree
        cwd = tree
    else:
        env.pop("TF_USE_LEGACY_KERAS", None)
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keras2-tree", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"keras3": [], "keras2": []}
    one(None), one(args.keras2_tree)  # warm the file cache
    for _ in range(args.rounds):
        runs["keras3"].append(one(None))
        runs["keras2"].append(one(args.keras2_tree))
    print(f"load {os.getloadavg()[0]:.1f}, {args.rounds} rounds, median (min-max) seconds")
    print(f"{'':8} {'import backend':>24} {'build lenet5':>24} {'total':>24}  model class from")
    for side, rs in runs.items():
        cols = []
        for key in ("import_s", "build_s", None):
            vals = [r["import_s"] + r["build_s"] if key is None else r[key] for r in rs]
            cols.append(f"{statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})")
        print(f"{side:8} {cols[0]:>24} {cols[1]:>24} {cols[2]:>24}  {rs[0]['model'].split('.')[0]}")


if __name__ == "__main__":
    main()
