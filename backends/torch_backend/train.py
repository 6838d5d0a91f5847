"""This backend's optimizer step (:class:`TorchTrainer`) for the core's one training loop
(:func:`lwdsl.backend.fit.fit`), and evaluation. What a step does (gradients of pruned weights
zeroed, masks re-applied, dropout seeded in a forked RNG, ``torch.autocast`` and
``GradScaler`` for ``precision=bf16|fp16``, quantized layers kept on their grid, fakequant.py)
is stated in docs/semantics.md ("Fine-tuning and masks", "Mixed precision")."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lwdsl.backend import StepContext
from lwdsl.backend.fit import Trainer
from lwdsl.backend.fit import evaluate_batches, fit as core_fit
from lwdsl.backend.steps import training_handlers
from lwdsl.language.specs import TrainingOptions
from lwdsl.semantics.precision import AUTOCAST, BACKOFF_FACTOR, GROWTH_FACTOR, GROWTH_INTERVAL, INIT_SCALE, loss_scaled

from .fakequant import GridTrainer, act_hooks
from .handle import TorchModel, on_device, weight_of

__all__ = ["fit", "TorchTrainer", "evaluate", "finetune", "regularize", "token_cross_entropy"]

#: What a step's own loss gets: (model, images, labels, batch indices into the training set);
#: it returns (loss to minimise, the cross-entropy part recorded in ``handle.losses``).
BatchLoss = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def token_cross_entropy(out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits ``out`` against labels ``y``: one label per example
    (``[B, K]`` against ``[B]``), or one target per position for a language model
    (``[B, L, V]`` against ``[B, L]``: the mean over every target token)."""
    if y.dim() > 1:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction=reduction)
    return F.cross_entropy(out, y, reduction=reduction)


def _optimizer(params: list[torch.nn.Parameter], opts: TrainingOptions) -> torch.optim.Optimizer:
    if opts.optimizer == "adam":
        return torch.optim.Adam(params, lr=opts.lr, weight_decay=opts.weight_decay)
    return torch.optim.SGD(params, lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay)


