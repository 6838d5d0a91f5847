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


def _plain_loop(recipe: str, model: torch.nn.Module, *, batch: int = 64, loss_of=None, device: str = "cpu", **kw):
    """The loop a user writes, with the core's data order, its batches on ``device``; returns
    the session (every step made)."""
    ds = load_data(DATA)
    opt = torch.optim.SGD(model.parameters(), lr=123.0, momentum=0.9)  # the recipe's lr replaces it
    session = lwdsl.attach(recipe, model, opt, steps_per_epoch=steps_per_epoch(len(ds.train_x), batch), data=DATA,
                           quiet=True, **kw)
    for epoch in range(session.epochs):
        model.train()
        for idx in session.order(epoch, len(ds.train_x)):
            x, y = torch.from_numpy(ds.train_x[idx]).to(device), torch.from_numpy(ds.train_y[idx]).to(device)
            assert {p.device.type for p in model.parameters()} == {torch.device(device).type}  # where the user put it
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
    "prune l1 0.5 | quantize int8 mode=qat epochs=1",
    "quantize int4 mode=qat epochs=1",
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


def _keras_net():
    from lwdsl.backends.tf_backend._tf import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(4)])


@pytest.mark.slow
def test_the_keras_callback_in_model_fit_gives_the_masks_and_weights_of_lwdsl_run(tmp_path):
    pytest.importorskip("tensorflow")
    from lwdsl.backends.tf_backend._tf import keras
    from lwdsl.semantics.order import batches

    recipe = "prune l1 0.6 schedule=gradual epochs=2 frequency=5 lr=0.05 | finetune epochs=1 lr=0.05 | quantize int8 | export tflite"
    ds = load_data(DATA)
    x = np.moveaxis(ds.train_x, 1, -1)
    orders = [list(batches(len(x), 64, 0, e)) for e in (0, 1, 0)]  # each training step's own epochs, as lwdsl run

    class Ordered(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def __len__(self):
            return len(orders[0])

        def __getitem__(self, i):
            idx = orders[self.epoch][i]
            return x[idx], ds.train_y[idx]

    data = Ordered()

    class Epoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            data.epoch = epoch

    ran = lwdsl.run(recipe, _keras_net(), backend="tensorflow", data=DATA, quiet=True, latency=False, out=tmp_path / "run")
    model = _keras_net()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = lwdsl.keras_callback(recipe, steps_per_epoch=len(orders[0]), data=DATA, quiet=True, out=tmp_path / "fit")
    assert cb.epochs == 3
    model.fit(data, epochs=cb.epochs, callbacks=[Epoch(), cb], verbose=0, shuffle=False)
    for want, got in zip(ran.module.get_weights(), model.get_weights()):
        assert np.array_equal(want == 0, got == 0)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert [s["op"] for s in cb.report["steps"]] == ["baseline", "prune", "finetune", "quantize", "export"]
    assert (tmp_path / "fit" / "report.json").is_file() and (tmp_path / "fit" / "model.lwz").is_file()
    assert (model.layers[1].kernel.numpy() == 0).mean() >= 0.6


@pytest.mark.parametrize("recipe, words", [
    ("distill T=2 epochs=1", "a callback cannot add to the loss model.fit compiled"),
    ("quantize int8 mode=qat epochs=1", "int8 qat fake-quantizes activations"),
])
def test_the_keras_callback_refuses_what_model_fit_cannot_do(recipe, words):
    with pytest.raises(RecipeError, match="cannot run inside model.fit") as err:
        lwdsl.keras_callback(recipe, steps_per_epoch=4, data=DATA)
    assert words in err.value.message


def test_a_model_on_several_devices_is_refused_before_anything_runs():
    net = _net()
    net[3].to("meta")  # one layer elsewhere: the only second device a CPU-only machine has
    with pytest.raises(UsageError, match="on several devices"):
        lwdsl.attach("finetune epochs=1", net, torch.optim.SGD(net.parameters(), lr=0.1), steps_per_epoch=4, data=DATA, quiet=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine: attach on a GPU is checked where one is lent")
def test_a_model_on_the_gpu_is_trained_there_and_stays_there(tmp_path):
    recipe = "prune l1 0.6 schedule=gradual epochs=1 frequency=5 lr=0.05 | finetune epochs=1 lr=0.02 | quantize int8 mode=qat epochs=1"
    on_cpu = _net()
    _plain_loop(recipe, on_cpu).finish()
    on_gpu = _net().cuda()
    session = _plain_loop(recipe, on_gpu, device="cuda", out=tmp_path / "run")  # asserts the model is on cuda at each step
    report = session.finish()
    assert {p.device.type for p in on_gpu.parameters()} == {"cuda"}  # given back where it came from
    assert [s["op"] for s in report["steps"]] == ["baseline", "prune", "finetune", "quantize"]
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert {t.device.type for t in saved.values()} == {"cpu"}
    for (name, want), got in zip(_weights(on_cpu).items(), on_gpu.state_dict().values()):
        got = got.detach().cpu().numpy()
        if name.endswith("weight"):  # pruned as on the CPU (GPU rounding may move a weight at the cut)
            assert abs((got == 0).mean() - (want == 0).mean()) < 0.01, name
        np.testing.assert_allclose(got, want, atol=1e-2)
