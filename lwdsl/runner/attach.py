"""A recipe applied to your own training loop: ``lwdsl.attach`` (PyTorch) and the Keras callback.

::

    session = lwdsl.attach("prune l1 0.5 schedule=gradual epochs=2 | finetune epochs=1", model, optimizer,
                           steps_per_epoch=len(loader), data="mnist")
    for epoch in range(session.epochs):
        for x, y in loader:          # or: for idx in session.order(epoch, len(data)) (lwdsl run's batches)
            optimizer.zero_grad()
            out = model(x)
            loss = F.cross_entropy(out, y) + session.loss(x, out, y)
            loss.backward()
            optimizer.step()
            session.step(loss)
    session.finish("runs/mine")

The recipe means what it means in ``lwdsl run``: the same flows run (in a worker thread, see
:mod:`lwdsl.backend.loop`), only the optimizer steps are yours. One-shot steps (a one-shot
prune, ``quantize``) happen between the training steps, at the step they fall on; gradual
pruning updates the masks on the core's clock; masks hold after every one of your steps;
after ``quantize`` your steps train on the quantization grid (QAT); the learning rate of
every step is the recipe's (``lr=``, ``schedule=``) and each training step starts with your
optimizer's state cleared (as ``lwdsl run`` starts each with a new optimizer), unless
``own_optimizer=True``; ``session.loss``
gives what a step adds to a plain cross-entropy (distillation: ``alpha * (soft - ce)`` so that
``ce + session.loss`` is the recipe's loss; regularize: the L1 penalty; zero otherwise).

Refused before anything trains, with the reason: steps that replace the model object (a
structured removal, ``distill student=``: your optimizer would hold the old parameters),
``jitter=`` (augmentation is your loop's), ``precision=bf16|fp16`` (autocast is your loop's
forward pass), and ``distill features`` (its projections would need your optimizer). The recipe
language already refuses an ``export`` before a training step.

In a loop of your own on several processes (``torch.distributed`` initialized, e.g. under
``torchrun``, your model wrapped in ``DistributedDataParallel``): attach the module itself (not
the DDP wrapper) on every rank, with the same recipe, data and seed. Every rank runs the recipe's
flows from the same weights; after the model is attached and after every step the ranks compare
a digest of their weights, masks and codes (one all-reduce) and stop with an error if any
differs; the schedule (learning rate of every step) is the core's on every rank.
``session.order(epoch, n)`` then gives this rank's shard of each global batch
(:mod:`lwdsl.semantics.shards`); rank 0 alone measures and writes the run folder
(``finish`` returns the report there, ``{}`` on the others).

Your model may be on any one device. A torch model on a GPU trains there (your steps), and the
recipe evaluates and calibrates it there, as ``lwdsl run --device`` does; the one-shot work in
between (masks, codes, folding, exports) reads it on the CPU while your loop waits, and it is
back on its device whenever your loop runs and when the session ends, however it ends. A Keras
model stays where TensorFlow placed it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional, Union

from ..backend import get_backend
from ..backend.loop import Cancelled, UserLoop
from ..errors import RecipeError, UsageError
from ..language.plan import Recipe
from .pipeline import _execute, _prepare, _write, resolve_recipe

__all__ = ["attach", "keras_callback", "Session"]


def _refusals(plan: Recipe, in_fit: bool = False) -> list[str]:
    """Why each step of ``plan`` cannot run inside a user's loop (``in_fit``: Keras ``fit``,
    whose compiled loss a callback cannot add to)."""
    out = []
    for i, step in enumerate(plan.steps):
        where = f"step {i + 1} ({step.op})"
        if in_fit and step.op in ("distill", "regularize"):
            out.append(f"{where}: adds a loss term, and a callback cannot add to the loss model.fit compiled "
                       "(write a train_step that adds session.loss, or use lwdsl run)")
        if in_fit and step.op == "quantize" and step.trains() and getattr(step, "dtype", "") == "int8":
            out.append(f"{where}: int8 qat fake-quantizes activations inside the forward pass, which model.fit runs as compiled")
        if getattr(step, "remove", False):
            out.append(f"{where}: remove=true replaces the model's layers, and your optimizer would keep training the old ones")
        if getattr(step, "student", None) is not None:
            out.append(f"{where}: student= replaces the model, and your optimizer would keep training the old one")
        if getattr(step, "features", None):
            out.append(f"{where}: features= trains projections your optimizer does not hold")
        if getattr(step, "jitter", 0):
            out.append(f"{where}: jitter= is augmentation, which is your loop's own (apply it there)")
        opts = step.training_options()
        if opts is not None and opts.precision != "fp32":
            out.append(f"{where}: precision={opts.precision} is your loop's own forward pass (autocast it there, "
                       "or set a Keras mixed-precision policy)")
    return out


class Session:
    """The recipe attached to a training loop (built by :func:`attach`)."""

    def __init__(self, prep: Any, loop: UserLoop, out: Optional[Path], seed: int, quiet: bool, ranks: Any = None) -> None:
        from ..backend.ranks import OneProcess

        self._prep, self._loop, self._out, self._seed, self._quiet = prep, loop, out, seed, quiet
        self._ranks = ranks if ranks is not None else OneProcess()
        quiet = quiet or not self._ranks.writes
        #: each epoch of the user's loop: (the recipe step that trains in it, its epoch within that step)
        self._epochs = [(opts, e) for opts in (s.training_options() for s in prep.plan.steps) if opts for e in range(opts.epochs)]
        epochs = len(self._epochs)
        self.epochs = epochs
        self.steps_per_epoch = loop.steps_per_epoch
        self.total_steps = epochs * loop.steps_per_epoch
        self._result: Optional[tuple] = None
        self._say = (lambda *_: None) if quiet else print
        self._thread = threading.Thread(target=self._run, name="lwdsl-recipe", daemon=True)
        self._thread.start()
        loop.wait_for_recipe()  # the one-shot steps before the first training step have run

    def _run(self) -> None:
        try:
            self._result = _execute(self._prep, self._out, self._seed, 1, self._quiet or not self._ranks.writes, 0, False, self._say,
                                    loop=self._loop, ranks=self._ranks)
        except Cancelled:
            self._release()
            self._loop.finish()
            return
        except BaseException as exc:  # it reaches the user at their next step
            self._release()
            self._loop.finish(exc)
            return
        self._release()
        self._loop.finish()

    def _release(self) -> None:
        """Your model back on the device it came on (lwdsl works on it on the CPU between its passes)."""
        self._prep.backend.release(self._prep.handle)

    def order(self, epoch: int, n: int) -> Any:
        """The batches (index arrays into your ``n`` training examples) ``lwdsl run`` would train
        epoch ``epoch`` (from 0) of the session on: the core's order for that step's own epoch
        and ``batch=`` (:func:`lwdsl.semantics.order.batches`). Optional: your loop may use its own."""
        from ..semantics.order import batches
        from ..semantics.shards import shard

        opts, local = self._epochs[epoch]
        ranks = self._ranks
        if ranks.world > 1:  # this rank's shard of every global batch
            return (shard(idx, ranks.world, ranks.rank) for idx in batches(n, opts.batch, self._seed, local))
        return batches(n, opts.batch, self._seed, local)

    @property
    def done(self) -> bool:
        """Whether every step of the recipe has run."""
        return self._loop.done

    def loss(self, inputs: Any, outputs: Any, labels: Any) -> Any:
        """What the current step adds to a plain cross-entropy on this batch (0.0 between
        training steps), in the framework's autodiff."""
        trainer = self._loop.trainer
        return 0.0 if trainer is None else trainer.loss_terms(inputs, outputs, labels)

    def step(self, loss: Any = None) -> None:
        """Call after each ``optimizer.step()``. ``loss`` (the batch's loss, a number or a
        0-d tensor) is recorded, and a NaN or infinite one stops training as ``lwdsl run``
        does (the weights go back to the start of the epoch)."""
        value = None if loss is None else float(loss.detach() if hasattr(loss, "detach") else loss)
        self._loop.user_step(value)

    def finish(self, out: Optional[Union[str, Path]] = None) -> dict[str, Any]:
        """Write the run folder (compressed model, ``model.lwz``, report, lock file) to the
        ``out`` given to :func:`attach`; returns the report. Every step of the recipe must have run."""
        if not self._loop.done:
            raise UsageError(
                f"the recipe is not done: {self._loop.steps} of {self.total_steps} optimizer steps were made",
                hint=f"run {self.epochs} epochs of {self.steps_per_epoch} steps, calling session.step() after each",
            )
        self._loop._raise()
        if out is not None and (self._out is None or Path(out).resolve() != Path(self._out).resolve()):
            raise UsageError("give the run folder to attach(out=...): the recipe's exports are written as training ends")
        staging, steps, handle, baseline, state = self._result
        self._ranks.close()
        if not self._ranks.writes:  # rank 0 writes the run folder and has the report
            return {}
        report, _ = _write(self._prep, handle, steps, self._out, staging, self._seed, baseline, self._say, state=state)
        return report

    def close(self) -> None:
        """Stop the recipe where it waits (a loop that ends early); nothing is written."""
        self._loop.cancel()
        self._thread.join(timeout=60)
        self._release()
        self._ranks.close()