class TorchTrainer(Trainer):
    """This backend's optimizer step for the core's :func:`lwdsl.backend.fit.fit`: cross-entropy
    (or the step's own ``loss``) plus the L1 penalty, backward, gradients of pruned weights
    zeroed, the optimizer's step, masks re-applied, quantized layers put back on their grid.
    Dropout draws from torch's global generator, seeded with the step seed inside a forked RNG
    (the caller's random state is untouched)."""

    def __init__(self, handle: TorchModel, opts: TrainingOptions, ctx: StepContext, *, l1: float = 0.0,
                 l1_layers: Sequence[str] = (), loss: Optional[BatchLoss] = None, extra: Sequence[torch.nn.Parameter] = (),
                 masters: Optional[dict[str, np.ndarray]] = None, mask_layers: Sequence[str] = ()) -> None:
        self.handle, self.model, self.loss, self.l1 = handle, handle.module, loss, l1
        self.scope = contextlib.ExitStack()
        self.device = self.scope.enter_context(on_device(handle, *[m for m in extra if isinstance(m, torch.nn.Module)]))
        params = [p for p in self.model.parameters() if p.requires_grad]
        params += [q for e in extra for q in (e.parameters() if isinstance(e, torch.nn.Module) else [e])]
        self.params, self.ranks = params, ctx.ranks
        self.optimizer = _optimizer(params, opts)
        self.penalised = [weight_of(self.model, name) for name in l1_layers]
        self.grid = GridTrainer(handle, masters) if handle.quant else None  # after quantize: train on the grid (STE)
        self.scope.enter_context(torch.random.fork_rng(devices=[]))
        self.scope.enter_context(handle.masks.unpacked())
        self.scope.enter_context(act_hooks(handle))
        torch.manual_seed(ctx.step_seed())
        self.optimizer.zero_grad(set_to_none=True)
        self.dtype = getattr(torch, AUTOCAST[opts.precision]) if opts.precision in AUTOCAST else None
        self.scaler = torch.amp.GradScaler(self.device.type, init_scale=INIT_SCALE, growth_factor=GROWTH_FACTOR,
                                           backoff_factor=BACKOFF_FACTOR, growth_interval=GROWTH_INTERVAL) if loss_scaled(opts.precision) else None
        self.model.train()

    def _autocast(self) -> Any:
        """The forward pass's precision: autocast to bf16/fp16, or nothing for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _loss(self, images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(whole loss, cross-entropy) of a batch, float32: the step's own loss or the
        cross-entropy, plus the L1 penalty."""
        xb, yb = torch.from_numpy(images).to(self.device), torch.from_numpy(labels).to(self.device)
        with self._autocast():
            if self.loss is not None:
                whole, ce = self.loss(self.model, xb, yb, torch.from_numpy(idx).to(self.device))
            else:
                ce = whole = token_cross_entropy(self.model(xb), yb)
        whole = whole.float()
        return (whole + self._penalty() if self.penalised else whole), ce.float()

    def _penalty(self) -> Any:
        return self.l1 * sum(w.abs().sum() for w in self.penalised) if self.penalised else 0.0

    def step(self, images: np.ndarray, labels: np.ndarray, idx: np.ndarray, lr: float) -> tuple[float, float, bool]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        whole, ce = self._loss(images, labels, idx)
        if not torch.isfinite(whole):
            return float("nan"), whole.item(), False
        if self.scaler is not None:  # fp16: a step whose scaled gradients overflow is skipped, the scale backs off
            self.scaler.scale(whole).backward()
            self.scaler.unscale_(self.optimizer)
            self.handle.mask_grads()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            whole.backward()
            self.handle.mask_grads()
            self.optimizer.step()
        self.hold()
        return float(ce.detach()), float(whole.detach()), True

    def backward(self, images: np.ndarray, labels: np.ndarray, idx: np.ndarray, weight: float,
                 seed: int) -> tuple[float, float, bool]:
        if len(labels) == 0:  # no example of this batch here: nothing added (the rank still syncs)
            return 0.0, 0.0, True
        torch.manual_seed(seed)
        whole, ce = self._loss(images, labels, idx)
        if not torch.isfinite(whole):
            return float("nan"), whole.item(), False
        (whole * weight).backward()
        return float(ce.detach()) * weight, float(whole.detach()) * weight, True

    def sync(self) -> None:
        if self.ranks is None or self.ranks.processes <= 1:
            return
        dtype = torch.float32
        for p in self.params:
            dtype = torch.promote_types(dtype, p.dtype)
        had = torch.tensor([p.grad is not None for p in self.params], dtype=dtype, device=self.device)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype) for p in self.params] + [had])
        self.ranks.all_sum_native(flat)  # one collective, every rank, examples or not
        start = 0
        for p, some in zip(self.params, flat[-len(self.params):].tolist()):
            part = flat[start : start + p.numel()].view_as(p).to(p.dtype)
            p.grad = part.clone() if some > 0 else None
            start += p.numel()

    def update(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.handle.mask_grads()
        self.optimizer.step()
        self.hold()
        self.optimizer.zero_grad(set_to_none=True)

    def broadcast_buffers(self) -> None:
        if self.ranks is not None and self.ranks.processes > 1:
            self.ranks.broadcast_native(list(self.model.buffers()))

    def hold(self) -> None:
        self.handle.apply_masks()
        if self.grid is not None:
            self.grid.after_step()

    def loss_terms(self, inputs: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        extra = outputs.new_zeros(())
        if self.loss is not None:  # the step's own loss on the user's outputs (teachers label the batch)
            whole, _ = self.loss(lambda _x: outputs, inputs, labels, None)
            extra = whole - token_cross_entropy(outputs, labels)
        return extra + self._penalty()

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self, snapshot: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(snapshot)
        self.handle.apply_masks()
        if self.grid is not None:
            self.grid.reset()

    def checkpoint(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with torch.no_grad():
            for i, p in enumerate(self.params):
                out[f"param:{i}"] = p.detach().cpu().numpy().copy()
            for name, b in self.model.named_buffers():
                out[f"buffer:{name}"] = b.detach().cpu().numpy().copy()
        for layer in self.handle.masks:
            out[f"mask:{layer}"] = self.handle.masks[layer].cpu().numpy().copy()
        for i, held in self.optimizer.state_dict()["state"].items():
            for key, value in held.items():
                if isinstance(value, torch.Tensor):
                    out[f"opt:{i}:{key}"] = value.detach().cpu().numpy().copy()
        out["rng:cpu"] = torch.get_rng_state().numpy().copy()
        if self.device.type == "cuda":
            out["rng:cuda"] = torch.cuda.get_rng_state(self.device).numpy().copy()
        if self.grid is not None:
            for layer, master in self.grid.master.items():
                out[f"master:{layer}"] = master.cpu().numpy().copy()
        if self.scaler is not None:
            held = self.scaler.state_dict()
            out["scaler"] = np.array([held.get("scale", INIT_SCALE), held.get("_growth_tracker", 0)], dtype=np.float64)
        return out

    def resume(self, state: dict[str, np.ndarray]) -> None:
        for layer in [k[5:] for k in state if k.startswith("mask:")]:  # masks first: gradual pruning may have added some
            self.handle.masks[layer] = torch.from_numpy(np.array(state[f"mask:{layer}"], dtype=bool))
        with torch.no_grad():
            for i, p in enumerate(self.params):
                p.copy_(torch.from_numpy(state[f"param:{i}"]))
            for name, b in self.model.named_buffers():
                if f"buffer:{name}" in state:
                    b.copy_(torch.from_numpy(state[f"buffer:{name}"]))
        held: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            if key.startswith("opt:"):
                _, i, name = key.split(":", 2)
                held.setdefault(int(i), {})[name] = torch.from_numpy(np.array(value))
        self.optimizer.load_state_dict({"state": held, "param_groups": self.optimizer.state_dict()["param_groups"]})
        torch.set_rng_state(torch.from_numpy(np.array(state["rng:cpu"])))
        if "rng:cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(torch.from_numpy(np.array(state["rng:cuda"])), self.device)
        if self.grid is not None:
            with torch.no_grad():
                for layer in self.grid.master:
                    self.grid.master[layer].copy_(torch.from_numpy(state[f"master:{layer}"]))
                    self.grid.snapped[layer].copy_(weight_of(self.model, layer).detach())
        if self.scaler is not None and "scaler" in state:
            scale, tracker = (float(v) for v in state["scaler"])
            self.scaler.load_state_dict({**self.scaler.state_dict(), "scale": scale, "_growth_tracker": int(tracker)})
        self.handle.apply_masks()

    def close(self) -> None:
        try:
            if self.grid is not None:
                self.grid.finish()
        finally:
            self.scope.close()
            self.model.eval()


def fit(handle: TorchModel, opts: TrainingOptions, ctx: StepContext, **kwargs: Any) -> list[float]:
    """The core's training loop (:func:`lwdsl.backend.fit.fit`) with this backend's
    :class:`TorchTrainer`; ``loss`` is a :data:`BatchLoss`, ``extra`` torch parameters."""
    return core_fit(TorchTrainer, handle, opts, ctx, **kwargs)


def evaluate(handle: TorchModel, ctx: StepContext, batch: int = 1000) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over the test set in eval mode (the core's
    :func:`lwdsl.backend.fit.evaluate_batches`), static layers' inputs fake-quantized."""
    model = handle.module
    model.eval()
    with torch.inference_mode(), act_hooks(handle), on_device(handle) as device:

        def score(xb: np.ndarray, yb: np.ndarray) -> tuple[int, float]:
            out, y = model(torch.as_tensor(xb).to(device)), torch.as_tensor(yb).to(device)
            return int((out.argmax(-1) == y).sum()), float(token_cross_entropy(out, y, reduction="sum"))

        return evaluate_batches(ctx, score, batch)


#: The step handlers that only train (written once, over this backend's fit).
finetune, regularize = training_handlers(fit)
