"""The one training loop (baseline, finetune, regularize, gradual pruning) and evaluation.

Per batch: cross-entropy (plus an optional penalty), backward, gradients of pruned weights
zeroed, optimizer step, masks re-applied, so pruned weights stay exactly zero whatever the
optimizer (SGD momentum, weight decay, Adam). The data order is :func:`lwdsl.semantics.order.epoch_order`
(the run seed and the epoch; the same batches on every backend); dropout and other random
layers draw from torch's global generator, seeded with the step seed inside a forked RNG, so a
run is repeatable and the caller's random state is untouched. With ``jitter=N`` each batch's
images are translated as :mod:`lwdsl.semantics.jitter` decides (:func:`batch_images`). A loss that is NaN or infinite stops training with a
:class:`~lwdsl.errors.RunError`, and the model goes back to its weights at the start of that
epoch (the last weights known to train finitely).

After a ``quantize`` step (``handle.quant`` not empty) training keeps the quantized weights on
their grid with the straight-through estimator and fake-quantizes the inputs of static layers;
evaluation fake-quantizes those inputs too (fakequant.py).

Learning-rate schedules: :func:`lwdsl.semantics.schedules.lr_at`.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lwdsl.backend import StepContext
from lwdsl.backend.steps import training_handlers
from lwdsl.errors import RunError
from lwdsl.semantics.jitter import check_jitter, jitter_shifts, shift_images
from lwdsl.semantics.order import epoch_order, steps_per_epoch
from lwdsl.semantics.schedules import lr_at
from lwdsl.specs import TrainingOptions

from .fakequant import GridTrainer, act_hooks
from .handle import TorchModel, weight_of

__all__ = ["fit", "batch_images", "evaluate", "finetune", "regularize"]

#: What a step's own loss gets: (model, images, labels, batch indices into the training set);
#: it returns (loss to minimise, the cross-entropy part recorded in ``handle.losses``).
BatchLoss = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def _optimizer(params: list[torch.nn.Parameter], opts: TrainingOptions) -> torch.optim.Optimizer:
    if opts.optimizer == "adam":
        return torch.optim.Adam(params, lr=opts.lr, weight_decay=opts.weight_decay)
    return torch.optim.SGD(params, lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay)


def batch_images(x: np.ndarray, idx: np.ndarray, shifts: Optional[np.ndarray]) -> torch.Tensor:
    """The training images of a batch (NCHW), each moved by its row of ``shifts``
    (:mod:`lwdsl.semantics.jitter`; None: as they are)."""
    if shifts is None:
        return torch.as_tensor(x[idx])
    return torch.from_numpy(shift_images(x[idx], shifts[idx]))


def fit(
    handle: TorchModel,
    opts: TrainingOptions,
    ctx: StepContext,
    *,
    label: str,
    schedule: str = "constant",
    l1: float = 0.0,
    l1_layers: Sequence[str] = (),
    after_step: Optional[Callable[[int], bool]] = None,
    loss: Optional[BatchLoss] = None,
    extra_params: Sequence[torch.nn.Parameter] = (),
    masters: Optional[dict[str, np.ndarray]] = None,
    jitter: int = 0,
) -> list[float]:
    """Train ``handle`` in place for ``opts.epochs`` epochs on ``ctx.data``'s training set;
    returns (and keeps in ``handle.losses``) the cross-entropy of every optimizer step's batch,
    before the step (penalties and other loss terms left out).

    Args:
        label: what the step is, for progress bars and errors.
        schedule: learning-rate schedule (:func:`lwdsl.semantics.schedules.lr_at`).
        l1, l1_layers: the L1 penalty and the layers whose weights it covers (``regularize``).
        after_step: called with the count of optimizer steps done after each step; returns
            True when it changed the masks (gradual pruning updates masks there).
        loss: the step's own loss (distillation, ...) instead of plain cross-entropy.
        extra_params: parameters trained along with the model (a feature projection).
        masters: quantized layer -> the float weight its master copy starts from (canonical
            layout; ``quantize mode=qat`` gives the weights before quantization); otherwise
            the master starts at the quantized weight.
        jitter: translate each training image by up to this many pixels
            (:mod:`lwdsl.semantics.jitter`; the same images as on every backend).

    Raises:
        RunError: the loss became NaN or infinite (weights restored to the epoch's start), or
            ``jitter`` does not fit the images (before training).
    """
    why = check_jitter(jitter, ctx.data.input_shape)
    if why:
        raise RunError(f"step {ctx.index + 1} ({label}): {why}", hint="lower jitter= or leave it out")
    x, y = torch.as_tensor(ctx.data.train_x), torch.as_tensor(ctx.data.train_y)
    n, size = len(x), opts.batch
    batches = steps_per_epoch(n, size)
    total = opts.epochs * batches
    model = handle.module
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params)
    optimizer = _optimizer(params, opts)
    penalised = [weight_of(model, name) for name in l1_layers]
    losses: list[float] = []
    handle.losses = losses
    t = 0
    grid = GridTrainer(handle, masters) if handle.quant else None  # after quantize: train on the grid (STE)
    with torch.random.fork_rng(devices=[]), handle.masks.unpacked(), act_hooks(handle):
        torch.manual_seed(ctx.step_seed())
        model.train()
        for epoch in range(opts.epochs):
            good = {k: v.detach().clone() for k, v in model.state_dict().items()}
            order = torch.from_numpy(epoch_order(n, ctx.seed, epoch))
            shifts = jitter_shifts(n, jitter, ctx.seed, epoch) if jitter else None
            bar = ctx.progress(batches, f"{label} epoch {epoch + 1}/{opts.epochs}")
            try:
                for b in range(batches):
                    idx = order[b * size : (b + 1) * size]
                    for group in optimizer.param_groups:
                        group["lr"] = lr_at(schedule, opts.lr, t, total)
                    optimizer.zero_grad(set_to_none=True)
                    xb = x[idx] if shifts is None else batch_images(ctx.data.train_x, idx.numpy(), shifts)
                    if loss is not None:
                        total_loss, ce = loss(model, xb, y[idx], idx)
                    else:
                        ce = total_loss = F.cross_entropy(model(xb), y[idx])
                    if penalised:
                        total_loss = total_loss + l1 * sum(w.abs().sum() for w in penalised)
                    if not torch.isfinite(total_loss):
                        model.load_state_dict(good)
                        handle.apply_masks()
                        if grid is not None:
                            grid.reset()
                            grid.finish()
                        raise RunError(
                            f"step {ctx.index + 1} ({label}): the loss became {total_loss.item()} at epoch {epoch + 1}, "
                            f"batch {b + 1}; training stopped and the weights are back to the start of epoch {epoch + 1}",
                            hint=f"lower the learning rate (lr={opts.lr:g}) or check the data for NaN/inf",
                        )
                    total_loss.backward()
                    handle.mask_grads()
                    optimizer.step()
                    handle.apply_masks()
                    if grid is not None:
                        grid.after_step()
                    losses.append(float(ce.detach()))
                    t += 1
                    if after_step is not None:
                        after_step(t)
                    bar.update(1)
            finally:
                bar.close()
    if grid is not None:
        grid.finish()
    model.eval()
    return losses


def evaluate(handle: TorchModel, ctx: StepContext, batch: int = 1000) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over the test set, in eval mode."""
    x, y = torch.as_tensor(ctx.data.test_x), torch.as_tensor(ctx.data.test_y)
    model = handle.module
    model.eval()
    correct, loss_sum = 0, 0.0
    bar = ctx.progress(math.ceil(len(x) / batch), "evaluate")
    try:
        with torch.inference_mode(), act_hooks(handle):
            for start in range(0, len(x), batch):
                out = model(x[start : start + batch])
                yb = y[start : start + batch]
                loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
                correct += int((out.argmax(1) == yb).sum())
                bar.update(1)
    finally:
        bar.close()
    return correct / len(x), loss_sum / len(x)


#: The step handlers that only train (written once, over this backend's fit).
finetune, regularize = training_handlers(fit)
