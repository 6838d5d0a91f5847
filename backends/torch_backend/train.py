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
from lwdsl.backend.fit import evaluate_batches, fit as core_fit
from lwdsl.backend.trainer import OptimizerSettings, Trainer
from lwdsl.language.specs import TrainingOptions
from lwdsl.semantics.precision import AUTOCAST, BACKOFF_FACTOR, GROWTH_FACTOR, GROWTH_INTERVAL, INIT_SCALE

from .fakequant import GridTrainer, act_hooks
from .handle import TorchModel, on_device, weight_of

__all__ = ["fit", "TorchTrainer", "evaluate", "token_cross_entropy"]

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


def _optimizer(params: list[torch.nn.Parameter], lr: float, settings: OptimizerSettings) -> torch.optim.Optimizer:
    if settings.kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=settings.betas, eps=settings.eps, weight_decay=settings.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=settings.momentum, weight_decay=settings.weight_decay)


class TorchTrainer(Trainer):
    """This backend's primitives for the core's :class:`~lwdsl.backend.trainer.Trainer`:
    cross-entropy (or the step's own ``loss``) plus the L1 penalty under ``torch.autocast``,
    backward (``GradScaler`` for fp16), gradients of pruned weights zeroed, ``torch.optim``'s
    step, masks re-applied, quantized layers put back on their grid. Dropout draws from torch's
    global generator, seeded with the step seed inside a forked RNG (the caller's random state
    is untouched)."""

    def __init__(self, handle: TorchModel, opts: TrainingOptions, ctx: StepContext, *, l1: float = 0.0,
                 l1_layers: Sequence[str] = (), loss: Optional[BatchLoss] = None, extra: Sequence[torch.nn.Parameter] = (),
                 masters: Optional[dict[str, np.ndarray]] = None, mask_layers: Sequence[str] = ()) -> None:
        super().__init__(handle, opts, ctx, l1=l1, l1_layers=l1_layers, loss=loss, masters=masters, mask_layers=mask_layers)
        self.model = handle.module
        self.scope = contextlib.ExitStack()
        self.device = self.scope.enter_context(on_device(handle, *[m for m in extra if isinstance(m, torch.nn.Module)]))
        params = [p for p in self.model.parameters() if p.requires_grad]
        params += [q for e in extra for q in (e.parameters() if isinstance(e, torch.nn.Module) else [e])]
        self.params = params
        self.optimizer = _optimizer(params, opts.lr, self.optimizer_settings)
        self.penalised_w = [weight_of(self.model, name) for name in l1_layers]
        self.grid = GridTrainer(handle, self.master_start) if handle.quant else None  # after quantize: train on the grid (STE)
        self.scope.enter_context(torch.random.fork_rng(devices=[]))
        self.scope.enter_context(handle.masks.unpacked())
        self.scope.enter_context(act_hooks(handle))
        torch.manual_seed(ctx.step_seed())
        self.optimizer.zero_grad(set_to_none=True)
        self.dtype = getattr(torch, AUTOCAST[opts.precision]) if opts.precision in AUTOCAST else None
        self.scaler = torch.amp.GradScaler(self.device.type, init_scale=INIT_SCALE, growth_factor=GROWTH_FACTOR,
                                           backoff_factor=BACKOFF_FACTOR, growth_interval=GROWTH_INTERVAL) if self.scaled else None
        self.model.train()

    def _loss(self, images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(whole loss, cross-entropy) of a batch, float32 (the core's ``batch_loss``)."""
        xb, yb, ib = (torch.from_numpy(a).to(self.device) for a in (images, labels, idx))
        return self.batch_loss(self.model, xb, yb, ib)

    def _autocast(self) -> Any:
        """The forward pass's precision: autocast to bf16/fp16, or nothing for fp32."""
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else contextlib.nullcontext()

    def _float32(self, t: torch.Tensor) -> torch.Tensor:
        return t.float()

    def _penalty(self) -> Any:
        return self.l1 * sum(w.abs().sum() for w in self.penalised_w) if self.penalised_w else None

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, images: np.ndarray, labels: np.ndarray, idx: np.ndarray, lr: float) -> tuple[float, float, bool]:
        self._set_lr(lr)
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

    def _accumulate(self, images: np.ndarray, labels: np.ndarray, idx: np.ndarray, weight: float,
                    seed: int) -> tuple[float, float, bool]:
        torch.manual_seed(seed)
        whole, ce = self._loss(images, labels, idx)
        if not torch.isfinite(whole):
            return float("nan"), whole.item(), False
        (whole * weight).backward()
        return float(ce.detach()), float(whole.detach()), True

    def _pack_grads(self) -> torch.Tensor:
        dtype = torch.float32
        for p in self.params:
            dtype = torch.promote_types(dtype, p.dtype)
        had = torch.tensor([p.grad is not None for p in self.params], dtype=dtype, device=self.device)
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype) for p in self.params] + [had])

    def _unpack_grads(self, flat: torch.Tensor) -> None:
        start = 0
        for p, some in zip(self.params, flat[-len(self.params):].tolist()):
            part = flat[start : start + p.numel()].view_as(p).to(p.dtype)
            p.grad = part.clone() if some > 0 else None
            start += p.numel()

    def _apply(self, lr: float) -> None:
        self._set_lr(lr)
        self.handle.mask_grads()
        self.optimizer.step()
        self.hold()
        self.optimizer.zero_grad(set_to_none=True)

    def hold(self) -> None:
        self.handle.apply_masks()
        if self.grid is not None:
            self.grid.after_step()

    def _zero(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.new_zeros(())

    def _cross_entropy(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return token_cross_entropy(outputs, labels)

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self, snapshot: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(snapshot)
        self.handle.apply_masks()
        if self.grid is not None:
            self.grid.reset()

    # the primitives of checkpoint/resume (Trainer)
    def _tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"param": {str(i): p for i, p in enumerate(self.params)}, "buffer": dict(self.model.named_buffers()),
                "master": self.grid.master if self.grid is not None else {}}

    def _read(self, t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().copy()

    def _write(self, t: torch.Tensor, value: np.ndarray) -> None:
        with torch.no_grad():
            t.copy_(torch.from_numpy(np.array(value)))

    def _set_mask(self, layer: str, keep: np.ndarray) -> None:
        self.handle.masks[layer] = torch.from_numpy(keep)

    def _optimizer_state(self) -> dict[str, np.ndarray]:
        return {f"{i}:{key}": self._read(value) for i, held in self.optimizer.state_dict()["state"].items()
                for key, value in held.items() if isinstance(value, torch.Tensor)}

    def _load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        held: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            i, name = key.split(":", 1)
            held.setdefault(int(i), {})[name] = torch.from_numpy(np.array(value))
        self.optimizer.load_state_dict({"state": held, "param_groups": self.optimizer.state_dict()["param_groups"]})

    def _rng_state(self) -> dict[str, np.ndarray]:
        out = {"cpu": torch.get_rng_state().numpy().copy()}
        if self.device.type == "cuda":
            out["cuda"] = torch.cuda.get_rng_state(self.device).numpy().copy()
        return out

    def _load_rng_state(self, state: dict[str, np.ndarray]) -> None:
        torch.set_rng_state(torch.from_numpy(np.array(state["cpu"])))
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(torch.from_numpy(np.array(state["cuda"])), self.device)

    def _loss_scale(self) -> tuple[float, int]:
        held = self.scaler.state_dict()
        return held.get("scale", INIT_SCALE), held.get("_growth_tracker", 0)

    def _load_loss_scale(self, scale: float, good: int) -> None:
        self.scaler.load_state_dict({**self.scaler.state_dict(), "scale": scale, "_growth_tracker": good})

    def _resumed(self) -> None:
        if self.grid is not None:
            self.grid.reset(masters=False)
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