"""``lwdsl.attach`` in a user's own DistributedDataParallel loop (issue 22): 2 gloo processes
started by torch's elastic launcher, each the user's script (its own process group, its DDP
wrapper, its loop over this rank's shard of each batch). The masks and the schedule (the
learning rate of every optimizer step) agree on every rank, and the result is one process's
``lwdsl run`` within the conformance limits (same masks, weights within 1e-4 relative)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lwdsl  # noqa: E402

DATA = "synthetic:1,12,12:4"
RECIPE = "prune l1 0.6 schedule=gradual epochs=2 frequency=5 lr=0.05 | finetune epochs=1 lr=0.02 schedule=cosine"


def _net() -> "torch.nn.Module":
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))


def _user_script(folder: str) -> None:
    """What a user runs on every rank (under torchrun)."""
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    from lwdsl.data import load_data
    from lwdsl.semantics.order import steps_per_epoch

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    ds = load_data(DATA)
    model = _net()
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=1.0, momentum=0.9)
    session = lwdsl.attach(RECIPE, model, opt, steps_per_epoch=steps_per_epoch(len(ds.train_x), 64), data=DATA, quiet=True,
                           out=Path(folder) / "out")
    lrs, masks_seen = [], []
    for epoch in range(session.epochs):
        ddp.train()
        for idx in session.order(epoch, len(ds.train_x)):  # this rank's shard of each global batch of 64
            x, y = torch.from_numpy(ds.train_x[idx]), torch.from_numpy(ds.train_y[idx])
            opt.zero_grad()
            out = ddp(x)
            loss = F.cross_entropy(out, y) + session.loss(x, out, y)
            loss.backward()
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            session.step(loss)
            masks_seen.append(int((model[1].weight == 0).sum()))
    report = session.finish(Path(folder) / "out")
    np.savez(Path(folder) / f"rank{rank}.npz", **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps({"lrs": lrs, "zeros": masks_seen, "report": bool(report)}))
    dist.destroy_process_group()


@pytest.mark.slow
def test_attach_in_a_users_ddp_loop_agrees_on_every_rank(tmp_path, monkeypatch):
    from lwdsl.backends.torch_backend.ranks import launch

    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    failed = launch(2, _user_script, (str(tmp_path),), 300)
    assert failed == {}
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    weights = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    assert ranks[0]["lrs"] == ranks[1]["lrs"] and len(set(ranks[0]["lrs"])) > 1  # the schedule, step by step
    assert ranks[0]["zeros"] == ranks[1]["zeros"] and ranks[0]["zeros"][-1] > ranks[0]["zeros"][0]  # gradual masks, in step
    assert ranks[0]["report"] and not ranks[1]["report"]  # rank 0 writes and reports
    assert (tmp_path / "out" / "report.json").is_file()
    one = lwdsl.run(RECIPE, _net(), data=DATA, quiet=True, latency=False)
    want = {k: v.detach().numpy() for k, v in one.module.state_dict().items()}
    for name in want:
        assert np.array_equal(weights[0][name], weights[1][name]), name  # every rank holds the same model
        assert np.array_equal(weights[0][name] == 0, want[name] == 0), name  # one process's masks
        w = want[name].astype(np.float64)
        assert np.linalg.norm(weights[0][name] - w) <= 1e-4 * np.linalg.norm(w), name
