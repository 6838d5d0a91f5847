"""A recipe applied to the user's own training loop (``lwdsl.attach``), written once.

The recipe runs as it does in ``lwdsl run`` (every op's flow, the core's schedules, the gradual
clock, the one-shot steps, measurements), in a worker thread; only the optimizer steps are the
user's. Where :func:`lwdsl.backend.fit.fit` would make a step, it hands control to the user's
loop (:meth:`UserLoop.wait_for_user`) and waits until the user has made one (their forward,
loss, backward and ``optimizer.step()``, then ``session.step()``); the backend's trainer then
does what it does after its own optimizer steps (:meth:`~lwdsl.backend.fit.Trainer.hold`:
masks re-applied, quantized weights back on their grid), and the flow goes on: the gradual
clock updates masks, the next step of the recipe starts when this one has had its epochs.

Two threads never run at once: each waits for the other's turn (two semaphores). A failure in
the recipe's thread reaches the user at their next ``session.step()``.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable, Optional

from ..errors import RunError
from .fit import Trainer

__all__ = ["UserLoop", "LoopTrainer", "Cancelled"]


class Cancelled(BaseException):
    """The user's session was closed while the recipe waited for a step (ends its thread)."""


class UserLoop:
    """The meeting point of the recipe's thread and the user's loop.

    Args:
        steps_per_epoch: the optimizer steps of one epoch of the user's loop.
        set_lr: sets the learning rate of the user's optimizer (the recipe's schedule), or
            None to leave the user's own.
        fresh: clears the user's optimizer state (momentum, Adam's moments) as each training
            step starts, as ``lwdsl run`` starts each with a new optimizer; or None.
    """

    def __init__(self, steps_per_epoch: int, set_lr: Optional[Callable[[float], None]] = None,
                 fresh: Optional[Callable[[], None]] = None) -> None:
        self.steps_per_epoch = int(steps_per_epoch)
        self.set_lr, self.fresh = set_lr, fresh
        self.trainer: Optional[Trainer] = None  # the backend's trainer of the training step now
        self.steps = 0  # the user's optimizer steps the recipe has taken
        self.done = False
        self.error: Optional[BaseException] = None
        self._loss: Optional[float] = None
        self._cancelled = False
        self._user = threading.Semaphore(0)  # the user's loop may go on
        self._recipe = threading.Semaphore(0)  # the recipe's thread may go on

    # --- the recipe's thread ---------------------------------------------------------------

    def wrap(self, trainer: Trainer) -> "LoopTrainer":
        """``trainer`` with its optimizer steps made by the user's loop (for :func:`~lwdsl.backend.fit.fit`)."""
        return LoopTrainer(self, trainer)

    def wait_for_user(self, lr: float) -> Optional[float]:
        """Hand one optimizer step to the user (at ``lr``) and wait for it; the loss they gave."""
        if self.set_lr is not None:
            self.set_lr(lr)
        self._user.release()
        self._recipe.acquire()
        if self._cancelled:
            raise Cancelled()
        self.steps += 1
        return self._loss

    def finish(self, error: Optional[BaseException] = None) -> None:
        """The recipe's thread is done (its last act)."""
        self.done, self.error = True, error
        self._user.release()

    # --- the user's thread -----------------------------------------------------------------

    def wait_for_recipe(self) -> None:
        """Wait until the recipe wants the next step (or is done); raise what failed there."""
        self._user.acquire()
        self._raise()

    def user_step(self, loss: Optional[float]) -> None:
        """One optimizer step of the user's is done: let the recipe go on to the next one."""
        self._raise()
        if self.done:
            raise RunError(
                f"the recipe's training is over (after {self.steps} optimizer steps): this step is not part of it",
                hint="stop the loop after session.total_steps steps, then call session.finish(out)",
            )
        self._loss = loss
        self._recipe.release()
        self._user.acquire()
        self._raise()

    def cancel(self) -> None:
        """End the recipe's thread where it waits (the session is closed unfinished)."""
        if not self.done:
            self._cancelled = True
            self._recipe.release()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error


class LoopTrainer(Trainer):
    """A backend's trainer whose optimizer steps are the user's (see the module's docstring)."""

    def __init__(self, loop: UserLoop, inner: Trainer) -> None:
        self.loop, self.inner = loop, inner
        loop.trainer = inner
        if loop.fresh is not None:
            loop.fresh()

    def step(self, images: Any, labels: Any, idx: Any, lr: float) -> tuple[float, float, bool]:
        loss = self.loop.wait_for_user(lr)
        self.inner.hold()
        value = float("nan") if loss is None else float(loss)
        return value, value, loss is None or math.isfinite(value)

    def snapshot(self) -> Any:
        return self.inner.snapshot()

    def restore(self, snapshot: Any) -> None:
        self.inner.restore(snapshot)

    def masks_changed(self) -> None:
        self.inner.masks_changed()

    def close(self) -> None:
        self.loop.trainer = None
        self.inner.close()
