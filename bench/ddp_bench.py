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
the issue's bound is 1e-4), accuracy (within 0.1 point); and whether the 2 workers ended bit for
bit where one process accumulating the 2 shards of every batch ends (the promise of
docs/semantics.md "Several workers"; bench/drift_bench.py follows the two apart step by step).

On a 2-core machine expect no speed-up from 2 processes: they share the same 2 cores, each
does half of every batch with one thread instead of the whole batch with two, and adds a
collective per step.

Then kill-and-resume (``--kill``, at least 2 epochs): ``lwdsl run --workers 2 --max-restarts 1``
(with ``--backend``) twice from the command line, once uninterrupted and once with the first
worker killed (SIGKILL) half an epoch after the point of epoch 1 is written; the launcher
(torch's elastic agent, or lwdsl's own for tensorflow) restarts both workers, which resume from
that point. Prints the two wall times and their difference (the time lost:
the half epoch trained again, the restart: new processes, imports, data, rendezvous), the
size of an epoch point, and whether the two runs' weights and masks agree (bit for bit
expected: the same 2 workers resume the same state).

    LWDSL_DATA=../shared/data python bench/ddp_bench.py [--backend tensorflow] [--epochs 1] [--smoke] [--kill | --kill-only]

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


def run_once(model: str, data: str, checkpoint: str, epochs: int, threads: int, out: str, backend: str = "torch",
             shards: int = 0) -> None:
    """One process's run (a rank under the launcher, or the only process); saves what it saw.
    With ``shards``: one process accumulating that many shards of every batch (what as many
    workers compute, bit for bit)."""
    import lwdsl

    spent: dict = {}
    _instrument(spent, backend)
    world = None
    if shards:
        from lwdsl.backend.ranks import OneProcess
        from lwdsl.runner.ranks import WorldEnv

        Backend = _backend_class(backend)
        Backend.join_ranks = lambda self, rank, size, timeout, join_s=None: OneProcess(size)
        world = WorldEnv(0, shards, 0, 1, "bench")
    result = lwdsl.run(RECIPE.format(epochs=epochs), model, data=data, checkpoint=checkpoint, quiet=True, latency=False,
                       train_threads=threads, backend=backend, world=world)
    rank = os.environ.get("RANK", "0") if not shards else "0"
    masks = spent.pop("masks", {})
    arrays = {**{f"w:{k}": v for k, v in result.backend.state(result.model).items()}, **{f"m:{k}": v for k, v in masks.items()}}
    np.savez(Path(out) / f"rank{rank}.npz", **arrays)
    acc = result.report["summary"]["accuracy_after"] if result.report else None
    (Path(out) / f"rank{rank}.json").write_text(json.dumps({"spent": spent, "accuracy": acc}))


def _backend_class(backend: str):
    if backend == "tensorflow":
        from lwdsl.backends.tf_backend.backend import KerasBackend

        return KerasBackend
    from lwdsl.backends.torch_backend.backend import TorchBackend

    return TorchBackend