def attach(
    recipe: Union[str, Path, Recipe],
    model: Any,
    optimizer: Any,
    *,
    steps_per_epoch: int,
    data: Optional[str] = None,
    train: Any = None,
    test: Any = None,
    out: Optional[Union[str, Path]] = None,
    seed: int = 0,
    own_optimizer: bool = False,
    quiet: bool = False,
    backend: str = "torch",
    _in_fit: bool = False,
) -> Session:
    """Attach ``recipe`` to your own training loop of ``model`` with ``optimizer`` (see the
    module's docstring). ``model`` is trained and compressed in place (it is yours: no copy).

    Args:
        steps_per_epoch: optimizer steps in one epoch of your loop (``len(loader)``).
        data, train, test: the data the recipe measures and calibrates on: a data set name, or
            your DataLoaders (as in :func:`lwdsl.run`).
        out: the run folder :meth:`Session.finish` writes (needed when the recipe exports).
        own_optimizer: keep your optimizer's learning rate and its state across steps instead
            of the recipe's schedule and a fresh state per training step.

    Raises:
        RecipeError: a step that cannot run inside your loop (before anything trains).
    """
    if int(steps_per_epoch) < 1:
        raise UsageError(f"steps_per_epoch={steps_per_epoch}: give the optimizer steps of one epoch of your loop (>= 1)")
    plan = resolve_recipe(recipe)
    why = _refusals(plan, _in_fit)
    if why:
        raise RecipeError("this recipe cannot run inside your own training loop:\n  " + "\n  ".join(why),
                          hint="run it with lwdsl run, or change those steps")
    if out is None and any(s.op == "export" for s in plan.steps):
        raise UsageError("the recipe exports: give attach(out=FOLDER), the run folder its files go to")
    be = get_backend(backend)
    set_lr, fresh = be.user_optimizer(optimizer)
    from .ranks import join_timeout_s, timeout_s, world_from_env

    env = world_from_env()
    ranks = be.join_ranks(env.rank, env.world, timeout_s(), join_s=join_timeout_s()) if env is not None and env.world > 1 else None
    try:
        prep = _prepare(plan, None, model, be, data, train, test, None, seed, adopt=True, world=env.world if ranks else 1)
        loop = UserLoop(steps_per_epoch, None if own_optimizer else set_lr, None if own_optimizer else fresh)
        from .outdir import check_out

        return Session(prep, loop, check_out(out) if out is not None else None, seed, quiet, ranks)
    except BaseException:
        if ranks is not None:
            ranks.close()
        raise


