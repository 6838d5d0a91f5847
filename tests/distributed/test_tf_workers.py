"""Training on several workers, tensorflow (issue 22): ``TF_CONFIG`` read and refused when it
cannot work (exit 2, no TensorFlow needed), the gradients summed over 2 workers with
TensorFlow's collective ops, bit for bit what one process accumulating the same shards
computes, within float32 rounding of one process with the whole batch; masks binary and the
same on every worker; a worker that never joins stops the others after the stated timeout;
``--max-restarts``: a worker killed mid-epoch makes the launcher restart the group on fresh
ports, which resumes from the last point, and a group that keeps failing stops with the stated
error.

The multi-process tests start real TensorFlow processes (about 0.7 GB and several seconds each):
2 workers, small models, one short epoch; slow."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lwdsl.errors import UsageError
from lwdsl.runner.ranks import world_from_env
from lwdsl.backend.tfconfig import parse_tf_config, tf_config

LWDSL = [str(Path(sys.executable).with_name("lwdsl"))]
DATA = "synthetic:1,12,12:4"
# the main recipe's fine-tune (recipes/lenet5-mnist.lw: 92% of the linear weights, cosine), one epoch;
# batch 89 on 3,000 images: the last batch of 63 splits 32/31, and every other batch 45/44
RECIPE = "prune l1 92% on linear | finetune epochs=1 batch=89 lr=0.01 schedule=cosine"


def _cfg(addresses, index, job="worker", extra=None):
    cluster = {job: addresses, **(extra or {})}
    return json.dumps({"cluster": cluster, "task": {"type": job, "index": index}})


# --- TF_CONFIG, without TensorFlow -------------------------------------------------------------


def test_tf_config_gives_rank_world_and_local_ranks():
    w = parse_tf_config(_cfg(["h1:1", "h1:2", "h2:1"], 1))
    assert (w.rank, w.world, w.local) == (1, 3, (1, 2))
    chief = json.dumps({"cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"]}, "task": {"type": "worker", "index": 0}})
    assert parse_tf_config(chief).rank == 1  # the chief is rank 0, the workers follow
    env = world_from_env({"TF_CONFIG": _cfg(["a:1", "b:2"], 1)})
    assert (env.rank, env.world, env.launcher) == (1, 2, "TF_CONFIG")
    assert world_from_env({"TF_CONFIG": _cfg(["a:1"], 0)}) is None  # a cluster of one is one process
    # RANK/WORLD_SIZE (what lwdsl run --workers sets beside TF_CONFIG) win
    env = world_from_env({"TF_CONFIG": _cfg(["a:1", "b:2"], 1), "WORLD_SIZE": "2", "RANK": "1", "LWDSL_WORKERS": "2"})
    assert env.launched_by_lwdsl
    assert json.loads(tf_config(["a:1", "b:2"], 1))["task"] == {"type": "worker", "index": 1}


@pytest.mark.parametrize("raw, said", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    (_cfg(["localhost:2222", "localhost:2222"], 0), "TF_CONFIG names the worker localhost:2222 twice"),
    (_cfg(["a:1", "b:2"], 2), "TF_CONFIG's task is worker 2, but the cluster has 2 worker(s)"),
    (_cfg(["a:1", "b:2"], -1), "TF_CONFIG's task is worker -1"),
    (_cfg(["a:1", "b:2"], "1"), "TF_CONFIG's task index is '1'"),
    (_cfg(["a:1"], 0, extra={"ps": ["p:1"]}), "TF_CONFIG names a 'ps' job"),
    (_cfg(["a", "b:2"], 0), "TF_CONFIG lists 'a': an address is host:port"),
    (json.dumps({"cluster": {"worker": ["a:1"]}}), 'TF_CONFIG needs a "cluster" and a "task"'),
])
def test_a_tf_config_that_cannot_work_is_refused(raw, said):
    with pytest.raises(UsageError) as info:
        parse_tf_config(raw)
    assert said in str(info.value)


def test_a_bad_tf_config_is_exit_2_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from lwdsl.cli.app import app

    recipe = tmp_path / "r.lw"
    recipe.write_text("finetune epochs=1\n")
    result = CliRunner().invoke(app, ["run", str(recipe), "--backend", "tensorflow", "--model", "lenet300", "--data", DATA,
                                      "--out", str(tmp_path / "out")],
                                env={"TF_CONFIG": _cfg(["localhost:2222", "localhost:2222"], 1)})
    assert result.exit_code == 2, result.output
    assert "names the worker localhost:2222 twice" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_max_restarts_on_a_worker_started_with_tf_config_is_exit_2(tmp_path):
    """lwdsl restarts only the workers it starts: under a TF_CONFIG of the user's, exit 2 before any work."""
    from typer.testing import CliRunner

    from lwdsl.cli.app import app

    recipe = tmp_path / "r.lw"
    recipe.write_text("finetune epochs=1\n")
    result = CliRunner().invoke(app, ["run", str(recipe), "--backend", "tensorflow", "--model", "lenet300", "--data", DATA,
                                      "--out", str(tmp_path / "out"), "--max-restarts", "1"],
                                env={"TF_CONFIG": _cfg(["localhost:2222", "localhost:2223"], 1)})
    assert result.exit_code == 2, result.output
    assert "--max-restarts 1 on a worker started with TF_CONFIG" in result.output and "--resume" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def _env_worker(folder: str) -> None:
    """What a worker of launch_local is given; worker 1 then fails with exit code 3."""
    keys = ("TF_CONFIG", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    (Path(folder) / f"env{os.environ['RANK']}.json").write_text(json.dumps({k: os.environ.get(k) for k in keys}))
    if os.environ["RANK"] == "1":
        sys.exit(3)


def test_the_local_launcher_gives_each_worker_its_tf_config(tmp_path, monkeypatch):
    """No TensorFlow: 2 fresh processes, each with its own task in one cluster of free
    localhost ports; a worker's failure comes back as its exit code."""
    from lwdsl.backend.tfconfig import launch_local

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert launch_local(2, _env_worker, (str(tmp_path),), 10) == {1: 3}
    env = [json.loads((tmp_path / f"env{r}.json").read_text()) for r in range(2)]
    worlds = [parse_tf_config(e["TF_CONFIG"]) for e in env]
    assert [w.rank for w in worlds] == [0, 1] and worlds[0].addresses == worlds[1].addresses
    assert len(set(worlds[0].addresses)) == 2 and all(a.startswith("localhost:") for a in worlds[0].addresses)
    assert [(e["RANK"], e["WORLD_SIZE"], e["LOCAL_RANK"], e["LOCAL_WORLD_SIZE"]) for e in env] == [("0", "2", "0", "2"), ("1", "2", "1", "2")]


def _flaky_worker(folder: str, always: bool) -> None:
    """Records its environment per attempt; worker 1 kills itself (SIGKILL) on the first attempt
    (on every attempt with ``always``), while worker 0 waits as if in a collective."""
    from lwdsl.backend.tfconfig import RESTART_COUNT

    attempt, rank = os.environ[RESTART_COUNT], os.environ["RANK"]
    (Path(folder) / f"a{attempt}r{rank}.json").write_text(json.dumps({"TF_CONFIG": os.environ["TF_CONFIG"]}))
    if rank == "1" and (always or attempt == "0"):
        end = time.monotonic() + 60
        while not (Path(folder) / f"a{attempt}r0.json").exists() and time.monotonic() < end:  # worker 0 is up
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
    if rank == "0" and (always or attempt == "0"):
        time.sleep(120)  # stuck, waiting for the worker that is gone


def test_the_local_launcher_restarts_a_failed_group_with_fresh_ports(tmp_path, monkeypatch):
    """``max_restarts=1``: worker 1 killed (SIGKILL) on the first attempt; the waiting worker 0
    is killed at once (not after GRACE_S), both start again with the restart's number and a new
    cluster of ports, and the run succeeds."""
    from lwdsl.backend.tfconfig import GRACE_S, launch_local

    monkeypatch.delenv("TF_CONFIG", raising=False)
    start = time.monotonic()
    assert launch_local(2, _flaky_worker, (str(tmp_path), False), 10, max_restarts=1) == {}
    assert time.monotonic() - start < GRACE_S  # worker 0 was not given the grace of a last attempt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a0r0.json", "a0r1.json", "a1r0.json", "a1r1.json"]
    first, then = ([parse_tf_config(json.loads((tmp_path / f"a{a}r{r}.json").read_text())["TF_CONFIG"]) for r in range(2)]
                   for a in range(2))
    assert [w.rank for w in then] == [0, 1] and then[0].addresses == then[1].addresses
    assert first[0].addresses != then[0].addresses  # fresh ports: the killed group's may still be held


def test_the_local_launcher_gives_up_after_max_restarts(tmp_path, monkeypatch):
    """A worker that fails on every attempt: 1 + max_restarts attempts, then its exit code
    (SIGKILL: 137) comes back; the launcher does not restart without max_restarts."""
    from lwdsl.backend.tfconfig import launch_local

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr("lwdsl.backend.tfconfig.GRACE_S", 0.5)
    assert launch_local(2, _flaky_worker, (str(tmp_path), True), 10, max_restarts=2) == {1: 137}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith("r1.json")) == ["a0r1.json", "a1r1.json", "a2r1.json"]
    again = tmp_path / "again"
    again.mkdir()
    assert launch_local(2, _flaky_worker, (str(again), True), 10) == {1: 137}
    assert sorted(p.name for p in again.iterdir()) == ["a0r0.json", "a0r1.json"]


