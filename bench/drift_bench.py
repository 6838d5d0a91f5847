"""Where 2 workers and 1 worker part ways on the main job's fine-tune, step by step.

2 workers compute, bit for bit, what one process accumulating the 2 shards of every batch
computes (tests/distributed, tests/runner/test_ranks.py); so this bench runs, in one process
with one training thread (what each of 2 workers has on 2 cores), from one checkpoint:

- A: one process with the whole batch (``--workers 1``);
- B: one process accumulating the 2 shards of every batch (``--workers 2``'s numbers);
- C: A again from the checkpoint moved by one float32 ulp (every weight one step towards +inf,
  ``numpy.nextafter``): a perturbation as small as one step's rounding, with no shard in it,
  to tell how much the fine-tune itself grows any rounding difference.

and prints, at steps 1..40 and then every ``--every`` steps to the end of the epoch:

- ``local``: one step's own rounding. At that step of A, from A's exact state (weights and
  momentum), the update is taken once with the whole batch and once as the 2 shards'
  accumulated gradients; the largest relative difference of a tensor between the two results,
  and the same over the update itself (``|W_sharded - W_whole| / |W_whole - W_before|``);
- ``B-A``, ``C-A``: the largest relative difference of a tensor (``|x - y| / |y|``, over the
  tensor) between the trajectories at that step, and which tensor.

``--switches LO:HI`` (torch, LeNet-5) runs A and B to step HI only, prints B-A after every
step from LO, and at the step of the largest rise (and the steps beside it) compares the two
runs' own forward passes (hooks on conv1 and conv2: A's whole batch, B's 2 shards): how far
apart the outputs are and in how many 2x2 max-pooling windows the maximum is another input.

    LWDSL_DATA=../shared/data python bench/drift_bench.py [--backend tensorflow|torch]
        [--checkpoint BASE.lwz] [--every 50] [--smoke] [--switches LO:HI]

Without ``--checkpoint`` the baseline is the backend's own (3 epochs, cached, as
bench/ddp_bench.py); give the same ``.lwz`` to both backends to compare them on one trajectory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

RECIPE = "prune l1 92% on linear | finetune epochs={epochs} lr=0.01 schedule=cosine"


def _classes(backend: str):
    if backend == "tensorflow":
        from lwdsl.backends.tf_backend.backend import KerasBackend as Backend
        from lwdsl.backends.tf_backend.train import KerasTrainer as Trainer
    else:
        from lwdsl.backends.torch_backend.backend import TorchBackend as Backend
        from lwdsl.backends.torch_backend.train import TorchTrainer as Trainer
    return Backend, Trainer


def _weights(state: dict) -> dict:
    """The model's parameters in a trainer's checkpoint (tensorflow ``var:i``, torch ``param:i``)."""
    return {k: np.array(v, dtype=np.float64) for k, v in state.items() if k.startswith(("var:", "param:"))}


def _rel(a: dict, b: dict) -> tuple[float, str]:
    """The largest ``|a - b| / |b|`` over the tensors, and which."""
    worst, name = 0.0, ""
    for k in b:
        n = float(np.linalg.norm(b[k]))
        r = float(np.linalg.norm(a[k] - b[k])) / n if n else 0.0
        if r >= worst:
            worst, name = r, k
    return worst, name


def _run(backend: str, model: str, data: str, checkpoint: str, epochs: int, record: set, *, shards: bool,
         local: bool, keep: dict, compare: dict | None, names: dict) -> dict:
    """One fine-tune; at each step of ``record`` the weights kept (``keep``) or compared with
    ``compare``'s; with ``local`` the one-step rounding probe (module docstring)."""
    import lwdsl
    from lwdsl.backend.ranks import OneProcess
    from lwdsl.runner.ranks import WorldEnv
    from lwdsl.semantics.shards import shard_weight

    Backend, Trainer = _classes(backend)
    out: dict = {}
    count = {"t": 0}
    real_step, real_update = Trainer.step, Trainer.update

    def seen(self) -> None:
        t = count["t"]
        if not names:
            names.update(_names(self))
        w = _weights(self.checkpoint())
        if compare is None:
            if t in record:
                keep[t] = w
            keep["last"] = w
        else:
            if t in record:
                out[t] = _rel(w, compare[t])
            out["last"] = _rel(w, compare["last"])

    def step(self, images, labels, idx, lr):
        count["t"] += 1
        t = count["t"]
        if local and t in record:
            before = self.checkpoint()
            if hasattr(self, "optimizer"):  # torch keeps the last step's gradients until the next step clears them
                self.optimizer.zero_grad(set_to_none=True)
            for pos in np.array_split(np.arange(len(idx)), 2):
                self.backward(images[pos], labels[pos], idx[pos], shard_weight(len(pos), len(idx)), 0)
            real_update(self, lr)
            sharded = _weights(self.checkpoint())
            self.resume(before)
        result = real_step(self, images, labels, idx, lr)
        if local and t in record:
            whole, start = _weights(self.checkpoint()), _weights(before)
            step_size = {k: whole[k] - start[k] for k in whole}
            diff = {k: sharded[k] - whole[k] for k in whole}
            out[t] = (_rel(sharded, whole),
                      max(float(np.linalg.norm(diff[k])) / (float(np.linalg.norm(step_size[k])) or 1.0) for k in whole))
        seen(self)
        return result

    def update(self, lr):
        real_update(self, lr)
        count["t"] += 1
        seen(self)

    Trainer.step, Trainer.update = step, update
    real_join = Backend.join_ranks
    if shards:
        Backend.join_ranks = lambda self, rank, size, timeout, join_s=None: OneProcess(size)
    try:
        result = lwdsl.run(RECIPE.format(epochs=epochs), model, data=data, checkpoint=checkpoint, quiet=True, latency=False,
                           train_threads=1, backend=backend, world=WorldEnv(0, 2, 0, 1, "bench") if shards else None)
    finally:
        Trainer.step, Trainer.update, Backend.join_ranks = real_step, real_update, real_join
    out["accuracy"] = result.report["summary"]["accuracy_after"]
    out["steps"] = count["t"]
    return out


