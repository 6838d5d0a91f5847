"""lwdsl's training loop against a plain hand-written one, side by side, on both backends.

The same fine-tune step as the main job's (LeNet-5, SGD lr 0.01 momentum 0.9, batch 64, one
epoch) on the same images in the same order (``lwdsl.semantics.order.epoch_order``), with the
same thread count, timed interleaved (plain, lwdsl, plain, lwdsl, ...) so a change in the
machine's load hits both. The plain loops are what a user writes from each framework's docs:

- torch: ``model.train()``; per batch ``zero_grad``, ``cross_entropy``, ``backward``, ``step``;
- tensorflow: a ``tf.function`` step with ``tf.GradientTape`` and ``keras.optimizers.SGD`` (Keras 3).

lwdsl's loop does more per step (masks re-applied, pruned gradients zeroed, the loss checked
for NaN every step, one progress bar per epoch), which is what is measured. Prints seconds per
epoch and the ratio lwdsl / plain (median of the rounds).

    LWDSL_DATA=../shared/data python bench/train_loop_bench.py [--backends torch,tensorflow]
        [--images 60000] [--rounds 3] [--threads N] [--omp-default]

``--omp-default`` leaves OpenMP's wait policy alone (torch's threads spin between parallel
regions), to see what lwdsl's ``OMP_WAIT_POLICY=PASSIVE`` default changes on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


import numpy as np  # noqa: E402

from lwdsl.backend import StepContext, get_backend  # noqa: E402
from lwdsl.backend.threads import quiet_openmp, usable_cpus  # noqa: E402
from lwdsl.data.builtin import load_data  # noqa: E402
from lwdsl.data.dataset import Dataset  # noqa: E402
from lwdsl.runner.progress import NullBar  # noqa: E402
from lwdsl.semantics.order import batches  # noqa: E402
from lwdsl.language.specs import FinetuneSpec  # noqa: E402

SPEC = FinetuneSpec(epochs=1, lr=0.01, momentum=0.9, batch=64)


def cpu_line() -> str:
    model, flags = "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "?":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    vec = sorted(f for f in flags if f.startswith(("avx512_vnni", "avx512_bf16", "amx", "avx2", "avx512f")))
    return f"CPU: {model}; {os.cpu_count()} logical cores, {usable_cpus()} usable; flags: {' '.join(vec) or 'unknown'}; load {os.getloadavg()[0]:.1f}"


def plain_torch(data: Dataset, seed: int) -> float:
    import torch
    import torch.nn.functional as F

    from lwdsl.backends.torch_backend.models import build_model

    torch.manual_seed(seed)
    model = build_model("lenet5", data.input_shape, data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=SPEC.lr, momentum=SPEC.momentum)
    x, y = torch.as_tensor(data.train_x), torch.as_tensor(data.train_y)
    start = time.perf_counter()
    model.train()
    for idx in batches(len(x), SPEC.batch, seed, 0):
        idx_t = torch.from_numpy(idx)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[idx_t]), y[idx_t])
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def plain_tf(data: Dataset, seed: int) -> float:
    from lwdsl.backends.tf_backend._tf import keras, tf
    from lwdsl.backends.tf_backend.models import build_model

    model = build_model("lenet5", data.input_shape, data.num_classes)
    opt = keras.optimizers.SGD(learning_rate=SPEC.lr, momentum=SPEC.momentum)
    x, y = np.ascontiguousarray(np.moveaxis(data.train_x, 1, -1)), data.train_y.astype(np.int64)

    @tf.function(reduce_retracing=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=model(xb, training=True)))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    start = time.perf_counter()
    for idx in batches(len(x), SPEC.batch, seed, 0):
        step(tf.constant(x[idx]), tf.constant(y[idx]))
    return time.perf_counter() - start


def lwdsl_loop(backend: str, data: Dataset, seed: int) -> float:
    be = get_backend(backend)
    be.set_seed(seed)
    handle = be.load_model("lenet5", data.input_shape, data.num_classes)
    ctx = StepContext(data=data, seed=seed, index=0, progress=lambda total, desc: NullBar())
    start = time.perf_counter()
    be.apply(handle, SPEC, [], ctx)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="torch,tensorflow")
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=usable_cpus())
    parser.add_argument("--omp-default", action="store_true", help="leave OpenMP's wait policy at its default (threads spin)")
    args = parser.parse_args()
    waiting = "OpenMP default (not set)" if args.omp_default else quiet_openmp()  # before torch loads OpenMP
    full = load_data("mnist")
    data = Dataset("mnist", full.train_x[: args.images], full.train_y[: args.images], full.test_x[:100], full.test_y[:100], 10)
    print(cpu_line())
    print(f"LeNet-5, {len(data.train_x)} MNIST images, 1 epoch, SGD lr {SPEC.lr} momentum {SPEC.momentum}, batch {SPEC.batch}, "
          f"{args.threads} thread(s), {args.rounds} interleaved rounds; idle threads: {waiting}")
    for backend in args.backends.split(","):
        get_backend(backend).set_threads(args.threads)
        plain = plain_torch if backend == "torch" else plain_tf
        plain(data, 0), lwdsl_loop(backend, data, 0)  # warm-up: imports, tracing
        p, lw = [], []
        for r in range(args.rounds):
            p.append(plain(data, r))
            lw.append(lwdsl_loop(backend, data, r))
        ratio = statistics.median(b / a for a, b in zip(p, lw))
        print(f"{backend:10s} plain {statistics.median(p):7.2f} s  lwdsl {statistics.median(lw):7.2f} s  "
              f"lwdsl/plain {ratio:.3f} (rounds: {', '.join(f'{b / a:.2f}' for a, b in zip(p, lw))})")


if __name__ == "__main__":
    main()
