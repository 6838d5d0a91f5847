"""Streamed data: peak memory does not grow with the data set, and MNIST is not slower.

1. Peak RSS (``ru_maxrss`` of the child process, from ``os.wait4``) of ``lwdsl run`` with
   ``finetune epochs=1`` (torch, a small model file given by ``--model``, its initial weights by
   ``--checkpoint`` so no baseline is trained) on generated JPEG class folders of 3 x 224 x 224
   images: 2,000 and 20,000 (10 classes; 20% held out by the seeded split, so 1,600 / 16,000
   training images, each evaluated twice). Held as float32, the 20,000 would take 12 GB.
   Target: the peak at 20,000 at most 1.25x the peak at 2,000.
2. The main job's fine-tune (``recipes/lenet5-mnist.lw``'s prune, prune, ``finetune epochs=2
   lr=0.01 schedule=cosine`` on MNIST, torch; the step's seconds from the report) with this
   tree's in-memory path against today's tree (``git archive REV``, default main), fresh
   processes alternated round by round, the same cached baseline. Target: within 5%.
   With ``--streamed`` a third side reads MNIST from a .npz (the streamed path), for scale.

The images are generated into a temporary folder outside the repository (``--work DIR`` keeps
and reuses them), removed at the end unless ``--work`` is given.

    LWDSL_DATA=/path/to/data python bench/stream_memory.py [--rounds 3] [--today REV] [--work /tmp/sm]

``--today`` is the tree before streaming: efc035c, the first parent of the merge that brought it
(4825663); ``main`` now has streaming itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LWDSL = str(Path(sys.executable).with_name("lwdsl"))
CLASSES = 10

TINY = '''import torch.nn as nn


class Tiny(nn.Module):
    """A small classifier for 3 x 224 x 224 images: a stride-8 stem, one more convolution, a mean."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 8, stride=8)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = nn.functional.relu(self.conv1(x))
        x = nn.functional.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))
