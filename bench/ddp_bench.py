"""``--workers 1`` against ``--workers 2`` on the main job's fine-tune (torch, CPU, gloo; or
``--backend tensorflow``: TensorFlow's collective ops between workers with a ``TF_CONFIG`` each).

The main job's fine-tune (``recipes/lenet5-mnist.lw``: LeNet-5 on MNIST, 92% of the linear
weights pruned, ``finetune lr=0.01 schedule=cosine``, batch 64), from the main job's cached
baseline (trained once, 3 epochs), run twice: as one process (``--workers 1``, every usable
CPU for training) and as 2 ranks through torch's elastic launcher (what ``lwdsl run --workers
2`` starts; each rank gets CPUs / 2 training threads). With ``--backend tensorflow`` the 2 ranks
are the processes ``lwdsl run --backend tensorflow --workers 2`` starts (each with its own
``TF_CONFIG`` on localhost, :mod:`lwdsl.backend.tfconfig`); their wall time includes importing
TensorFlow in each and bringing its cluster up. The structured removal of the main
recipe's first step is left out: the question is the cost of the ranks, not the recipe.

Prints, for one worker (with every CPU, then with one thread: each of the 2 workers has one)
and for 2 workers: the wall time of the whole run (processes, imports, data, the
fine-tune, rank 0's measurements) and of the fine-tune alone (the core's ``fit``, per rank);
for 2 workers, the time each rank spends inside collectives (the gradient all-reduce, the loss
terms, and the digest checks apart), in total and per optimizer step, as a share of its
fine-tune. The time inside a collective is the transfer plus the wait for the other rank.
Then what the two runs agree on: masks (bit for bit expected), weights (relative difference;
the issue's bound is 1e-4), accuracy (within 0.1 point).

On a 2-core machine expect no speed-up from 2 processes: they share the same 2 cores, each
does half of every batch with one thread instead of the whole batch with two, and adds a
collective per step.

    LWDSL_DATA=../shared/data python bench/ddp_bench.py [--backend tensorflow] [--epochs 1] [--smoke]

``--smoke`` checks the bench in a minute (lenet300 on 2048 synthetic 1x12x12 images).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RECIPE = "prune l1 92% on linear | finetune epochs={epochs} lr=0.01 schedule=cosine"


def _instrument(spent: dict, backend: str) -> None:
    """Time the collectives and the core's fit inside this process (the bench's own patches)."""
    if backend == "tensorflow":
        from lwdsl.backends.tf_backend import ranks, train
        from lwdsl.backends.tf_backend.backend import KerasBackend as Backend
        Ranks = ranks.TFRanks
    else:
        from lwdsl.backends.torch_backend import ranks, train
        from lwdsl.backends.torch_backend.backend import TorchBackend as Backend
        Ranks = ranks.TorchRanks

    def timed(key: str, real):
        def call(*a, **k):
            start = time.perf_counter()
            try:
                return real(*a, **k)
            finally:
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - start
                spent[key + "_n"] = spent.get(key + "_n", 0) + 1
        return call

    for name, key in [("all_sum_native", "gradients"), ("all_sum", "loss_terms"), ("all_max", "digests"),
                      ("broadcast_native", "buffers")]:
        setattr(Ranks, name, timed(key, getattr(Ranks, name)))
    train.core_fit = timed("fit", train.core_fit)
    real_finalize = Backend.finalize

    def finalize(self, model):  # the masks, before the backend drops them
        spent["masks"] = self.masks_of(model)
        return real_finalize(self, model)

    Backend.finalize = finalize


def run_once(model: str, data: str, checkpoint: str, epochs: int, threads: int, out: str, backend: str = "torch") -> None:
    """One process's run (a rank under the launcher, or the only process); saves what it saw."""
    import lwdsl

    spent: dict = {}
    _instrument(spent, backend)
    result = lwdsl.run(RECIPE.format(epochs=epochs), model, data=data, checkpoint=checkpoint, quiet=True, latency=False,
                       train_threads=threads, backend=backend)
    rank = os.environ.get("RANK", "0")
    masks = spent.pop("masks", {})
    arrays = {**{f"w:{k}": v for k, v in result.backend.state(result.model).items()}, **{f"m:{k}": v for k, v in masks.items()}}
    np.savez(Path(out) / f"rank{rank}.npz", **arrays)
    acc = result.report["summary"]["accuracy_after"] if result.report else None
    (Path(out) / f"rank{rank}.json").write_text(json.dumps({"spent": spent, "accuracy": acc}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="lenet300 on synthetic data: checks the bench in a minute")
    ap.add_argument("--backend", choices=["torch", "tensorflow"], default="torch")
    args = ap.parse_args()
    import lwdsl
    from lwdsl.language.plan import Recipe
    from lwdsl.backend.threads import usable_cpus
    from lwdsl.backend.weights import save_weights
    if args.backend == "tensorflow":
        from lwdsl.backend.tfconfig import launch_local as launch
    else:
        from lwdsl.backends.torch_backend.ranks import launch

    model, data = ("lenet300", "synthetic:1,12,12:4") if args.smoke else ("lenet5", "mnist")
    cpus = usable_cpus()
    print(f"{args.backend}; CPUs usable: {cpus}; load {os.getloadavg()[0]:.1f}; {model} on {data}; "
          f"recipe: {RECIPE.format(epochs=args.epochs)}")
    with tempfile.TemporaryDirectory(prefix="ddp-bench-") as tmp:
        base = lwdsl.run(Recipe(), model, data=data, baseline_epochs=1 if args.smoke else 3, quiet=True, latency=False,
                         backend=args.backend)
        checkpoint = str(Path(tmp) / "base.lwz")
        save_weights(Path(checkpoint), base.backend.state(base.model))
        results = {}
        # (workers, training threads a worker): what --workers 1 and 2 give by default, and one
        # worker with one thread (each of the 2 workers has one)
        # (TensorFlow fixes its thread pool once a process: there each run is a fresh process)
        fresh = args.backend == "tensorflow"
        for workers, threads in [(1, cpus), (1, 1), (2, max(1, cpus // 2))]:
            out = Path(tmp) / f"w{workers}t{threads}"
            out.mkdir()
            start = time.perf_counter()
            if workers == 1 and not fresh:  # the same function the ranks run, in this process
                run_once(model, data, checkpoint, args.epochs, threads, str(out), args.backend)
            else:
                failed = launch(workers, run_once, (model, data, checkpoint, args.epochs, threads, str(out), args.backend), 600)
                if failed:
                    sys.exit(f"the {workers} workers failed: exit codes {failed}")
            wall = time.perf_counter() - start
            ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(workers)]
            results[workers, threads] = (wall, ranks, dict(np.load(out / "rank0.npz")))
        steps = None
        for (workers, threads), (wall, ranks, _) in results.items():
            fits = [r["spent"]["fit"] for r in ranks]
            how = "in this process" if workers == 1 and not fresh else "spawned, imports included"
            print(f"--workers {workers}, {threads} training thread(s) a worker: run {wall:.1f} s wall ({how}); "
                  f"fine-tune {', '.join(f'{f:.1f}' for f in fits)} s (per rank)")
            for r, info in enumerate(ranks if workers > 1 else []):
                s = info["spent"]
                steps = s.get("gradients_n", 0)
                comm = s.get("gradients", 0.0) + s.get("loss_terms", 0.0) + s.get("buffers", 0.0)
                print(f"  rank {r}: {steps} optimizer steps; in collectives {comm:.2f} s = {100 * comm / s['fit']:.1f}% of its "
                      f"fine-tune ({1e3 * comm / max(steps, 1):.2f} ms a step: gradients {1e3 * s.get('gradients', 0) / max(steps, 1):.2f}, "
                      f"loss terms {1e3 * s.get('loss_terms', 0) / max(steps, 1):.2f}); digest checks {s.get('digests_n', 0)} x, "
                      f"{1e3 * s.get('digests', 0.0):.1f} ms in all")
            if workers > 1:
                print("  (time inside a collective includes waiting for the other rank: rank 1's first gradient all-reduce "
                      "of a step and its digest checks wait while rank 0 alone measures the model after each step)")
        two, acc2 = results[2, max(1, cpus // 2)][2], results[2, max(1, cpus // 2)][1][0]["accuracy"]
        for threads in sorted({cpus, 1}, reverse=True):
            one, acc1 = results[1, threads][2], results[1, threads][1][0]["accuracy"]
            masks = [k for k in one if k.startswith("m:")]
            same_masks = all(np.array_equal(one[k], two[k]) for k in masks)
            rel = {k: float(np.linalg.norm(one[k].astype(np.float64) - two[k]) / (np.linalg.norm(one[k].astype(np.float64)) or 1.0))
                   for k in one if k.startswith("w:")}
            worst = max(rel, key=rel.get)
            print(f"1 worker with {threads} thread(s) against 2 workers: masks bit-identical: {same_masks} ({len(masks)} layers); "
                  f"weights: largest relative difference of a tensor {rel[worst]:.2e} ({worst[2:]}); accuracy {100 * acc1:.2f}% "
                  f"(1 worker) vs {100 * acc2:.2f}% (2 workers), {100 * abs(acc1 - acc2):.2f} points apart")


if __name__ == "__main__":
    main()
