"""The one training loop: every step that trains (baseline, finetune, regularize, gradual
pruning, QAT, distillation) runs through :func:`fit`, on every backend.

The core decides the flow; a backend gives one primitive, a :class:`Trainer` (its optimizer
*step*, its autodiff, its way to save and restore weights):

- epochs of :func:`lwdsl.semantics.order.batches` (the run seed and the epoch: the same batches
  on every backend), the images of each batch taken from the data set here, translated by
  :mod:`lwdsl.semantics.jitter` when ``jitter=N``; images read from files are decoded a batch
  ahead, in a background thread (:func:`lwdsl.data.stream.prefetched`), never all at once;
- the learning rate of every optimizer step from :func:`lwdsl.semantics.schedules.lr_at`;
- one progress bar per epoch, ``"<label> epoch E/N"``;
- a loss (or gradient) that is NaN or infinite stops training: the weights go back to those the
  epoch began with (the last known to train finitely) and :class:`~lwdsl.errors.RunError`
  names the step, the epoch and the optimizer step, with the same words on every backend;
- ``after_step(t)`` after every optimizer step (gradual pruning updates masks there; it
  returns True when it changed them);
- the cross-entropy of every step's batch, before the step, is returned and kept in
  ``handle.losses``;
- at the end of every epoch, a checkpoint (``ctx.checkpoints``, kept by the runner: the
  trainer's :meth:`Trainer.checkpoint`, the epoch, the optimizer steps done and the losses so
  far); a resumed run finds it when the same step trains again and continues with the next
  epoch: the data order, jitter, learning rate and gradual-pruning clock all follow from the
  epoch and the step count, so nothing else is needed to end where an uninterrupted run ends;
- on several ranks (``ctx.ranks``, :mod:`lwdsl.backend.ranks`), every global batch is the one
  of a one-process run; each process computes the gradients of its shards
  (:mod:`lwdsl.semantics.shards`: contiguous, the loss weighted by the shard's share of the
  batch, random layers seeded per shard), then one collective sums the gradients and the
  batch's loss terms over the ranks, issued by every rank even one with no example in the
  batch; all ranks then take the same optimizer step, or all stop on the same non-finite
  loss. After the last epoch batch-norm running statistics are rank 0's on every rank.

What a trainer decides inside one step (the loss and L1 penalty, the optimizer's settings,
the quantization grid, the shards' bookkeeping, a checkpoint's layout) is the core's
:class:`~lwdsl.backend.trainer.Trainer`; its primitives are each backend's ``train.py``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..data.stream import chunks, eval_batch, eval_batch_tokens, prefetched
from ..errors import RunError
from ..semantics.jitter import check_jitter, jitter_shifts, shift_images
from ..semantics.order import batches, steps_per_epoch
from ..semantics.schedules import lr_at
from ..semantics.shards import shard, shard_seed, shard_weight
from ..language.specs import TrainingOptions
from .context import StepContext
from .trainer import Trainer

__all__ = ["Trainer", "TrainerFactory", "batch_images", "fit", "evaluate_batches"]


def batch_images(x: np.ndarray, idx: np.ndarray, shifts: Optional[np.ndarray]) -> np.ndarray:
    """The training images of a batch (NCHW), each moved by its row of ``shifts``
    (:mod:`lwdsl.semantics.jitter`; None: as they are). Every backend trains on these arrays."""
    if shifts is None:
        return x[idx]
    return shift_images(x[idx], shifts[idx])


#: Builds a backend's trainer: (handle, options, ctx, l1, l1_layers, loss, extra, masters,
#: mask_layers) -> Trainer.
TrainerFactory = Callable[..., Trainer]


def fit(
    make_trainer: TrainerFactory,
    handle: Any,
    opts: TrainingOptions,
    ctx: StepContext,
    *,
    label: str,
    schedule: str = "constant",
    l1: float = 0.0,
    l1_layers: Sequence[str] = (),
    after_step: Optional[Callable[[int], bool]] = None,
    loss: Any = None,
    extra: Sequence[Any] = (),
    masters: Optional[dict[str, np.ndarray]] = None,
    mask_layers: Sequence[str] = (),
    jitter: int = 0,
) -> list[float]:
    """Train ``handle`` in place for ``opts.epochs`` epochs on ``ctx.data``'s training set.

    Args:
        make_trainer: the backend's :data:`TrainerFactory`.
        label: what the step is, for progress bars and errors.
        schedule: learning-rate schedule (:func:`lwdsl.semantics.schedules.lr_at`).
        l1, l1_layers: the L1 penalty and the layers whose weights it covers (``regularize``).
        after_step: called with the count of optimizer steps done after each step; returns
            True when it changed the masks.
        loss: the step's own loss (distillation, ...) instead of plain cross-entropy, in the
            backend's own terms (its autodiff).
        extra: parameters trained along with the model (a feature projection).
        masters: quantized layer -> the float weight its master copy starts from (canonical
            layout; ``quantize mode=qat`` gives the weights before quantization).
        mask_layers: layers that may get masks during training (gradual pruning).
        jitter: translate each training image by up to this many pixels.

    Returns:
        The cross-entropy of every optimizer step's batch, before the step (also kept in
        ``handle.losses``).

    Raises:
        RunError: ``jitter`` does not fit the images (before training), or the loss or a
            gradient became NaN or infinite (weights restored to the epoch's start).
    """
    why = check_jitter(jitter, ctx.data.input_shape)
    if why:
        raise RunError(f"step {ctx.index + 1} ({label}): {why}", hint="lower jitter= or leave it out")
    x, y = ctx.data.train_x, np.asarray(ctx.data.train_y, dtype=np.int64)
    n, size = len(x), opts.batch
    per_epoch = steps_per_epoch(n, size) if ctx.loop is None else ctx.loop.steps_per_epoch
    total = opts.epochs * per_epoch
    losses: list[float] = []
    handle.losses = losses
    trainer = make_trainer(handle, opts, ctx, l1=l1, l1_layers=l1_layers, loss=loss, extra=extra, masters=masters,
                           mask_layers=mask_layers)
    if ctx.loop is not None:  # the user's loop makes the optimizer steps (lwdsl.attach, lwdsl.backend.loop)
        trainer = ctx.loop.wrap(trainer)
    ranks = ctx.ranks
    sharded = ranks is not None and ctx.loop is None and (ranks.world > 1 or ranks.processes > 1)
    t, first = 0, 0
    keeper = ctx.checkpoints if ctx.loop is None else None
    try:
        if keeper is not None:  # the checkpoint of an interrupted run of this training, when there is one
            saved = keeper.begin(label, opts.epochs, per_epoch)
            if saved is not None:
                trainer.resume(saved.state)
                first, t = saved.epoch, saved.t
                losses.extend(saved.losses)
        for epoch in range(first, opts.epochs):
            good = trainer.snapshot()
            shifts = jitter_shifts(n, jitter, ctx.seed, epoch) if jitter else None
            bar = ctx.progress(per_epoch, f"{label} epoch {epoch + 1}/{opts.epochs}")
            try:
                if sharded:  # only this process's shards of each global batch are read
                    order = batches(n, size, ctx.seed, epoch)
                    feed = ((idx, xs, None) for idx, xs in prefetched(x, order, lambda idx: [
                        batch_images(x, shard(idx, ranks.world, r), shifts) for r in ranks.shards]))
                elif ctx.loop is None:
                    order = batches(n, size, ctx.seed, epoch)
                    feed = ((idx, xb, y[idx]) for idx, xb in prefetched(x, order, lambda idx: batch_images(x, idx, shifts)))
                else:  # the user's loop has the batches (lwdsl.attach)
                    feed = ((None, None, None) for _ in range(per_epoch))
                for b, (idx, xb, yb) in enumerate(feed):
                    lr = lr_at(schedule, opts.lr, t, total)
                    if sharded:
                        ce, whole, ok = _sharded_step(trainer, ranks, idx, xb, y, lr, ctx.step_seed(), t)
                    else:
                        ce, whole, ok = trainer.step(xb, yb, idx, lr)
                    if not ok:
                        trainer.restore(good)
                        if sharded:  # this process's shards: their images and their examples' indices
                            xb, idx = np.concatenate(xb), np.concatenate([shard(idx, ranks.world, r) for r in ranks.shards])
                        what = _what_went_wrong(whole, xb, idx)
                        raise RunError(
                            f"step {ctx.index + 1} ({label}): {what} at epoch {epoch + 1}, "
                            f"step {b + 1} of {per_epoch}; training stopped and the weights are back to the start of "
                            f"epoch {epoch + 1}",
                            hint=f"lower the learning rate (lr={opts.lr:g}), or check the data for NaN/inf",
                        )
                    losses.append(float(ce))
                    t += 1
                    if after_step is not None and after_step(t):
                        trainer.masks_changed()
                    bar.update(1)
            finally:
                bar.close()
            if keeper is not None:
                keeper.epoch_done(epoch + 1, t, losses, trainer.checkpoint)
        if sharded and ranks.processes > 1:
            trainer.broadcast_buffers()
    finally:
        trainer.close()
    return losses


def _what_went_wrong(loss: float, xb: Optional[np.ndarray], idx: Optional[np.ndarray]) -> str:
    """Why a step failed, cause first: a batch holding NaN/inf pixels is said as such (the two
    frameworks' max pooling treat a NaN differently: torch passes it on, TensorFlow drops it,
    so the loss alone would read differently on each backend)."""
    if xb is not None:
        bad = ~np.isfinite(np.asarray(xb).reshape(len(xb), -1)).all(axis=1)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            example = f"training example {int(idx[first])}" if idx is not None else f"image {first + 1} of the batch"
            return f"{example} holds NaN or infinite values (the loss was {loss:g})"
    return f"the loss became {loss}" if not np.isfinite(loss) else f"a gradient became NaN or infinite (the loss was {loss:g})"


def _sharded_step(trainer: Trainer, ranks: Any, idx: np.ndarray, images: list[np.ndarray], y: np.ndarray, lr: float,
                  step_seed: int, t: int) -> tuple[float, float, bool]:
    """One optimizer step of a global batch ``idx`` on several ranks: this process's shards'
    gradients (``images`` in the order of ``ranks.shards``), one collective summing them and one
    summing (cross-entropy, whole loss, shards not finite), then the step on every rank or on
    none."""
    ce = whole = bad = 0.0
    for r, xs in zip(ranks.shards, images):
        part = shard(idx, ranks.world, r)
        c, w, ok = trainer.backward(xs, y[part], part, shard_weight(len(part), len(idx)), shard_seed(step_seed, t, r))
        if ok:
            ce, whole = ce + c, whole + w
        else:
            bad += 1
    trainer.sync()
    summed = ranks.all_sum(np.array([ce, whole, bad], dtype=np.float64))
    if summed[2] > 0 or not np.isfinite(summed[1]):
        return float("nan"), float("nan"), False
    trainer.update(lr)
    return float(summed[0]), float(summed[1]), True


def evaluate_batches(ctx: StepContext, score: Callable[[np.ndarray, np.ndarray], tuple[int, float]],
                     batch: int = 1000) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over the test set, for every backend: batches of
    :func:`~lwdsl.data.stream.eval_batch` images (of token sequences: :func:`eval_batch_tokens`,
    scored over every target token), decoded batch by batch, one progress bar ``evaluate``;
    ``score(images NCHW, labels)`` is the backend's: (correct predictions, summed
    cross-entropy) of one batch in inference mode."""
    x, y = ctx.data.test_x, ctx.data.test_y
    batch = eval_batch(x.shape[1:], batch) if ctx.data.task != "lm" else eval_batch_tokens(x.shape[1:], ctx.data.num_classes)
    correct, loss_sum = 0, 0.0
    bar = ctx.progress(-(-len(x) // batch), "evaluate")
    try:
        for start, xb in chunks(x, batch):
            right, lost = score(xb, np.asarray(y[start : start + len(xb)]))
            correct, loss_sum = correct + int(right), loss_sum + float(lost)
            bar.update(1)
    finally:
        bar.close()
    count = int(np.prod(np.shape(y))) if len(x) else 0
    return correct / max(count, 1), loss_sum / max(count, 1)
