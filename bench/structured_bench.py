"""Physical filter removal: parameters and latency before/after
``prune l2 0.5 structured=filters remove=true`` on convolutions.

LeNet-5 on 1x28x28 prunes conv1 and conv2; ResNet-18 (torchvision, 10 classes) on 3x64x64
prunes only the first conv of each basic block (``layer*.conv1``): the second conv's output
feeds the residual addition and cannot shrink alone. Latency is the median forward time.

    python bench/structured_bench.py [--threads 2] [--size 64]
"""

from __future__ import annotations

import argparse
import fnmatch

from lwdsl.backend import Dataset, StepContext, get_backend
from lwdsl.language.specs import PruneSpec

SPEC = PruneSpec(method="l2", amount=0.5, structured="filters", remove=True)


def _measure(backend, handle, shape, threads):
    stats = backend.stats(handle)
    return stats.params, [backend.latency_ms(handle, b, shape, threads) for b in (1, 64)]


def run(ref: str, shape: tuple[int, ...], pattern: str, threads: int) -> None:
    backend = get_backend("torch")
    handle = backend.load_model(ref, shape, 10)
    layers = [l.name for l in backend.layers(handle) if l.kind == "conv" and fnmatch.fnmatchcase(l.name, pattern)]
    ctx = StepContext(data=Dataset("none", *([None] * 4), 10), seed=0, index=0, progress=None)
    params0, lat0 = _measure(backend, handle, shape, threads)
    backend.apply(handle, SPEC, layers, ctx)
    params1, lat1 = _measure(backend, handle, shape, threads)
    print(f"{ref} on {'x'.join(map(str, shape))}, pruned {len(layers)} convs ({pattern}), {threads} threads")
    print(f"  params      {params0:>10,} -> {params1:>10,}  ({params1 / params0:.2f}x)")
    for b, before, after in zip((1, 64), lat0, lat1):
        print(f"  batch {b:<3}   {before:8.2f} ms -> {after:8.2f} ms  ({before / after:.2f}x faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="1 is steadier on a shared 2-core machine")
    parser.add_argument("--size", type=int, default=64, help="ResNet input height/width")
    args = parser.parse_args()
    run("lenet5", (1, 28, 28), "conv*", args.threads)
    run("torchvision:resnet18", (3, args.size, args.size), "layer*.conv1", args.threads)


if __name__ == "__main__":
    main()
