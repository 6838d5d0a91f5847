"""Computing with quantized layers in torch, with the numbers of :mod:`lwdsl.semantics.quant`
redone in float32 torch in the same order, so they agree bit for bit: :func:`act_hooks` (forward
pre-hooks fake-quantizing static layers' inputs while evaluating or training, the gradient passed
straight through; gone after the block) and :class:`GridTrainer` (the straight-through estimator
at fixed scales: float masters, ``w = snap(master)`` after every step). The rules:
docs/semantics.md ("Quantization on the torch backend", "Training after quantize")."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from lwdsl.backend.trainer import grid_codes, grid_scale, snap_to_grid
from lwdsl.semantics.quant import ActQuant, WeightQuant

from .handle import TorchModel, weight_of

__all__ = ["act_hooks", "fake_quantize_t", "snap_t", "GridTrainer"]


def fake_quantize_t(x: torch.Tensor, aq: ActQuant) -> torch.Tensor:
    """:func:`lwdsl.semantics.quant.fake_quantize` in float32 torch (same bits)."""
    s = torch.tensor(aq.scale, dtype=torch.float32, device=x.device)
    zp = torch.tensor(float(aq.zero_point), dtype=torch.float32, device=x.device)
    q = torch.clamp(torch.round(x.to(torch.float32) / s) + zp, float(aq.qmin), float(aq.qmax))
    return (q - zp) * s


#: torch's float32 ops for the core's snap (:func:`lwdsl.backend.trainer.snap_to_grid`)
_OPS = SimpleNamespace(where=torch.where, round=torch.round, clip=torch.clamp, abs=torch.abs, searchsorted=torch.searchsorted,
                        take=lambda values, i: values[i], flat=lambda x: x.reshape(-1), like=lambda x, w: x.reshape(w.shape))


def snap_t(w: torch.Tensor, q: WeightQuant, grid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The core's snap of ``w`` onto ``q``'s grid (:func:`lwdsl.backend.trainer.snap_to_grid`) in
    float32 torch; ``grid``: :func:`~lwdsl.backend.trainer.grid_scale` of ``q`` on ``w``'s
    device (None: made here)."""
    s = torch.from_numpy(grid_scale(q)).to(w.device) if grid is None else grid
    return snap_to_grid(_OPS, w, s, None if q.codebook is not None else q.bits, q.bounds())


class _StraightThrough(torch.autograd.Function):
    """Forward: exactly the fake-quantized value (``x + (fq - x).detach()`` is not, in float32);
    backward: the gradient passes unchanged (the straight-through estimator)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, aq: ActQuant) -> torch.Tensor:  # type: ignore[override]
        return fake_quantize_t(x, aq)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:  # type: ignore[override]
        return grad, None


class _FakeQuantInput:
    """A forward pre-hook: the layer's first input, fake-quantized (STE under autograd)."""

    def __init__(self, aq: ActQuant) -> None:
        self.aq = aq

    def __call__(self, module: torch.nn.Module, args: tuple) -> tuple:
        return (_StraightThrough.apply(args[0], self.aq),) + tuple(args[1:])


@contextlib.contextmanager
def act_hooks(handle: TorchModel) -> Iterator[None]:
    """Fake-quantize the inputs of ``handle.act``'s layers inside the block."""
    hooks = [
        handle.module.get_submodule(layer).register_forward_pre_hook(_FakeQuantInput(aq))
        for layer, aq in handle.act.items()
    ]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


class GridTrainer:
    """The float master copies of ``handle.quant``'s layers during one training, starting where
    the core says (``master_start(layer)``: a canonical array, or None for the weight now)."""

    def __init__(self, handle: TorchModel, master_start: Callable[[str], Optional[np.ndarray]]) -> None:
        self.handle = handle
        weights = {layer: weight_of(handle.module, layer).detach() for layer in handle.quant}
        starts = {layer: master_start(layer) for layer in handle.quant}
        self.master = {layer: w.clone() if starts[layer] is None else torch.from_numpy(starts[layer]).to(w.device)
                       for layer, w in weights.items()}
        self.snapped = {layer: w.clone() for layer, w in weights.items()}
        self.grid = {layer: torch.from_numpy(grid_scale(q)).to(weights[layer].device) for layer, q in handle.quant.items()}

    def after_step(self) -> None:
        """After an optimizer step (masks re-applied): move the master by the step taken, put
        the weight back on the grid."""
        with torch.no_grad():
            for layer, q in self.handle.quant.items():
                w = weight_of(self.handle.module, layer)
                self.master[layer] += w - self.snapped[layer]
                w.copy_(snap_t(self.master[layer], q, self.grid[layer]))
                if layer in self.handle.masks:
                    self.handle.apply_mask(layer)
                self.snapped[layer].copy_(w)

    def reset(self, masters: bool = True) -> None:
        """The weights were restored (a failed epoch): masters restart from them (``masters``
        False: resumed, the masters were loaded too; the last snap is the weights now)."""
        with torch.no_grad():
            for layer in self.handle.quant:
                w = weight_of(self.handle.module, layer).detach()
                if masters:
                    self.master[layer].copy_(w)
                self.snapped[layer].copy_(w)

    def finish(self) -> None:
        """Keep the codes of the trained masters (the core's :func:`~lwdsl.backend.trainer.grid_codes`)."""
        for layer, q in list(self.handle.quant.items()):
            keep = self.handle.masks[layer].numpy() if layer in self.handle.masks else None
            self.handle.quant[layer] = grid_codes(q, self.master[layer].cpu().numpy(), keep)