def _cli_run(args: list[str], cwd: Path, watch: Path, kill_after: float | None = None) -> tuple[float, dict]:
    """``lwdsl ARGS`` in ``cwd``: its wall time, and what was seen of the resume point ``watch``
    (when each epoch's point appeared, an epoch point's size); with ``kill_after``, the first
    worker is killed (SIGKILL) that many seconds after the point of epoch 1 appears."""
    import signal
    import subprocess

    env = dict(os.environ)
    env.pop("WORLD_SIZE", None)
    lwdsl_cli = str(Path(sys.executable).with_name("lwdsl"))
    seen: dict = {"epochs": {}, "point_bytes": 0, "killed": None, "lines": []}
    start = time.perf_counter()
    proc = subprocess.Popen([lwdsl_cli, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def read() -> None:  # each line of stderr with the time it came
        for line in proc.stderr:
            seen["lines"].append((time.perf_counter() - start, line.rstrip("\n")))

    import threading

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            training = json.loads((watch / "progress.json").read_text()).get("training") or {}
        except (OSError, ValueError):
            training = {}
        if training and training["epoch"] not in seen["epochs"]:
            seen["epochs"][training["epoch"]] = time.perf_counter() - start
            try:
                seen["point_bytes"] = (watch / training["file"]).stat().st_size
            except OSError:
                pass
        first = seen["epochs"].get(1)
        if kill_after is not None and seen["killed"] is None and first is not None and time.perf_counter() - start >= first + kill_after:
            workers = sorted(pid for pid in _children(proc.pid) if b"spawn_main" in _cmdline(pid))
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                seen["killed"] = time.perf_counter() - start
        time.sleep(0.05)
    wall = time.perf_counter() - start
    reader.join()
    err = "\n".join(line for _, line in seen["lines"])
    if proc.returncode:
        sys.exit(f"lwdsl {' '.join(args)} failed ({proc.returncode}):\n{err[-3000:]}")
    seen["stderr"] = err
    return wall, seen


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


def kill_and_resume(model: str, data: str, checkpoint: str, epochs: int, tmp: Path, backend: str = "torch") -> None:
    """The kill-and-resume measurement (module docstring)."""
    from lwdsl.backend.weights import load_weights

    recipe = tmp / "kill.lw"
    recipe.write_text(RECIPE.format(epochs=epochs).replace(" | ", "\n") + "\n")
    common = ["run", str(recipe), "--backend", backend, "--model", model, "--data", data, "--checkpoint", checkpoint,
              "--workers", "2", "--max-restarts", "1", "--quiet"]
    whole_s, whole = _cli_run([*common, "--out", "whole"], tmp, tmp / "whole.resume")
    e1, e2 = whole["epochs"].get(1), whole["epochs"].get(2)
    epoch_s = (e2 - e1) if e1 is not None and e2 is not None else whole_s / (epochs + 1)
    cut_s, cut = _cli_run([*common, "--out", "cut"], tmp, tmp / "cut.resume", kill_after=epoch_s / 2)
    if cut["killed"] is None:
        sys.exit("kill-and-resume: the run ended before a worker could be killed (more epochs?)")
    said = [at for at, line in cut["lines"] if "restart 1 by the launcher" in line]
    restarted = (f"yes, the restarted rank 0 began {said[0] - cut['killed']:.1f} s after the kill (the failure seen, the "
                 "other worker stopped, new processes, imports, rendezvous)" if said else "no")
    launcher = "torch's elastic agent" if backend == "torch" else "lwdsl's TF_CONFIG launcher"
    a, _ = load_weights(tmp / "whole" / "model.lwz")
    b, _ = load_weights(tmp / "cut" / "model.lwz")
    same = all(np.array_equal(a[k], b[k]) for k in a)
    zeros = all(np.array_equal(a[k] == 0, b[k] == 0) for k in a)
    rel = max(float(np.linalg.norm(a[k].astype(np.float64) - b[k]) / (np.linalg.norm(a[k].astype(np.float64)) or 1.0)) for k in a)
    print(f"kill-and-resume (--workers 2 --max-restarts 1, {epochs} epochs, an epoch about {epoch_s:.1f} s): uninterrupted "
          f"{whole_s:.1f} s; a worker killed (SIGKILL) {cut['killed']:.1f} s in, half an epoch after the point of epoch 1: "
          f"{cut_s:.1f} s; restarted by {launcher}: {restarted}; time lost (the difference of the two walls: noisy on a shared "
          f"machine) {cut_s - whole_s:.1f} s, of which about {epoch_s / 2:.1f} s of training done again; an epoch point is "
          f"{cut['point_bytes'] / 1e6:.2f} MB; weights bit-identical: {same}, masks (zeros) identical: {zeros}, "
          f"largest relative difference of a tensor {rel:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="lenet300 on synthetic data: checks the bench in a minute")
    ap.add_argument("--backend", choices=["torch", "tensorflow"], default="torch")
    ap.add_argument("--kill", action="store_true", help="also kill-and-resume through --max-restarts 1 (at least 2 epochs)")
    ap.add_argument("--kill-only", action="store_true", help="kill-and-resume alone (not the 1 against 2 workers comparison)")
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
        if args.kill_only:
            kill_and_resume(model, data, checkpoint, max(2, args.epochs), Path(tmp), args.backend)
            return
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
        # one process accumulating the 2 shards of every batch with a worker's threads: what 2 workers compute, bit for bit
        out = Path(tmp) / "accumulated"
        out.mkdir()
        failed = launch(1, run_once, (model, data, checkpoint, args.epochs, max(1, cpus // 2), str(out), args.backend, 2), 600)
        if failed:
            sys.exit(f"the accumulating process failed: exit code {failed}")
        accumulated = dict(np.load(out / "rank0.npz"))
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
        rel = {k: float(np.linalg.norm(accumulated[k].astype(np.float64) - two[k]) / (np.linalg.norm(two[k].astype(np.float64)) or 1.0))
               for k in two if k.startswith("w:")}
        same = all(np.array_equal(two[k], accumulated[k]) for k in two)
        print(f"2 workers against one process accumulating the 2 shards of every batch: weights and masks bit-identical: {same}"
              f"{'' if same else f' (largest relative difference {max(rel.values()):.2e})'}")
        if args.kill:
            kill_and_resume(model, data, checkpoint, max(2, args.epochs), Path(tmp), args.backend)


if __name__ == "__main__":
    main()