def test_a_restarted_worker_knows_it_from_either_launcher():
    base = {"WORLD_SIZE": "2", "RANK": "1", "LWDSL_WORKERS": "2"}
    assert world_from_env(base).restarts == 0
    assert world_from_env({**base, "LWDSL_RESTART_COUNT": "2"}).restarts == 2  # lwdsl's tensorflow launcher
    assert world_from_env({**base, "TORCHELASTIC_RESTART_COUNT": "1"}).restarts == 1  # torch's elastic agent


def test_the_failure_of_a_group_is_said_once_with_the_same_words(monkeypatch):
    """What ``lwdsl run --workers`` says when its launcher gives up, for any backend: the killed
    worker and its signal (torch's agent gives -9, lwdsl's launcher 137: both exit 137), the
    restarts spent; nothing more when each worker said its own error and no restart was asked."""
    from lwdsl.runner import ranks as R

    said: list[str] = []
    for given in ({1: -9}, {1: 137}):
        monkeypatch.setattr(R, "_launcher", lambda backend, given=given: lambda *a, **k: given)
        assert R.launch_workers("tensorflow", 2, print, (), max_restarts=1, say=said.append) == 137
    assert said[0] == said[1]
    assert said[0].startswith("error: worker 1 of 2 was killed (SIGKILL); the group was restarted 1 time (--max-restarts 1) "
                              "and failed again: the run stopped")
    assert "--resume" in said[0]
    assert R.failure_message({0: 1}, 2, 0) is None  # the worker printed its own error
    assert "worker 0 of 2 failed (exit 1); the group was restarted 3 times" in R.failure_message({0: 1}, 2, 3)
    assert "worker 0 of 3 was killed (SIGKILL): the run stopped" in R.failure_message({0: 137}, 3, 0)
    monkeypatch.setattr(R, "_launcher", lambda backend: lambda *a, **k: {0: 130})
    said.clear()
    assert R.launch_workers("tensorflow", 2, print, (), max_restarts=1, say=said.append) == 130 and said == []


