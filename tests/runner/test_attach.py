"""``lwdsl.attach``: a recipe applied to the user's own training loop means what ``lwdsl run``
means (same masks, same weights for the same data order), and what cannot run inside a user's
loop is refused before anything trains."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import lwdsl  # noqa: E402
from lwdsl.data import load_data  # noqa: E402
from lwdsl.errors import RecipeError, RunError, UsageError  # noqa: E402
from lwdsl.semantics.order import steps_per_epoch  # noqa: E402

DATA = "synthetic:1,12,12:4"


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))


def _plain_loop(recipe: str, model: torch.nn.Module, *, batch: int = 64, loss_of=None, **kw):
    """The loop a user writes, with the core's data order; returns the session after finish."""
    ds = load_data(DATA)
    opt = torch.optim.SGD(model.parameters(), lr=123.0, momentum=0.9)  # the recipe's lr replaces it
    session = lwdsl.attach(recipe, model, opt, steps_per_epoch=steps_per_epoch(len(ds.train_x), batch), data=DATA,
                           quiet=True, **kw)
    for epoch in range(session.epochs):
        model.train()
        for idx in session.order(epoch, len(ds.train_x)):
            x, y = torch.from_numpy(ds.train_x[idx]), torch.from_numpy(ds.train_y[idx])
            opt.zero_grad()
            out = model(x)
            loss = (loss_of or F.cross_entropy)(out, y) + session.loss(x, out, y)
            loss.backward()
            opt.step()
            session.step(loss)
    return session


def _weights(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("recipe", [
    "prune l1 0.6 schedule=gradual epochs=2 frequency=5 lr=0.05 | finetune epochs=1 lr=0.02 schedule=cosine",
    "prune l1 0.5 | distill T=2 alpha=0.5 epochs=1 lr=0.05",
    "regularize l1=0.0005 epochs=1 lr=0.05",
])
def test_a_recipe_in_a_plain_loop_gives_the_masks_and_weights_of_lwdsl_run(recipe):
    ran = lwdsl.run(recipe, _net(), data=DATA, quiet=True, latency=False)
    mine = _net()
    session = _plain_loop(recipe, mine)
    assert session.done
    report = session.finish()
    want, got = _weights(ran.module), _weights(mine)
    assert set(want) == set(got)
    for name in want:
        assert np.array_equal(want[name] == 0, got[name] == 0), name  # the same masks, bit for bit
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6, err_msg=name)
    assert [s["op"] for s in report["steps"]] == [s["op"] for s in ran.report["steps"]]
    assert [s["metrics"]["accuracy"] for s in report["steps"]] == [s["metrics"]["accuracy"] for s in ran.report["steps"]]


def test_gradual_pruning_reaches_its_amount_on_the_users_model():
    model = _net()
    session = _plain_loop("prune l1 0.6 schedule=gradual epochs=1 frequency=5 lr=0.05", model)
    session.finish()
    w = model[1].weight.detach().numpy()
    assert session.total_steps == steps_per_epoch(len(load_data(DATA).train_x), 64)
    assert (w == 0).mean() == pytest.approx(0.6, abs=1 / w.size)


def test_between_training_steps_the_recipe_adds_no_loss():
    model = _net()
    session = _plain_loop("regularize l1=0.001 epochs=1", model)
    with torch.no_grad():
        x = torch.zeros(2, 1, 12, 12)
        assert float(session.loss(x, model(x), torch.zeros(2, dtype=torch.long))) == 0.0


def test_one_shot_steps_run_between_training_steps_on_the_users_model_itself():
    model = _net()
    session = _plain_loop("prune l1 0.5 | finetune epochs=1 lr=0.05 | quantize int8", model)
    report = session.finish()
    assert [s["op"] for s in report["steps"]] == ["baseline", "prune", "finetune", "quantize"]
    w = model[1].weight.detach().numpy()
    pruned = report["steps"][1]["metrics"]
    assert (w == 0).mean() >= 0.5  # the masks held through the user's steps (int8 codes may add zeros)
    assert report["steps"][3]["metrics"]["accuracy"] >= pruned["accuracy"] - 0.05


@pytest.mark.parametrize("recipe, words", [
    ('prune l2 0.5 structured=filters remove=true on "1" | finetune epochs=1', "remove=true replaces the model's layers"),
    ("distill student=lenet300 epochs=1", "student= replaces the model"),
    ("finetune epochs=1 jitter=2", "jitter= is augmentation"),
    ("distill T=2 features=[a->b] epochs=1", "features= trains projections"),
])
def test_what_cannot_run_in_a_users_loop_is_refused_before_training(recipe, words):
    model = _net()
    before = _weights(model)
    with pytest.raises(RecipeError, match="cannot run inside your own training loop") as err:
        lwdsl.attach(recipe, model, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=4, data=DATA, quiet=True)
    assert words in err.value.message
    assert all(np.array_equal(before[k], v) for k, v in _weights(model).items())


def test_a_nan_loss_stops_training_as_lwdsl_run_does_and_finish_refuses_an_unfinished_recipe():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    session = lwdsl.attach("finetune epochs=1", model, opt, steps_per_epoch=4, data=DATA, quiet=True)
    with pytest.raises(UsageError, match="0 of 4 optimizer steps"):
        session.finish()
    session.step(1.0)
    with pytest.raises(RunError, match="the loss became nan at epoch 1, step 2 of 4"):
        session.step(float("nan"))


def test_a_step_past_the_recipes_training_is_refused():
    model = _net()
    session = lwdsl.attach("finetune epochs=1", model, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=2,
                           data=DATA, quiet=True)
    session.step(1.0)
    session.step(1.0)
    assert session.done
    with pytest.raises(RunError, match="the recipe's training is over"):
        session.step(1.0)
