"""Structured removal by dependency group, beside Torch-Pruning: ResNet-18 and MobileNetV2.

``prune l2 50% structured=filters remove=true on conv`` on torchvision ResNet-18 and
MobileNetV2 (10 classes, synthetic 3x224x224), by lwdsl's torch backend, by Torch-Pruning's
``MetaPruner`` with the same importance (the group's filters' L2 norm: the sum over the
group's conv/linear output-channel slices of ``|w|^2``, no normalisation, BatchNorm and
consumers not scored; the classifier ignored; 50% of every group) and, for MobileNetV2, by
lwdsl's tensorflow backend on ``keras:MobileNetV2`` (the same network, same parameter count).
Figures: parameters, multiply-accumulates of one image, latency (median forward time) at
batch 1 and 32, and the time to prune (graph tracing included). Torch-Pruning is a bench
extra: ``pip install 'lwdsl[bench]'``.

    python bench/groups_bench.py [--threads 2] [--size 224] [--no-tf]
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

from lwdsl.backend import Dataset, StepContext, get_backend
from lwdsl.language.specs import PruneSpec

SPEC = PruneSpec(method="l2", amount=0.5, structured="filters", remove=True)
BATCHES = (1, 32)


def cpu_flags() -> str:
    import torch

    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    except OSError:
        model = platform.processor()
    shown = sorted(f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c", "sse4_2"))
    return f"{model}; torch CPU capability {torch.backends.cpu.get_cpu_capability()}; flags {' '.join(shown)}"


def _ctx() -> StepContext:
    return StepContext(data=Dataset("none", *([None] * 4), 10), seed=0, index=0, progress=None)


def torch_macs(module, shape) -> int:
    import torch
    from torch import nn

    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    module.eval()
    with torch.no_grad():
        module(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total


def keras_macs(model) -> int:
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        out = layer.output_shape
        if kind == "Conv2D":
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * out[3] * kh * kw * int(layer.input_shape[-1]) // layer.groups
        elif kind == "DepthwiseConv2D":
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * out[3] * kh * kw
        elif kind == "Dense":
            total += int(layer.input_shape[-1]) * out[-1]
    return total


def _row(label: str, params: int, macs: int, lat: list[float], secs: float | None, base: tuple | None) -> str:
    text = f"  {label:<22} {params / 1e6:7.3f}M params {macs / 1e6:9.1f}M MACs"
    for b, ms in zip(BATCHES, lat):
        speed = f" ({base[2][BATCHES.index(b)] / ms:.2f}x)" if base else ""
        text += f"  b{b} {ms:8.2f} ms{speed}"
    if secs is not None:
        text += f"  pruned in {secs:.2f} s"
    return text


def _latency(be, handle, shape, threads) -> list[float]:
    return [be.latency_ms(handle, b, shape, threads) for b in BATCHES]


def run_torch(ref: str, shape: tuple[int, ...], threads: int) -> None:
    import torch
    from torch import nn

    be = get_backend("torch")
    torch.manual_seed(0)
    handle = be.load_model(ref, shape, 10)
    original = copy.deepcopy(handle.module)
    base = (be.stats(handle).params, torch_macs(handle.module, shape), _latency(be, handle, shape, threads))
    print(f"{ref} on {'x'.join(map(str, shape))}, 50% of every group, {threads} threads")
    print(_row("baseline", *base, None, None))

    convs = [l.name for l in be.layers(handle) if l.kind == "conv"]
    t = time.perf_counter()
    be.apply(handle, SPEC, convs, _ctx())
    secs = time.perf_counter() - t
    print(_row("lwdsl torch", be.stats(handle).params, torch_macs(handle.module, shape), _latency(be, handle, shape, threads), secs, base))

    try:
        import torch_pruning as tp
    except ImportError:
        print("  torch-pruning           not installed (pip install 'lwdsl[bench]')")
        return
    model = copy.deepcopy(original)
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    t = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, *shape), importance=FilterNorm(), pruning_ratio=0.5, ignored_layers=fc)
    pruner.step()
    secs = time.perf_counter() - t
    tp_handle = be.load_model(model, shape, 10)
    print(_row(f"torch-pruning {tp.__version__}", be.stats(tp_handle).params, torch_macs(model, shape), _latency(be, tp_handle, shape, threads), secs, base))
    same = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.out_channels == handle.module.get_submodule(n).out_channels]
    convs_all = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    print(f"  same conv widths as lwdsl: {len(same)}/{len(convs_all)} layers")
    kept_same = sum(
        bool(torch.equal(model.get_submodule(n).weight, handle.module.get_submodule(n).weight)) for n in same
    )
    print(f"  identical weights after pruning (same channels kept, in- and out-side): {kept_same}/{len(same)} convs")


def run_tf(ref: str, shape: tuple[int, ...], threads: int) -> None:
    be = get_backend("tensorflow")
    handle = be.load_model(ref, shape, 10)
    base = (be.stats(handle).params, keras_macs(handle.model), _latency(be, handle, shape, threads))
    print(f"{ref} (tensorflow) on {'x'.join(map(str, shape))}, 50% of every group, {threads} threads")
    print(_row("baseline", *base, None, None))
    convs = [l.name for l in be.layers(handle) if l.kind == "conv"]
    t = time.perf_counter()
    small = be.apply(handle, SPEC, convs, _ctx())
    secs = time.perf_counter() - t
    print(_row("lwdsl tensorflow", be.stats(small).params, keras_macs(small.model), _latency(be, small, shape, threads), secs, base))


def _filter_norm():
    import torch_pruning as tp
    from torch import nn

    out_fns = (tp.function.prune_conv_out_channels, tp.function.prune_linear_out_channels)

    class FilterNorm(tp.importance.GroupMagnitudeImportance):
        """lwdsl's group score for Torch-Pruning: per channel, the sum over the group's plain
        conv/linear output-channel slices of ``|w|^2`` (the square of lwdsl's L2 group score:
        the same order)."""

        def __init__(self) -> None:
            super().__init__(p=2, group_reduction="sum", normalizer=None)

        def __call__(self, group):
            imps, idxs = [], []
            for i, (dep, ix) in enumerate(group):
                layer = dep.layer
                if dep.pruning_fn not in out_fns or not isinstance(layer, (nn.Conv2d, nn.Linear)):
                    continue
                if isinstance(layer, nn.Conv2d) and layer.groups != 1:
                    continue  # a depthwise conv: lwdsl does not score it either
                imps.append(layer.weight.data[ix].flatten(1).double().pow(2).sum(1))
                idxs.append(group[i].root_idxs)
            return self._reduce(imps, idxs)

    return FilterNorm


def main() -> None:
    global FilterNorm
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--no-tf", action="store_true", help="skip the tensorflow backend")
    args = parser.parse_args()
    try:
        FilterNorm = _filter_norm()
    except ImportError:
        pass
    print(cpu_flags())
    shape = (3, args.size, args.size)
    run_torch("torchvision:resnet18", shape, args.threads)
    run_torch("torchvision:mobilenet_v2", shape, args.threads)
    if not args.no_tf:
        run_tf("keras:MobileNetV2", shape, args.threads)


if __name__ == "__main__":
    main()
