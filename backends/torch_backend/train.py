"""The one training loop (baseline, finetune, regularize, gradual pruning) and evaluation.

Per batch: cross-entropy (plus an optional penalty), backward, gradients of pruned weights
zeroed, optimizer step, masks re-applied, so pruned weights stay exactly zero whatever the
optimizer (SGD momentum, weight decay, Adam). The data order is :func:`lwdsl.order.epoch_order`
(the run seed and the epoch; the same batches on every backend); dropout and other random
layers draw from torch's global generator, seeded with the step seed inside a forked RNG, so a
run is repeatable and the caller's random state is untouched. A loss that is NaN or infinite stops training with a
:class:`~lwdsl.errors.RunError`, and the model goes back to its weights at the start of that
epoch (the last weights known to train finitely).

Learning-rate schedules, per optimizer step t of T: ``constant``; ``cosine``:
``lr * (1 + cos(pi t / T)) / 2``; ``step``: ``lr`` divided by 10 at t = T/2 and again at 3T/4.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from lwdsl.backend import StepContext
from lwdsl.errors import RunError
from lwdsl.order import epoch_order, steps_per_epoch
from lwdsl.specs import TrainingOptions

from .handle import TorchModel

__all__ = ["fit", "evaluate", "lr_at"]


def lr_at(schedule: str, lr: float, t: int, total: int) -> float:
    """The learning rate at optimizer step ``t`` (0-based) of ``total``."""
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * t / total))
    if schedule == "step":
        return lr * 0.1 ** ((t >= total / 2) + (t >= total * 3 / 4))
    return lr


def _optimizer(params: list[torch.nn.Parameter], opts: TrainingOptions) -> torch.optim.Optimizer:
    if opts.optimizer == "adam":
        return torch.optim.Adam(params, lr=opts.lr, weight_decay=opts.weight_decay)
    return torch.optim.SGD(params, lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay)


def fit(
    handle: TorchModel,
    opts: TrainingOptions,
    ctx: StepContext,
    *,
    op: str,
    schedule: str = "constant",
    penalty: Optional[Callable[[], torch.Tensor]] = None,
    after_step: Optional[Callable[[int], None]] = None,
) -> None:
    """Train ``handle`` in place for ``opts.epochs`` epochs on ``ctx.data``'s training set.

    Args:
        op: the step's op name, for progress bars and errors.
        schedule: learning-rate schedule (constant, cosine, step).
        penalty: a term added to the loss (regularize's L1).
        after_step: called with the count of optimizer steps done after each step (gradual
            pruning updates masks there).

    Raises:
        RunError: the loss became NaN or infinite (weights restored to the epoch's start).
    """
    x, y = torch.as_tensor(ctx.data.train_x), torch.as_tensor(ctx.data.train_y)
    n, size = len(x), opts.batch
    batches = steps_per_epoch(n, size)
    total = opts.epochs * batches
    model = handle.module
    optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], opts)
    t = 0
    with torch.random.fork_rng(devices=[]), handle.masks.unpacked():
        torch.manual_seed(ctx.step_seed())
        model.train()
        for epoch in range(opts.epochs):
            good = {k: v.detach().clone() for k, v in model.state_dict().items()}
            order = torch.from_numpy(epoch_order(n, ctx.seed, epoch))
            bar = ctx.progress(batches, f"{op} epoch {epoch + 1}/{opts.epochs}")
            try:
                for b in range(batches):
                    idx = order[b * size : (b + 1) * size]
                    for group in optimizer.param_groups:
                        group["lr"] = lr_at(schedule, opts.lr, t, total)
                    optimizer.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(model(x[idx]), y[idx])
                    if penalty is not None:
                        loss = loss + penalty()
                    if not torch.isfinite(loss):
                        model.load_state_dict(good)
                        handle.apply_masks()
                        raise RunError(
                            f"step {ctx.index + 1} ({op}): the loss became {loss.item()} at epoch {epoch + 1}, "
                            f"batch {b + 1}; training stopped and the weights are back to the start of epoch {epoch + 1}",
                            hint=f"lower the learning rate (lr={opts.lr:g}) or check the data for NaN/inf",
                        )
                    loss.backward()
                    handle.mask_grads()
                    optimizer.step()
                    handle.apply_masks()
                    t += 1
                    if after_step is not None:
                        after_step(t)
                    bar.update(1)
            finally:
                bar.close()
    model.eval()


def evaluate(handle: TorchModel, ctx: StepContext, batch: int = 1000) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over the test set, in eval mode."""
    x, y = torch.as_tensor(ctx.data.test_x), torch.as_tensor(ctx.data.test_y)
    model = handle.module
    model.eval()
    correct, loss_sum = 0, 0.0
    bar = ctx.progress(math.ceil(len(x) / batch), "evaluate")
    try:
        with torch.inference_mode():
            for start in range(0, len(x), batch):
                out = model(x[start : start + batch])
                yb = y[start : start + batch]
                loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
                correct += int((out.argmax(1) == yb).sum())
                bar.update(1)
    finally:
        bar.close()
    return correct / len(x), loss_sum / len(x)
