"""Time and memory of ``prune global l1 0.2`` on the tensorflow backend, on a big Dense stack.

Each measurement runs in a fresh subprocess: it builds a Keras 3 model of LAYERS Dense layers
of WIDTH x WIDTH (default 6 x 4096^2 = 100.7M weights, 403 MB), then prunes 20% of all weights
together with lwdsl's global magnitude selection (exact, no concatenation, see lwdsl.semantics.masks).
Printed: seconds, peak RSS of the process, and the peak's growth during pruning as a multiple
of the model's bytes. ``--quick`` uses 6 x 1024^2.

    python bench/tf_global_prune_bench.py [--quick] [--layers N] [--width W]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
from lwdsl.backend import get_backend, StepContext, Dataset
from lwdsl.runner.progress import NullBar
from lwdsl.language.specs import PruneSpec
import lwdsl.backends.tf_backend as tfb
from lwdsl.backends.tf_backend._tf import keras

layers, width = int(sys.argv[1]), int(sys.argv[2])
inp = keras.Input((width,))
x = inp
for i in range(layers):
    x = keras.layers.Dense(width, use_bias=False, kernel_initializer=keras.initializers.RandomNormal(seed=i), name=f"fc{i}")(x)
model = keras.Model(inp, x)
be = get_backend("tensorflow")
handle = tfb.KerasHandle(model)
names = [f"fc{i}" for i in range(layers)]
model_bytes = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
before = rss()
data = Dataset("none", np.zeros((1, 1, 1, 1), np.float32), np.zeros(1, np.int64), np.zeros((1, 1, 1, 1), np.float32), np.zeros(1, np.int64), 2)
ctx = StepContext(data, seed=0, index=0, progress=lambda total, what: NullBar())
start = time.perf_counter()
be.apply(handle, PruneSpec(scope="global", method="l1", amount=0.2), names, ctx)
seconds = time.perf_counter() - start
stats = be.stats(handle)
print(json.dumps({"params": stats.params, "zeros": stats.params - stats.nonzero_params, "model_bytes": model_bytes,
                  "seconds": seconds, "peak_rss": rss(), "rss_before": before}))
"""


def measure(layers: int, width: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(layers), str(width)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 x 1024^2 instead of 6 x 4096^2")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=None)
    args = parser.parse_args()
    width = args.width or (1024 if args.quick else 4096)
    r = measure(args.layers, width)
    mb = r["model_bytes"] / 1e6
    print(f"tensorflow backend, prune global l1 0.2 on {args.layers} Dense {width}x{width}: {r['params']:,} weights ({mb:.0f} MB)")
    print(f"  pruned {r['zeros']:,} weights ({r['zeros'] / r['params']:.4f}) in {r['seconds']:.2f} s")
    print(f"  peak RSS {r['peak_rss'] / 1e6:.0f} MB (before pruning {r['rss_before'] / 1e6:.0f} MB): "
          f"{r['peak_rss'] / r['model_bytes']:.2f}x the model's bytes in all, "
          f"growth during pruning {(r['peak_rss'] - r['rss_before']) / r['model_bytes']:.2f}x")


if __name__ == "__main__":
    main()
