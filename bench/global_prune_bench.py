"""Global magnitude pruning at scale: lwdsl's torch backend vs torch.nn.utils.prune.

Every measurement runs in a fresh subprocess, so peak memory is that process's alone:
``ru_maxrss`` at the end minus the RSS right after the model was created, divided by the
model's bytes (the extra memory the prune needs; the model itself is 1x). The total peak over
the model's bytes is printed too.

    python bench/global_prune_bench.py            # 100M side by side, masks compared, then 1B lwdsl
    python bench/global_prune_bench.py --quick    # 1024x1024 layers: 6M and 63M
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

AMOUNT = 0.2


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _model(layers: int, dim: int):
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(dim, dim) for _ in range(layers)])


def _lwdsl_prune(model) -> None:
    from lwdsl.backend import Dataset, StepContext, get_backend
    from lwdsl.backends.torch_backend.handle import TorchModel
    from lwdsl.language.specs import PruneSpec

    backend = get_backend("torch")
    dim = model[0].in_features
    handle = TorchModel(model, "bench", (dim,), dim)
    ctx = StepContext(data=Dataset("none", *([None] * 4), 0), seed=0, index=0, progress=None)
    names = [layer.name for layer in backend.layers(handle) if layer.kind == "linear"]
    backend.apply(handle, PruneSpec(scope="global", method="l1", amount=AMOUNT), names, ctx)
    return handle


def _torch_prune(model) -> None:
    from torch import nn
    from torch.nn.utils import prune

    params = [(m, "weight") for m in model if isinstance(m, nn.Linear)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=AMOUNT)


def child(method: str, layers: int, dim: int) -> None:
    import torch  # noqa: F401  (imported before the baseline)

    import lwdsl.backends.torch_backend  # noqa: F401

    model = _model(layers, dim)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    after_model = _rss_bytes()
    start = time.perf_counter()
    (_lwdsl_prune if method == "lwdsl" else _torch_prune)(model)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    weights = [m.weight for m in model]
    pruned = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    print(json.dumps({
        "method": method, "params": sum(p.numel() for p in model.parameters()), "seconds": seconds,
        "extra_x": (peak - after_model) / model_bytes, "peak_x": peak / model_bytes, "pruned": pruned / total,
    }))  # fmt: skip


def agree(layers: int, dim: int) -> None:
    """Both methods on the same weights: where do their masks differ, and is every difference
    a tie at the cut (equal magnitudes, which lwdsl breaks by flat index and topk otherwise)?"""

    a = _model(layers, dim)
    b = _model(layers, dim)
    handle = _lwdsl_prune(a)
    _torch_prune(b)
    origs = [b[i].weight_orig.detach().abs() for i in range(layers)]
    cut = max(float(o[~handle.masks[str(i)]].max()) for i, o in enumerate(origs))
    differ = [handle.masks[str(i)] != b[i].weight_mask.bool() for i in range(layers)]
    print(json.dumps({
        "disagreements": sum(int(d.sum()) for d in differ),
        "not_ties": sum(int((d & (o != cut)).sum()) for d, o in zip(differ, origs)),
        "at_cut": sum(int((o == cut).sum()) for o in origs),
    }))  # fmt: skip


def _run(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(r: dict) -> str:
    return (f"{r['method']:>18}  {r['params'] / 1e6:8.1f}M  {r['seconds']:8.2f} s  "
            f"extra {r['extra_x']:5.2f}x  peak {r['peak_x']:5.2f}x  pruned {r['pruned']:.4f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1024x1024 layers instead of 4096x4096")
    parser.add_argument("--skip-big", action="store_true", help="skip the 60-layer (1B) run")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "LAYERS", "DIM"), help=argparse.SUPPRESS)
    parser.add_argument("--agree", nargs=2, metavar=("LAYERS", "DIM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), int(args.child[2]))
    if args.agree:
        return agree(int(args.agree[0]), int(args.agree[1]))
    dim = "1024" if args.quick else "4096"
    print(f"global magnitude prune, amount {AMOUNT}, Linear {dim}x{dim} layers (extra = (peak RSS - RSS after model) / model bytes)")
    lw = _run("--child", "lwdsl", "6", dim)
    tp = _run("--child", "torch_global_unstr", "6", dim)
    for r in (lw, tp):
        print(_row(r))
    print(f"  lwdsl is {tp['seconds'] / lw['seconds']:.1f}x faster with {lw['extra_x'] / tp['extra_x']:.3f} of the extra memory")
    ag = _run("--agree", "6", dim)
    print(f"  masks on the same weights: {ag['disagreements']} of {lw['params']} weights differ, {ag['not_ties']} of them "
          f"away from the cut ({ag['at_cut']} weights sit exactly at the cut magnitude: ties, broken differently)")
    if not args.skip_big:
        print(_row(_run("--child", "lwdsl", "60", dim)))


if __name__ == "__main__":
    main()