'''


def generate(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` JPEGs (quality 90) of 224 x 224 x 3 in ``CLASSES`` class folders: each class a
    smooth colour pattern of its own, each image that pattern under noise and a random shift."""
    from PIL import Image

    done = folder / ".complete"
    if done.exists() and int(done.read_text()) == n:
        return
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(seed)
    patterns = rng.integers(40, 216, (CLASSES, 7, 7, 3)).astype(np.float32)
    start = time.perf_counter()
    for i in range(n):
        c = i % CLASSES
        base = np.kron(patterns[c], np.ones((32, 32, 1), np.float32))
        base = np.roll(base, tuple(rng.integers(-16, 17, 2)), axis=(0, 1))
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        d = folder / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:05d}.jpg", quality=90)
        if (i + 1) % 5000 == 0:
            print(f"  generated {i + 1:,} of {n:,} JPEGs ({time.perf_counter() - start:.0f} s)", flush=True)
    done.write_text(str(n))


def link_subset(src: Path, dst: Path, n: int) -> None:
    """The first ``n`` images of ``src`` (by index) as hard links in ``dst``."""
    if (dst / ".complete").exists() and int((dst / ".complete").read_text()) == n:
        return
    shutil.rmtree(dst, ignore_errors=True)
    for i in range(n):
        c = i % CLASSES
        (dst / f"class{c}").mkdir(parents=True, exist_ok=True)
        os.link(src / f"class{c}" / f"{i:05d}.jpg", dst / f"class{c}" / f"{i:05d}.jpg")
    (dst / ".complete").write_text(str(n))


def peak_rss(args: list[str], env: dict) -> tuple[int, float, str]:
    """(peak RSS in bytes, wall seconds, stderr tail) of one child process."""
    start = time.perf_counter()
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    err.seek(0)
    tail = err.read().decode(errors="replace")[-2000:]
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{tail}")
    return usage.ru_maxrss * 1024, seconds, tail


def memory(work: Path) -> None:
    import torch

    sys.path.insert(0, str(work))
    (work / "tiny.py").write_text(TINY)
    torch.manual_seed(0)
    from importlib import import_module

    torch.save(import_module("tiny").Tiny().state_dict(), work / "init.pt")
    (work / "ft.lw").write_text("finetune epochs=1 lr=0.01\n")
    generate(work / "jpeg20000", 20_000)
    link_subset(work / "jpeg20000", work / "jpeg2000", 2_000)
    env = dict(os.environ, LWDSL_CACHE=str(work / "cache"))
    rows = {}
    for n in (2_000, 20_000):
        args = [LWDSL, "run", str(work / "ft.lw"), "--model", f"{work / 'tiny.py'}:Tiny", "--checkpoint", str(work / "init.pt"),
                "--data", str(work / f"jpeg{n}"), "--out", str(work / f"run{n}"), "-q"]
        rss, seconds, _ = peak_rss(args, env)
        report = json.loads((work / f"run{n}" / "report.json").read_text())
        ft = report["steps"][1]["metrics"]["seconds"]
        rows[n] = rss
        src = report["data_source"]
        print(f"  {n:>6,} JPEGs ({src['train_images']:,} train / {src['test_images']:,} test, {'x'.join(map(str, src['image_shape']))}): "
              f"peak RSS {rss / 2**20:,.0f} MiB; run {seconds:.0f} s, finetune step {ft:.0f} s "
              f"({src['train_images'] / ft:,.0f} images/s); as float32 the images would take {n * 3 * 224 * 224 * 4 / 1e9:.1f} GB; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"  ratio 20,000 / 2,000: {rows[20_000] / rows[2_000]:.3f} (target <= 1.25)")


CHILD = r"""
import json, sys, lwdsl
from lwdsl.runner.pipeline import run
text = "prune l2 30% structured=filters remove=true on conv\nprune l1 92% on linear\nfinetune epochs=2 lr=0.01 schedule=cosine\n"
res = run(text, "lenet5", backend="torch", data=sys.argv[1], quiet=True, latency=False)
steps = res.report["steps"]
print(json.dumps({"finetune_s": steps[3]["metrics"]["seconds"], "accuracy": steps[3]["metrics"]["accuracy"], "lwdsl": lwdsl.__file__}))
"""


def today_tree(rev: str, work: Path) -> Path:
    tree = work / f"today-{rev.replace('/', '_')}"
    if not tree.exists():
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        (tree / "lwdsl" / "backends").symlink_to(tree / "backends")
    return tree


def timing(work: Path, rounds: int, rev: str, streamed: bool) -> None:
    tree = today_tree(rev, work)
    env = dict(os.environ, LWDSL_CACHE=str(work / "cache"))
    sides = {"today": (tree, "mnist"), "this tree, in memory": (None, "mnist")}
    if streamed:
        from lwdsl.data.builtin import load_data

        m = load_data("mnist", download=False)
        npz = work / "mnist.npz"
        if not npz.exists():
            u8 = lambda a: np.clip(np.rint((a[:, 0] * 0.3081 + 0.1307) * 255), 0, 255).astype(np.uint8)  # noqa: E731
            np.savez(npz, x_train=u8(m.train_x), y_train=m.train_y, x_test=u8(m.test_x), y_test=m.test_y)
        sides["this tree, streamed .npz"] = (None, f"{npz}?mean=0.1307&std=0.3081")

    def once(tree: Path | None, data: str) -> dict:
        e = dict(env, PYTHONPATH=str(tree)) if tree else {k: v for k, v in env.items() if k != "PYTHONPATH"}
        out = subprocess.run([sys.executable, "-c", CHILD, data], capture_output=True, text=True, env=e, cwd=tree or ROOT, timeout=3600)
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        return json.loads(out.stdout.strip().splitlines()[-1])

    print("  warming up (trains and caches the baseline once)...", flush=True)
    once(None, "mnist")
    runs: dict[str, list[dict]] = {k: [] for k in sides}
    for r in range(rounds):
        for name, (tree, data) in (sides.items() if r % 2 == 0 else reversed(sides.items())):
            runs[name].append(once(tree, data))
    base = [x["finetune_s"] for x in runs["today"]]
    print(f"  load {os.getloadavg()[0]:.1f}; {rounds} rounds alternated; fine-tune step seconds, median (min-max); accuracy")
    for name, rs in runs.items():
        t = [x["finetune_s"] for x in rs]
        ratio = statistics.median(a / b for a, b in zip(t, base))
        where = Path(rs[0]["lwdsl"]).parent
        print(f"  {name:26} {statistics.median(t):7.1f} s ({min(t):.1f}-{max(t):.1f})  paired ratio to today {ratio:.3f}  "
              f"accuracy {100 * rs[0]['accuracy']:.2f}%  ({where})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--today", default="main", help="the git revision today's tree is taken from")
    parser.add_argument("--work", type=Path, default=None, help="keep the generated images here (reused next time)")
    parser.add_argument("--streamed", action="store_true", help="also time MNIST read from a .npz (the streamed path)")
    parser.add_argument("--skip", choices=("memory", "timing"), default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="lwdsl-stream-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    from lwdsl.backend.threads import cpu_model, usable_cpus

    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs ({usable_cpus()} usable), load {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"work folder {work}", flush=True)
    try:
        if args.skip != "memory":
            print("1. peak RSS of `lwdsl run` (finetune epochs=1, torch) on generated 3x224x224 JPEG class folders")
            memory(work)
        if args.skip != "timing":
            print(f"2. the main job's fine-tune on MNIST (torch): this tree against {args.today}")
            timing(work, args.rounds, args.today, args.streamed)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