# --- TensorFlow ------------------------------------------------------------------------------


def _tf():
    from tests.conftest import selected_backends

    if "tensorflow" not in selected_backends():
        pytest.skip("tensorflow not selected (LWDSL_TEST_BACKENDS)")
    pytest.importorskip("tensorflow")


def _mnist_slice(folder: Path, data_root: Path) -> Path:
    """3,000 training and 1,000 test images of the real MNIST, as a .npz."""

    def read(name: str, offset: int, n: int, shape: tuple[int, ...]) -> np.ndarray:
        with gzip.open(data_root / "mnist" / name) as f:
            raw = np.frombuffer(f.read(), dtype=np.uint8, offset=offset)
        return raw[: n * int(np.prod(shape))].reshape((n, *shape))

    path = folder / "mnist-slice.npz"
    np.savez(path, x_train=read("train-images-idx3-ubyte.gz", 16, 3000, (28, 28)),
             y_train=read("train-labels-idx1-ubyte.gz", 8, 3000, ()).astype(np.int64),
             x_test=read("t10k-images-idx3-ubyte.gz", 16, 1000, (28, 28)),
             y_test=read("t10k-labels-idx1-ubyte.gz", 8, 1000, ()).astype(np.int64))
    return path


def _keep_masks(found: dict) -> None:
    """Record the masks as the run ends (the backend drops them when it finalizes)."""
    from lwdsl.backends.tf_backend.backend import KerasBackend

    real = KerasBackend.finalize

    def finalize(self, model):
        found.update(self.masks_of(model))
        return real(self, model)

    KerasBackend.finalize = finalize


