"""Training on several ranks (issue 22, torch): the core's shard rule, gradients summed over
2 gloo processes, bit for bit what one process accumulating the same shards computes, within
float32 rounding of one process with the whole batch; only rank 0 writes; bad set-ups exit 2.

The 2-process runs are small (lenet300, 2048 images of 1x12x12, one short epoch) and start real
processes through torch's elastic launcher: slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lwdsl  # noqa: E402
from lwdsl.backend.ranks import OneProcess  # noqa: E402
from lwdsl.backend.weights import load_weights, save_weights  # noqa: E402
from lwdsl.runner.ranks import WorldEnv, world_from_env  # noqa: E402
from lwdsl.errors import UsageError  # noqa: E402

DATA = "synthetic:1,12,12:4"
# 2048 training images: batches of 89 end with one of 1 example, which rank 1 has none of;
# 89 is odd, so every other batch splits 45/44
RECIPE = "prune l1 0.5 | finetune epochs=1 batch=89 lr=0.05"
LWDSL = [str(Path(sys.executable).with_name("lwdsl"))]


def _run(checkpoint: Path, **kw):
    return lwdsl.run(RECIPE, "lenet300", data=DATA, checkpoint=checkpoint, quiet=True, latency=False, train_threads=1, **kw)


def _keep_masks(found: dict) -> None:
    """Record the masks as the run ends (the torch backend drops them when it finalizes)."""
    from lwdsl.backends.torch_backend.backend import TorchBackend

    real = TorchBackend.finalize

    def finalize(self, model):
        found.update(self.masks_of(model))
        return real(self, model)

    TorchBackend.finalize = finalize


def _arrays(result, masks: dict) -> dict[str, np.ndarray]:
    return {**{f"w:{k}": v for k, v in result.backend.state(result.model).items()}, **{f"m:{k}": v for k, v in masks.items()}}


def _rank_worker(checkpoint: str, folder: str) -> None:
    """One rank (started by torch's elastic agent): the run, then its weights and masks saved."""
    masks: dict = {}
    _keep_masks(masks)
    result = _run(Path(checkpoint))
    np.savez(Path(folder) / f"rank{os.environ['RANK']}.npz", **_arrays(result, masks))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("base")
    os.environ.setdefault("LWDSL_CACHE", str(folder / "cache"))
    result = lwdsl.run("prune l1 0.1", "lenet300", data=DATA, baseline_epochs=1, quiet=True, latency=False)
    path = folder / "base.lwz"
    save_weights(path, result.backend.state(result.model))
    return path


def _accumulated(checkpoint: Path, monkeypatch, world: int) -> dict[str, np.ndarray]:
    """One process computing the ``world`` shards of every batch one after another."""
    from lwdsl.backends.torch_backend.backend import TorchBackend

    monkeypatch.setattr(TorchBackend, "join_ranks", lambda self, rank, size, timeout, **kw: OneProcess(size))
    masks: dict = {}
    monkeypatch.setattr(TorchBackend, "finalize", TorchBackend.finalize)
    _keep_masks(masks)
    result = _run(checkpoint, world=WorldEnv(0, world, 0, 1, "test"))
    return _arrays(result, masks)


def _whole(checkpoint: Path, monkeypatch) -> dict[str, np.ndarray]:
    from lwdsl.backends.torch_backend.backend import TorchBackend

    masks: dict = {}
    monkeypatch.setattr(TorchBackend, "finalize", TorchBackend.finalize)
    _keep_masks(masks)
    result = _run(checkpoint)
    return _arrays(result, masks)


@pytest.mark.slow
def test_two_gloo_ranks_are_bit_identical_to_one_process_accumulating_the_shards(checkpoint, tmp_path, monkeypatch):
    from lwdsl.backends.torch_backend.ranks import launch

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    failed = launch(2, _rank_worker, (str(checkpoint), str(tmp_path)), 300)
    assert failed == {}
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    reference = _accumulated(checkpoint, monkeypatch, 2)
    whole = _whole(checkpoint, monkeypatch)
    assert set(ranks[0]) == set(reference) == set(whole)
    assert any(k.startswith("m:") for k in reference)  # the masks are compared too
    for name in reference:
        a, b = torch.from_numpy(ranks[0][name]), torch.from_numpy(reference[name])
        assert torch.equal(a, torch.from_numpy(ranks[1][name])), f"{name}: rank 1 differs from rank 0"
        assert torch.equal(a, b), f"{name}: 2 ranks differ from one process accumulating the 2 shards"
        if name.startswith("m:"):
            assert torch.equal(a, torch.from_numpy(whole[name]))
        else:
            w = torch.from_numpy(whole[name]).double()
            rel = float((a.double() - w).norm() / w.norm()) if float(w.norm()) else 0.0
            assert rel < 1e-6, f"{name}: {rel:.2e} relative from one process with the whole batch"


def test_one_process_accumulating_3_shards_is_the_whole_batch_within_rounding(checkpoint, monkeypatch):
    """89 = 30 + 30 + 29, and the last batch of 1 leaves shards 1 and 2 empty: the same step
    as the whole batch up to float32 rounding, the same masks."""
    three = _accumulated(checkpoint, monkeypatch, 3)
    whole = _whole(checkpoint, monkeypatch)
    for name in whole:
        if name.startswith("m:"):
            assert np.array_equal(three[name], whole[name])
        else:
            a, w = three[name].astype(np.float64), whole[name].astype(np.float64)
            assert np.linalg.norm(a - w) <= 1e-6 * np.linalg.norm(w), name


def test_ranks_that_disagree_stop_the_run():
    from lwdsl.backend.ranks import check_agree
    from lwdsl.errors import RunError
    from lwdsl.semantics.shards import agree_words, digest

    class TwoRanks(OneProcess):

        def __init__(self, other):
            super().__init__(2)
            self.processes, self.other = 2, other

        def all_max(self, values):
            return np.maximum(values, agree_words(digest(self.other)))

    mine = {"w": np.zeros(4, dtype=np.float32)}
    check_agree(TwoRanks(mine), "step 1 (prune)", lambda: mine)
    with pytest.raises(RunError, match=r"step 2 \(prune\): the 2 workers hold different weights, masks or codes"):
        check_agree(TwoRanks({"w": np.ones(4, dtype=np.float32)}), "step 2 (prune)", lambda: mine)
    called = []
    check_agree(OneProcess(2), "one process", lambda: called.append(1) or mine)
    assert not called  # nothing to compare in one process: the arrays are not even made


@pytest.mark.slow
def test_workers_cli_only_rank_0_writes(checkpoint, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    recipe = cwd / "r.lw"
    recipe.write_text("prune l1 0.5\nfinetune epochs=1 batch=89 lr=0.05\nquantize int8\nexport onnx\n")
    env = dict(os.environ, LWDSL_CACHE=str(tmp_path / "cache"), COLUMNS="120")
    env.pop("WORLD_SIZE", None)
    done = subprocess.run([*LWDSL, "run", "r.lw", "--model", "lenet300", "--data", DATA, "--checkpoint", str(checkpoint),
                           "--out", "out", "--workers", "2"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[:4000]
    assert sorted(p.name for p in cwd.iterdir()) == ["out", "r.lw"]  # nothing beside the run folder, no lock left
    lock = json.loads((cwd / "out" / "lwdsl.lock.json").read_text())
    assert lock["world_size"] == 2 and lock["world"]["launcher"] == "lwdsl run --workers"
    assert lock["world"]["collectives"] == "gloo" and [r["device"] for r in lock["world"]["ranks"]] == ["cpu", "cpu"]
    assert done.stderr.count("prune l1 0.5:") == 1  # progress and step lines from rank 0 only
    assert done.stdout.count("report in") == 1
    assert "Traceback" not in done.stderr
    report = json.loads((cwd / "out" / "report.json").read_text())
    assert [s["op"] for s in report["steps"]] == ["baseline", "prune", "finetune", "quantize", "export"]


@pytest.mark.slow
def test_user_launched_torchrun(checkpoint, tmp_path):
    recipe = tmp_path / "r.lw"
    recipe.write_text("prune l1 0.5\nfinetune epochs=1 batch=89 lr=0.05\n")
    env = dict(os.environ, LWDSL_CACHE=str(tmp_path / "cache"))
    env.pop("WORLD_SIZE", None)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "lwdsl",
                           "run", str(recipe), "--model", "lenet300", "--data", DATA, "--checkpoint", str(checkpoint),
                           "--out", str(tmp_path / "out"), "--quiet", "--train-threads", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[:4000]
    lock = json.loads((tmp_path / "out" / "lwdsl.lock.json").read_text())
    assert lock["world_size"] == 2 and lock["world"]["launcher"] == "torchrun"
    assert done.stdout.count("report in") == 1
    assert not (tmp_path / "out.lock").exists()


@pytest.mark.slow
def test_more_workers_than_examples_is_exit_2(tmp_path):
    data = tmp_path / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x_train=rng.random((3, 8, 8), dtype=np.float32), y_train=np.array([0, 1, 0]),
             x_test=rng.random((2, 8, 8), dtype=np.float32), y_test=np.array([0, 1]))
    recipe = tmp_path / "r.lw"
    recipe.write_text("finetune epochs=1\n")
    env = dict(os.environ, LWDSL_CACHE=str(tmp_path / "cache"))
    env.pop("WORLD_SIZE", None)
    done = subprocess.run([*LWDSL, "run", str(recipe), "--model", "lenet300", "--data", str(data), "--baseline-epochs", "1",
                           "--out", str(tmp_path / "out"), "--workers", "4"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    assert "--workers 4 is more than the 3 training example(s)" in done.stderr
    assert done.stderr.count("error") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def _cli(args, **env):
    from typer.testing import CliRunner

    from lwdsl.cli.app import app

    return CliRunner().invoke(app, args, env=env)


def test_workers_0_is_exit_2(tmp_path):
    recipe = tmp_path / "r.lw"
    recipe.write_text("finetune epochs=1\n")
    result = _cli(["run", str(recipe), "--model", "lenet300", "--data", DATA, "--workers", "0"])
    assert result.exit_code == 2
    assert "--workers" in result.output and "Traceback" not in result.output


def test_workers_on_a_backend_without_them_is_refused(monkeypatch):
    """Both built-in backends train on several workers (tensorflow: tests/distributed); a
    backend whose support table says it cannot is refused from the table alone."""
    import dataclasses

    from lwdsl.backend import registry
    from lwdsl.runner.ranks import check_workers_backend

    check_workers_backend("tensorflow", 2)
    check_workers_backend("torch", 2)
    table = dataclasses.replace(registry.support_table("tensorflow"), workers=False)
    monkeypatch.setattr(registry, "support_table", lambda name: table)
    with pytest.raises(UsageError, match="the tensorflow backend cannot train on several workers yet"):
        check_workers_backend("tensorflow", 2)
    check_workers_backend("tensorflow", 1)


def test_workers_disagreeing_with_the_launcher_is_exit_2(tmp_path):
    recipe = tmp_path / "r.lw"
    recipe.write_text("finetune epochs=1\n")
    result = _cli(["run", str(recipe), "--model", "lenet300", "--data", DATA, "--workers", "2"],
                  WORLD_SIZE="4", RANK="0", LOCAL_RANK="0", TORCHELASTIC_RUN_ID="x")
    assert result.exit_code == 2, result.output
    assert "the launcher (torchrun) started 4 worker(s)" in result.output


def test_world_from_env():
    assert world_from_env({}) is None
    w = world_from_env({"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "j"})
    assert (w.rank, w.world, w.local_rank, w.local_world, w.launcher) == (5, 8, 1, 4, "torchrun")
    assert world_from_env({"WORLD_SIZE": "2", "RANK": "1", "LWDSL_WORKERS": "2"}).launched_by_lwdsl
    for bad in [{"WORLD_SIZE": "2"}, {"WORLD_SIZE": "two", "RANK": "0"}, {"WORLD_SIZE": "2", "RANK": "2"}]:
        with pytest.raises(UsageError):
            world_from_env(bad)