def keras_callback(
    recipe: Union[str, Path, Recipe],
    *,
    steps_per_epoch: int,
    data: Optional[str] = None,
    train: Any = None,
    test: Any = None,
    out: Optional[Union[str, Path]] = None,
    seed: int = 0,
    own_optimizer: bool = False,
    quiet: bool = False,
) -> Any:
    """A Keras callback applying ``recipe`` to ``model.fit`` (the same meaning as
    :func:`attach`): ``model.fit(x, y, epochs=cb.epochs ..., callbacks=[cb])``. The session
    starts when training begins (``cb.session``); when ``fit`` ends with every step of the recipe
    run, the run folder ``out`` is written and ``cb.report`` holds the report. The loss a step
    records is the running mean Keras reports. Refused with the reason before training:
    ``distill`` and ``regularize`` (a callback cannot add to the compiled loss: write a
    ``train_step`` that adds ``session.loss``), ``quantize int8 mode=qat``, and what
    :func:`attach` refuses."""
    plan = resolve_recipe(recipe)
    why = _refusals(plan, in_fit=True)
    if why:
        raise RecipeError("this recipe cannot run inside model.fit:\n  " + "\n  ".join(why), hint="run it with lwdsl run, or change those steps")
    be = get_backend("tensorflow")
    state: dict[str, Any] = {}

    def begin(model: Any) -> None:
        state["session"] = callback.session = attach(
            plan, model, model.optimizer, steps_per_epoch=steps_per_epoch, data=data, train=train, test=test, out=out,
            seed=seed, own_optimizer=own_optimizer, quiet=quiet, backend="tensorflow", _in_fit=True)

    def batch_end(loss: Any) -> None:
        state["session"].step(loss)

    def end() -> None:
        session = state["session"]
        if not session.done:
            session.close()
            raise UsageError(
                f"model.fit ended before the recipe did: {session._loop.steps} of {session.total_steps} optimizer steps",
                hint=f"fit {session.epochs} epochs of {session.steps_per_epoch} steps (epochs=cb.epochs)")
        callback.report = session.finish()

    callback = be.make_callback(begin, batch_end, end)
    callback.session, callback.report = None, None
    callback.epochs = sum(opts.epochs for opts in (s.training_options() for s in plan.steps) if opts)
    return callback