class _Enough(Exception):
    """Stops a run once the steps of interest are done."""


def switches(model: str, data: str, checkpoint: str, lo: int, hi: int) -> None:
    """torch: A and B from steps ``lo`` to ``hi``; the step where B-A jumps, and at it what the
    two states do differently on that step's batch: which input of each 2x2 max-pooling window
    is the maximum (pool1 after conv1, pool2 after conv2), which fc1 units are above 0 (ReLU)."""
    import lwdsl
    import torch
    import torch.nn.functional as F

    from lwdsl.backend.ranks import OneProcess
    from lwdsl.backends.torch_backend.backend import TorchBackend
    from lwdsl.backends.torch_backend.train import TorchTrainer
    from lwdsl.runner.ranks import WorldEnv

    real_step, real_update, real_join = TorchTrainer.step, TorchTrainer.update, TorchBackend.join_ranks
    real_backward = TorchTrainer.backward

    def tap(net, got: dict, t: int) -> list:
        """Hooks keeping what conv1 and conv2 output in the run's own forward passes of step ``t``
        (the shards' passes one after the other)."""
        outs = got.setdefault("outputs", {}).setdefault(t, {})
        return [getattr(net, name).register_forward_hook(
            lambda m, i, o, name=name: outs.setdefault(name, []).append(o.detach().clone())) for name in ("conv1", "conv2")]

    def params(trainer) -> dict:
        return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    def run(shards: bool) -> dict:
        got: dict = {"before": {}, "after": {}, "batch": {}}
        count = {"t": 0}

        def step(self, images, labels, idx, lr):
            count["t"] += 1
            t = count["t"]
            if t > hi:
                raise _Enough
            hooks = []
            if lo <= t <= hi:
                got["before"][t], got["batch"][t], got.setdefault("labels", {})[t] = params(self), images.copy(), labels.copy()
                got["model"] = self.model
                hooks = tap(self.model, got, t)
            out = real_step(self, images, labels, idx, lr)
            for h in hooks:
                h.remove()
            if lo <= t <= hi:
                got["after"][t] = params(self)
                got.setdefault("grad", {})[t] = {n: p.grad.detach().clone() for n, p in self.model.named_parameters()
                                                 if p.grad is not None}
            return out

        def backward(self, images, labels, idx, weight, seed):
            t = count["t"] + 1
            hooks = tap(self.model, got, t) if lo <= t <= hi else []
            try:
                return real_backward(self, images, labels, idx, weight, seed)
            finally:
                for h in hooks:
                    h.remove()

        def update(self, lr):
            count["t"] += 1
            t = count["t"]
            if t > hi:
                raise _Enough
            if lo <= t <= hi:
                got["before"][t] = params(self)
                got.setdefault("grad", {})[t] = {n: p.grad.detach().clone() for n, p in self.model.named_parameters()
                                                 if p.grad is not None}
            real_update(self, lr)
            if lo <= t <= hi:
                got["after"][t] = params(self)

        TorchTrainer.step, TorchTrainer.update, TorchTrainer.backward = step, update, backward
        if shards:
            TorchBackend.join_ranks = lambda self, rank, size, timeout, join_s=None: OneProcess(size)
        try:
            lwdsl.run(RECIPE.format(epochs=1), model, data=data, checkpoint=checkpoint, quiet=True, latency=False, train_threads=1,
                      backend="torch", world=WorldEnv(0, 2, 0, 1, "bench") if shards else None)
        except _Enough:  # the steps after HI are not needed
            pass
        finally:
            TorchTrainer.step, TorchTrainer.update, TorchBackend.join_ranks = real_step, real_update, real_join
            TorchTrainer.backward = real_backward
        return got

    a, b = run(False), run(True)

    def gap(x: dict, y: dict) -> float:
        return max(float((x[k].double() - y[k].double()).norm() / (y[k].double().norm() or 1.0)) for k in y)

    gaps = {t: gap(b["after"][t], a["after"][t]) for t in range(lo, hi + 1)}
    jumps = sorted(range(lo + 1, hi + 1), key=lambda t: gaps[t] / gaps[t - 1], reverse=True)[:1]  # the largest rise in one step
    print(f"B-A after each step {lo}..{hi}: " + ", ".join(f"{t}: {g:.2e}" for t, g in gaps.items()))
    net = a["model"]

    def taps(state: dict, images: np.ndarray) -> dict:
        net.load_state_dict({**net.state_dict(), **state})
        x = torch.from_numpy(images)
        with torch.no_grad():
            c1 = net.conv1(x)
            p1, i1 = F.max_pool2d(c1, 2, return_indices=True)
            c2 = net.conv2(p1)
            p2, i2 = F.max_pool2d(c2, 2, return_indices=True)
            h = net.fc1(torch.flatten(p2, 1))
        return {"pool1": i1, "pool2": i2, "fc1>0": h > 0, "c1": c1, "c2": c2}

    torch.set_num_threads(1)  # as in the runs: a convolution's rounding depends on its threads and its batch

    def taps_shards(state: dict, images: np.ndarray) -> dict:  # the forward pass as 2 shards of the batch compute it
        parts = [taps(state, images[pos]) for pos in np.array_split(np.arange(len(images)), 2)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    for t in (jumps[:1] + [jumps[0] - 1, jumps[0] + 1] if jumps else []):
        ta, tb = taps(a["before"][t], a["batch"][t]), taps_shards(a["before"][t], a["batch"][t])
        said = []
        for key in ("pool1", "pool2", "fc1>0"):
            differ = (ta[key] != tb[key])
            said.append(f"{key}: {int(differ.sum())} of {differ.numel()} differ, in {int(differ.flatten(1).any(1).sum())} "
                        f"of {len(differ)} images")
        real = []
        for name in ("conv1", "conv2"):
            oa, ob = torch.cat(a["outputs"][t][name]), torch.cat(b["outputs"][t][name])
            ia, ib = F.max_pool2d(oa, 2, return_indices=True)[1], F.max_pool2d(ob, 2, return_indices=True)[1]
            differ = ia != ib
            gap_out = float((oa - ob).abs().max() / oa.abs().max())
            real.append(f"{name}: outputs {gap_out:.1e} apart (of the largest), the maximum of {int(differ.sum())} of "
                        f"{differ.numel()} pooling windows differs, in {int(differ.flatten(1).any(1).sum())} images")
        print(f"step {t}: in the two runs' own forward passes (A's whole batch, B's 2 shards): " + "; ".join(real))
        print(f"step {t}{' (the largest rise)' if t == jumps[0] else ''}: B-A before it {gap(b['before'][t], a['before'][t]):.2e}; "
              "from A's weights, the forward pass of the whole batch against the 2 shards': " + "; ".join(said))

        def grads(state: dict, parts: int) -> dict:
            net.load_state_dict({**net.state_dict(), **state})
            net.zero_grad(set_to_none=True)
            x, y = torch.from_numpy(a["batch"][t]), torch.from_numpy(a["labels"][t])
            for pos in np.array_split(np.arange(len(y)), parts):
                (F.cross_entropy(net(x[pos]), y[pos]) * (len(pos) / len(y))).backward()
            return {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}

        g_whole, g_shards, g_other = grads(a["before"][t], 1), grads(a["before"][t], 2), grads(b["before"][t], 1)
        convs = [k for k in g_whole if k.startswith("conv")]  # the fc weights' gradients are masked in the runs
        print(f"  the gradients the two runs stepped with at step {t}, convolutions: "
              f"{gap({k: b['grad'][t][k] for k in convs}, {k: a['grad'][t][k] for k in convs}):.2e}; "
              f"A's against its recomputation {gap({k: a['grad'][t][k] for k in convs}, {k: g_whole[k] for k in convs}):.2e}")
        worst = max(g_whole, key=lambda k: float((b["after"][t][k].double() - a["after"][t][k].double()).norm()
                                                 / (a["after"][t][k].double().norm() or 1.0)))
        with torch.no_grad():
            net.load_state_dict({**net.state_dict(), **a["before"][t]})
            loss = float(F.cross_entropy(net(torch.from_numpy(a["batch"][t])), torch.from_numpy(a["labels"][t])))
        print(f"  gradients at step {t}: from A's weights, 2 shards against the whole batch {gap(g_shards, g_whole):.2e}; "
              f"the whole batch from B's weights against from A's {gap(g_other, g_whole):.2e} (largest relative difference of a tensor); "
              f"the batch's loss {loss:.4f}; {worst}: |gradient| / |weights| {float(g_whole[worst].norm() / a['before'][t][worst].norm()):.2e}")


def _names(trainer) -> dict:
    """Checkpoint key -> the variable's own name."""
    if hasattr(trainer, "params"):  # torch
        ids = {id(p): n for n, p in trainer.model.named_parameters()}
        return {f"param:{i}": ids.get(id(p), str(i)) for i, p in enumerate(trainer.params)}
    return {f"var:{i}": getattr(v, "path", v.name) for i, v in enumerate(trainer.handle.model.variables)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=["torch", "tensorflow"], default="tensorflow")
    ap.add_argument("--checkpoint", help="a .lwz of the model (default: the backend's own baseline, 3 epochs, cached)")
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="lenet300 on synthetic data: checks the bench in a minute")
    ap.add_argument("--switches", metavar="LO:HI", help="torch, lenet5: find the step of LO..HI where B-A jumps and what "
                    "switched there (max-pooling maxima, ReLU signs); needs --checkpoint")
    args = ap.parse_args()
    if args.switches:
        lo, hi = (int(v) for v in args.switches.split(":"))
        switches("lenet5", "mnist", args.checkpoint, lo, hi)
        return
    import lwdsl
    from lwdsl.backend.weights import load_weights, save_weights
    from lwdsl.language.plan import Recipe

    model, data = ("lenet300", "synthetic:1,12,12:4") if args.smoke else ("lenet5", "mnist")
    print(f"{args.backend}; load {os.getloadavg()[0]:.1f}; {model} on {data}; one training thread; recipe: "
          f"{RECIPE.format(epochs=args.epochs)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            base = lwdsl.run(Recipe(), model, data=data, baseline_epochs=1 if args.smoke else 3, quiet=True, latency=False,
                             backend=args.backend)
            checkpoint = str(Path(tmp) / "base.lwz")
            save_weights(Path(checkpoint), base.backend.state(base.model))
        state, meta = load_weights(Path(checkpoint))
        moved = str(Path(tmp) / "moved.lwz")
        save_weights(Path(moved), {k: np.nextafter(v, np.float32(np.inf)) if v.dtype == np.float32 else v
                                   for k, v in state.items()})
        record = set(range(1, 41)) | set(range(args.every, 100_000, args.every))
        names: dict = {}
        start = time.perf_counter()
        keep: dict = {}
        a = _run(args.backend, model, data, checkpoint, args.epochs, record, shards=False, local=True, keep=keep, compare=None,
                 names=names)
        record = {t for t in record if t <= a["steps"]}
        b = _run(args.backend, model, data, checkpoint, args.epochs, record, shards=True, local=False, keep={}, compare=keep,
                 names=names)
        c = _run(args.backend, model, data, moved, args.epochs, record, shards=False, local=False, keep={}, compare=keep,
                 names=names)
        print(f"{a['steps']} optimizer steps a run; 3 runs in {time.perf_counter() - start:.0f} s; accuracy after: A (whole batch) "
              f"{100 * a['accuracy']:.2f}%, B (2 shards accumulated) {100 * b['accuracy']:.2f}%, C (A from the checkpoint + 1 ulp) "
              f"{100 * c['accuracy']:.2f}%")
        print(f"{'step':>5}  {'local: rel of W':>15}  {'of the update':>13}  {'B-A':>9}  {'(tensor)':<22}{'C-A':>9}  (tensor)")
        for t in sorted(record) + ["last"]:
            (lw, _), lu = a[t] if t in a else ((float("nan"), ""), float("nan"))
            (ba, bn), (ca, cn) = b[t], c[t]
            print(f"{t if t != 'last' else a['steps']:>5}  {lw:>15.2e}  {lu:>13.2e}  {ba:>9.2e}  {names.get(bn, bn):<22}{ca:>9.2e}  "
                  f"{names.get(cn, cn)}", flush=True)


if __name__ == "__main__":
    main()
