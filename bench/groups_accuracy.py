"""Accuracy after coupled structured removal on real data: lwdsl beside Torch-Pruning.

The zoo's residual ``resnet8`` on Fashion-MNIST: one baseline (``--baseline-epochs``, lwdsl's
baseline training and data order), then 50% of the channels of every group removed, either by
lwdsl (``prune l2 50% structured=filters remove=true on conv``) or by Torch-Pruning's
``MetaPruner`` with the same importance (the group's filters' L2 norm, classifier ignored; see
bench/groups_bench.py), then the same fine-tuning (lwdsl's ``finetune``, same epochs, learning
rate and data order) for both. Prints parameters and test accuracy at each point, and whether
the two pruned networks are the same.

    LWDSL_DATA=../shared/data python bench/groups_accuracy.py [--baseline-epochs 2] [--epochs 2]
"""

from __future__ import annotations

import argparse
import copy
import time

from lwdsl.backend import StepContext, get_backend
from lwdsl.data.builtin import load_data
from lwdsl.runner.progress import NullBar
from lwdsl.language.specs import FinetuneSpec, PruneSpec, TrainingOptions

from groups_bench import _filter_norm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs after the removal")
    parser.add_argument("--data", default="fashion_mnist")
    args = parser.parse_args()
    import torch
    import torch_pruning as tp
    from torch import nn

    data = load_data(args.data)
    be = get_backend("torch")
    ctx = StepContext(data=data, seed=0, index=0, progress=lambda total, what: NullBar())
    be.set_seed(0)
    base = be.load_model("resnet8", data.input_shape, data.num_classes)
    t = time.perf_counter()
    be.train(base, TrainingOptions(epochs=args.baseline_epochs, lr=0.05, momentum=0.9), ctx)
    print(f"# resnet8 on {args.data}: baseline {args.baseline_epochs} epochs ({time.perf_counter() - t:.0f} s), "
          f"then 50% of every channel group removed, then finetune epochs={args.epochs}")
    acc0 = be.evaluate(base, ctx)[0]
    params0 = be.stats(base).params

    ours = be.copy_model(base)
    convs = [layer.name for layer in be.layers(ours) if layer.kind == "conv"]
    t = time.perf_counter()
    ours = be.apply(ours, PruneSpec(method="l2", amount=0.5, structured="filters", remove=True), convs, ctx)
    ours_s = time.perf_counter() - t

    model = copy.deepcopy(base.module).eval()
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    t = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, *data.input_shape), importance=_filter_norm()(), pruning_ratio=0.5,
                                  ignored_layers=fc)
    pruner.step()
    tp_s = time.perf_counter() - t
    theirs = be.load_model(model, data.input_shape, data.num_classes)
    same = all(
        torch.equal(a, b) for a, b in zip(ours.module.state_dict().values(), theirs.module.state_dict().values())
    ) and [t.shape for t in ours.module.state_dict().values()] == [t.shape for t in theirs.module.state_dict().values()]

    rows = []
    for name, handle, secs in (("lwdsl", ours, ours_s), (f"Torch-Pruning {tp.__version__}", theirs, tp_s)):
        after = be.evaluate(handle, ctx)[0]
        t = time.perf_counter()
        handle = be.apply(handle, FinetuneSpec(epochs=args.epochs, lr=0.01, schedule="cosine"), [], ctx)
        tuned = be.evaluate(handle, ctx)[0]
        rows.append((name, be.stats(handle).params, after, tuned, secs, time.perf_counter() - t))
    print("\n| pruner | params | accuracy after removal | after finetune | time to prune | finetune s |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| baseline | {params0:,} | {100 * acc0:.2f}% | - | - | - |")
    for name, params, after, tuned, secs, ft in rows:
        print(f"| {name} | {params:,} | {100 * after:.2f}% | {100 * tuned:.2f}% | {secs:.2f} s | {ft:.0f} |")
    print(f"\nthe two pruned networks are {'identical (same shapes, same weights)' if same else 'different'}")


if __name__ == "__main__":
    main()