def _run(data: str, checkpoint: str, world=None):
    import lwdsl

    masks: dict = {}
    _keep_masks(masks)
    result = lwdsl.run(RECIPE, "lenet5", data=data, checkpoint=checkpoint, backend="tensorflow", quiet=True, latency=False,
                       train_threads=1, world=world)
    arrays = {**{f"w:{k}": v for k, v in result.backend.state(result.model).items()}, **{f"m:{k}": v for k, v in masks.items()}}
    return arrays, (result.report["summary"]["accuracy_after"] if result.report else None)


def _rank_worker(data: str, checkpoint: str, folder: str) -> None:
    """One worker (a process with its own TF_CONFIG): the run, then its weights, masks and accuracy."""
    arrays, accuracy = _run(data, checkpoint)
    np.savez(Path(folder) / f"rank{os.environ['RANK']}.npz", **arrays)
    (Path(folder) / f"rank{os.environ['RANK']}.json").write_text(json.dumps({"accuracy": accuracy}))


def _reference_worker(data: str, checkpoint: str, folder: str) -> None:
    """The references, in a fresh process with one training thread like each worker (TensorFlow
    fixes its thread pool once a process, and convolutions sum by thread): one process with the
    whole batch, then one process accumulating the 2 shards of every batch."""
    from lwdsl.backend.ranks import OneProcess
    from lwdsl.backends.tf_backend.backend import KerasBackend
    from lwdsl.runner.ranks import WorldEnv

    whole, accuracy = _run(data, checkpoint)
    np.savez(Path(folder) / "whole.npz", **whole)
    (Path(folder) / "whole.json").write_text(json.dumps({"accuracy": accuracy}))
    KerasBackend.join_ranks = lambda self, rank, size, timeout, join_s=None: OneProcess(size)
    accumulated, _ = _run(data, checkpoint, world=WorldEnv(0, 2, 0, 1, "test"))
    np.savez(Path(folder) / "accumulated.npz", **accumulated)


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, data_root):
    """The slice, and a lenet5 baseline trained on it for one epoch (tensorflow)."""
    _tf()
    import lwdsl
    from lwdsl.backend.weights import save_weights

    folder = tmp_path_factory.mktemp("tfw")
    data = str(_mnist_slice(folder, data_root))
    os.environ.setdefault("LWDSL_CACHE", str(folder / "cache"))
    result = lwdsl.run("prune l1 0.1", "lenet5", data=data, backend="tensorflow", baseline_epochs=1, quiet=True, latency=False)
    checkpoint = folder / "base.lwz"
    save_weights(checkpoint, result.backend.state(result.model))
    return data, str(checkpoint)


@pytest.mark.slow
def test_two_tf_workers_match_one_process(mnist_run, tmp_path, monkeypatch):
    """2 workers against one process on the main recipe's fine-tune (lenet5, MNIST slice):
    bit for bit what one process accumulating the same 2 shards computes; against one process
    with the whole batch: the same masks, weights within 1e-5 relative a tensor (the issue's
    bound is 1e-4; float32 rounding of the mean measured about 1e-7), accuracy within 0.1
    point. The masks (fc1, fc2) stay binary (bool) and the same on both workers."""
    import multiprocessing

    from lwdsl.backend.tfconfig import launch_local

    data, checkpoint = mnist_run
    for name in ("WORLD_SIZE", "RANK", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    failed = launch_local(2, _rank_worker, (data, checkpoint, str(tmp_path)), 300)
    assert failed == {}
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    accuracy = [json.loads((tmp_path / f"rank{r}.json").read_text())["accuracy"] for r in range(2)]
    assert accuracy[1] is None  # rank 1 reports nothing: rank 0 measures and writes
    reference = multiprocessing.get_context("spawn").Process(target=_reference_worker, args=(data, checkpoint, str(tmp_path)))
    reference.start()
    reference.join(600)
    assert reference.exitcode == 0
    whole, accumulated = dict(np.load(tmp_path / "whole.npz")), dict(np.load(tmp_path / "accumulated.npz"))
    whole_accuracy = json.loads((tmp_path / "whole.json").read_text())["accuracy"]
    masks = [k for k in whole if k.startswith("m:")]
    assert len(masks) == 2 and set(ranks[0]) == set(ranks[1]) == set(whole) == set(accumulated)
    for name in whole:
        a = ranks[0][name]
        assert np.array_equal(a, ranks[1][name]), f"{name}: worker 1 differs from worker 0"
        assert a.dtype == accumulated[name].dtype and np.array_equal(a, accumulated[name]), \
            f"{name}: 2 workers differ from one process accumulating the 2 shards"
        if name.startswith("m:"):
            assert a.dtype == np.bool_  # never averaged into fractions
            assert np.array_equal(a, whole[name])
        else:
            w = whole[name].astype(np.float64)
            rel = float(np.linalg.norm(a - w) / np.linalg.norm(w)) if np.linalg.norm(w) else 0.0
            assert rel < 1e-5, f"{name}: {rel:.2e} relative from one process with the whole batch"
    assert abs(accuracy[0] - whole_accuracy) <= 0.001


def _collectives_worker(folder: str) -> None:
    """Every primitive of TFRanks between 2 workers, rank 1 with the larger gathered object."""
    from lwdsl.backend.ranks import check_agree
    from lwdsl.backends.tf_backend._tf import tf
    from lwdsl.backends.tf_backend.ranks import TFRanks
    from lwdsl.errors import RunError

    rank = int(os.environ["RANK"])
    ranks = TFRanks(rank, 2, "cpu", 60)
    out = {
        "max": ranks.all_max(np.array([rank, -rank, 7], np.int64)).tolist(),
        "sum": ranks.all_sum(np.array([0.1 * (rank + 1), 1e-17])).tolist(),
        "gather": ranks.gather({"rank": rank, "pad": "x" * (1000 * rank)}),
    }
    flat = tf.Variable([1.5, -2.0] if rank == 0 else [0.25, 4.0])
    ranks.all_sum_native(flat)
    stats = [tf.Variable([float(rank + 3)] * 3), tf.Variable([rank], dtype=tf.int64)]
    ranks.broadcast_native(stats)
    out.update(native=flat.numpy().tolist(), bcast=stats[0].numpy().tolist(), untouched=int(stats[1].numpy()[0]))
    check_agree(ranks, "same", lambda: {"m": np.ones(4, bool)})
    try:
        check_agree(ranks, "step 2 (prune)", lambda: {"m": np.array([rank == 0, True])})
        out["disagree"] = None
    except RunError as exc:
        out["disagree"] = str(exc)
    (Path(folder) / f"c{rank}.json").write_text(json.dumps(out))


@pytest.mark.slow
def test_collectives_between_two_tf_workers(tmp_path, monkeypatch):
    """Sums in float64, maxima, a gather of objects of different sizes, the flat gradient
    buffer, rank 0's floating-point buffers broadcast (an integer one left alone), and a digest
    check that stops both workers with the same error when their masks differ."""
    _tf()
    from lwdsl.backend.tfconfig import launch_local

    for name in ("WORLD_SIZE", "RANK", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert launch_local(2, _collectives_worker, (str(tmp_path),), 60) == {}
    got = [json.loads((tmp_path / f"c{r}.json").read_text()) for r in range(2)]
    for r, g in enumerate(got):
        assert g["max"] == [1, 0, 7] and g["sum"] == [0.1 + 0.2, 2e-17]
        assert [x["rank"] for x in g["gather"]] == [0, 1] and len(g["gather"][1]["pad"]) == 1000
        assert g["native"] == [1.75, 2.0] and g["bcast"] == [3.0, 3.0, 3.0] and g["untouched"] == r
        assert "step 2 (prune): the 2 workers hold different weights, masks or codes" in g["disagree"]


@pytest.mark.slow
def test_torch_and_tensorflow_workers_give_the_same_masks(tmp_path):
    """``lwdsl run --workers 2`` on both backends from one checkpoint (lenet300, synthetic):
    the same masks (pruned weights, bit for bit), including a second prune after the
    distributed fine-tune (ranked on weights each backend trained); on tensorflow only rank 0
    writes, progress is said once, the lock file records the world."""
    _tf()
    pytest.importorskip("torch")
    import lwdsl
    from lwdsl.backend.weights import load_weights, save_weights

    env = dict(os.environ, LWDSL_CACHE=str(tmp_path / "cache"), COLUMNS="120")
    for name in ("WORLD_SIZE", "RANK", "TF_CONFIG"):
        env.pop(name, None)
    base = lwdsl.run("prune l1 0.1", "lenet300", data=DATA, baseline_epochs=1, quiet=True, latency=False)
    checkpoint = tmp_path / "base.lwz"
    save_weights(checkpoint, base.backend.state(base.model))
    recipe = tmp_path / "r.lw"
    recipe.write_text("prune l1 0.5\nfinetune epochs=1 batch=89 lr=0.05\nprune l1 0.7\n")
    done = {}
    for backend in ("torch", "tensorflow"):
        cwd = tmp_path / backend
        cwd.mkdir()
        done[backend] = subprocess.run([*LWDSL, "run", str(recipe), "--backend", backend, "--model", "lenet300", "--data", DATA,
                                        "--checkpoint", str(checkpoint), "--out", "out", "--workers", "2"],
                                       cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert done[backend].returncode == 0, done[backend].stderr[-4000:]
    tf_run = done["tensorflow"]
    assert sorted(p.name for p in (tmp_path / "tensorflow").iterdir()) == ["out"]  # no lock left, nothing else
    lock = json.loads((tmp_path / "tensorflow" / "out" / "lwdsl.lock.json").read_text())
    assert lock["world_size"] == 2 and lock["world"]["launcher"] == "lwdsl run --workers"
    assert lock["world"]["collectives"].startswith("tensorflow collective ops")
    assert tf_run.stderr.count("prune l1 0.5:") == 1 and tf_run.stdout.count("report in") == 1
    assert "Traceback" not in tf_run.stderr
    states = {b: load_weights(tmp_path / b / "out" / "model.lwz")[0] for b in done}
    weights = [k for k in states["torch"] if k.endswith(".weight")]
    assert weights and set(weights) <= set(states["tensorflow"])
    for k in weights:
        kept = [np.asarray(states[b][k]) != 0 for b in ("torch", "tensorflow")]
        assert np.array_equal(*kept), f"{k}: the backends' masks differ ({int((kept[0] != kept[1]).sum())} entries)"
    reports = {b: json.loads((tmp_path / b / "out" / "report.json").read_text()) for b in done}
    acc = [reports[b]["summary"]["accuracy_after"] for b in done]
    assert abs(acc[0] - acc[1]) <= 0.01


@pytest.mark.slow
def test_user_launched_tf_config_workers_and_one_that_never_joins(tmp_path):
    """Two commands with a TF_CONFIG each (what a user runs on two machines) make one run,
    rank 0 writing; a worker whose peer never starts stops after LWDSL_DIST_TIMEOUT (5 s here)
    with exit 2 and the address it waited for."""
    _tf()
    from lwdsl.backend.tfconfig import _free_ports

    recipe = tmp_path / "r.lw"
    recipe.write_text("prune l1 0.5\nfinetune epochs=1 batch=89 lr=0.05\n")
    env = dict(os.environ, LWDSL_CACHE=str(tmp_path / "cache"), LWDSL_DIST_TIMEOUT="120")
    for name in ("WORLD_SIZE", "RANK"):
        env.pop(name, None)
    addresses = [f"localhost:{p}" for p in _free_ports(2)]
    args = [*LWDSL, "run", str(recipe), "--backend", "tensorflow", "--model", "lenet300", "--data", DATA, "--baseline-epochs",
            "1", "--out", str(tmp_path / "out"), "--quiet", "--train-threads", "1"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=dict(env, TF_CONFIG=tf_config(addresses, r)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    lock = json.loads((tmp_path / "out" / "lwdsl.lock.json").read_text())
    assert lock["world_size"] == 2 and lock["world"]["launcher"] == "TF_CONFIG"
    assert outs[0][0].count("report in") == 1 and outs[1][0] == ""
    assert not (tmp_path / "out.lock").exists()

    lonely = [f"localhost:{p}" for p in _free_ports(2)]
    start = time.monotonic()
    done = subprocess.run(args[:-5] + ["--out", str(tmp_path / "out2")], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(env, TF_CONFIG=tf_config(lonely, 1), LWDSL_DIST_TIMEOUT="5"))
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"worker 1 of 2: 1 worker(s) never joined within 5 s (nothing answers at {lonely[0]})" in done.stderr
    assert time.monotonic() - start < 240  # TensorFlow's import and the 5 s, not TensorFlow's own endless wait
    assert not (tmp_path / "out2").exists()


def _accumulated_worker(recipe: str, checkpoint: str, out: str) -> None:
    """The uninterrupted reference of 2 workers, in a fresh process with one training thread
    like each worker: one process accumulating the 2 shards of every batch (bit for bit what 2
    tensorflow workers compute: test_two_tf_workers_match_one_process)."""
    import lwdsl
    from lwdsl.backend.ranks import OneProcess
    from lwdsl.backend.weights import save_weights
    from lwdsl.backends.tf_backend.backend import KerasBackend
    from lwdsl.runner.ranks import WorldEnv

    KerasBackend.join_ranks = lambda self, rank, size, timeout, join_s=None: OneProcess(size)
    result = lwdsl.run(Path(recipe).read_text(), "lenet300", data=DATA, checkpoint=checkpoint, backend="tensorflow", quiet=True,
                       latency=False, train_threads=1, world=WorldEnv(0, 2, 0, 1, "test"))
    save_weights(Path(out), result.backend.state(result.model))


def _spawned_workers(pid: int) -> list[int]:
    """The worker processes ``lwdsl run --workers`` (process ``pid``) started (multiprocessing's
    spawn), first started first."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            pass
    return sorted(found)


@pytest.mark.slow
def test_a_tf_worker_killed_mid_epoch_restarts_the_group_which_resumes(tmp_path):
    """``lwdsl run --backend tensorflow --workers 2 --max-restarts 1``: the first worker is
    killed (SIGKILL) once the point after epoch 1 of the fine-tune is written, while the
    workers train epoch 2; the launcher kills the other, starts both again on fresh ports, they
    resume from that point, and the run ends with the weights and masks of 2 uninterrupted
    workers, with nothing left beside the run folder. Then a group that keeps failing stops
    after its restarts with the stated error."""
    _tf()
    import multiprocessing

    import lwdsl
    from lwdsl.backend.weights import load_weights, save_weights

    env = dict(os.environ, COLUMNS="120", LWDSL_CACHE=str(tmp_path / "cache"))
    for name in ("WORLD_SIZE", "RANK", "TF_CONFIG"):
        env.pop(name, None)
    os.environ["LWDSL_CACHE"] = env["LWDSL_CACHE"]
    base = lwdsl.run("prune l1 0.1", "lenet300", data=DATA, baseline_epochs=1, quiet=True, latency=False, backend="tensorflow")
    checkpoint = tmp_path / "base.lwz"
    save_weights(checkpoint, base.backend.state(base.model))
    recipe = tmp_path / "r.lw"
    recipe.write_text("prune l1 0.5\nfinetune epochs=3 batch=16 lr=0.01 momentum=0.9\n")
    args = [*LWDSL, "run", str(recipe), "--backend", "tensorflow", "--model", "lenet300", "--data", DATA, "--checkpoint",
            str(checkpoint), "--workers", "2", "--train-threads", "1", "--max-restarts", "1"]
    proc = subprocess.Popen([*args, "--out", "out"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress, killed = tmp_path / "out.resume" / "progress.json", None
    try:
        deadline = time.monotonic() + 400
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                training = json.loads(progress.read_text()).get("training") or {}
            except (OSError, ValueError):
                training = {}
            if training.get("epoch") == 1:
                workers = _spawned_workers(proc.pid)
                if len(workers) == 2:
                    time.sleep(0.5)  # into epoch 2
                    os.kill(workers[0], signal.SIGKILL)
                    killed = time.monotonic()
            time.sleep(0.02)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, f"the point after epoch 1 never appeared: {err[-3000:]}"
    assert proc.returncode == 0, err[-4000:]
    assert err.count("restart 1 by the launcher (lwdsl run --workers): resuming from the last point") == 1, err[-3000:]
    assert "resuming after step 1 of 2 and epoch 1 of 3 of step 2" in err, err[-3000:]
    assert "Traceback" not in err and out.count("report in") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.lwz", "cache", "out", "r.lw"]  # no point, staging or lock left
    reference = multiprocessing.get_context("spawn").Process(
        target=_accumulated_worker, args=(str(recipe), str(checkpoint), str(tmp_path / "reference.lwz")))
    reference.start()
    reference.join(600)
    assert reference.exitcode == 0
    got, _ = load_weights(tmp_path / "out" / "model.lwz")
    want, _ = load_weights(tmp_path / "reference.lwz")
    assert set(got) == set(want)
    for name in want:
        assert np.array_equal(got[name], want[name]), name  # bit for bit: the same 2 shards, the same state resumed

    # a group that fails on every attempt (a worker killed as soon as it starts training, twice)
    proc = subprocess.Popen([*args, "--out", "out2"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kills: set[int] = set()
    try:
        deadline = time.monotonic() + 400
        while proc.poll() is None and time.monotonic() < deadline:
            workers = _spawned_workers(proc.pid)
            if len(workers) == 2 and workers[1] not in kills and (tmp_path / "out2.resume").exists():
                os.kill(workers[1], signal.SIGKILL)
                kills.add(workers[1])
            time.sleep(0.05)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (1, 137) and len(kills) == 2, err[-3000:]  # rank 0's: its collective failed, or it was killed
    assert ("worker 1 of 2 was killed (SIGKILL); the group was restarted 1 time (--max-restarts 1) and failed again: "
            "the run stopped") in err
    assert "Traceback" not in err and not (tmp_path / "out2").exists()
