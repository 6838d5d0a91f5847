"""Computing with quantized layers in torch, with the numbers of :mod:`lwdsl.semantics.quant`
redone in float32 torch in the same order, so they agree bit for bit: :func:`act_hooks` (forward
pre-hooks fake-quantizing static layers' inputs while evaluating or training, the gradient passed
straight through; gone after the block) and :class:`GridTrainer` (the straight-through estimator
at fixed scales: float masters, ``w = snap(master)`` after every step). The rules:
docs/semantics.md ("Quantization on the torch backend", "Training after quantize")."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, Optional

import numpy as np
import torch

from lwdsl.semantics.cluster import codebook_levels
from lwdsl.semantics.quant import ActQuant, WeightQuant, requantize

from .handle import TorchModel, weight_of

__all__ = ["act_hooks", "fake_quantize_t", "snap_t", "snap_levels_t", "GridTrainer"]


def fake_quantize_t(x: torch.Tensor, aq: ActQuant) -> torch.Tensor:
    """:func:`lwdsl.semantics.quant.fake_quantize` in float32 torch (same bits)."""
    s = torch.tensor(aq.scale, dtype=torch.float32, device=x.device)
    zp = torch.tensor(float(aq.zero_point), dtype=torch.float32, device=x.device)
    q = torch.clamp(torch.round(x.to(torch.float32) / s) + zp, float(aq.qmin), float(aq.qmax))
    return (q - zp) * s


def _scale_t(q: WeightQuant, ndim: int, device: torch.device) -> torch.Tensor:
    if q.group is not None:  # one scale per group of a row's inputs: repeated to the weight's shape
        return torch.from_numpy(np.ascontiguousarray(q.full_scale())).to(device)
    s = torch.from_numpy(np.asarray(q.scale, dtype=np.float32).copy()).to(device)
    return s.reshape((-1,) + (1,) * (ndim - 1)) if s.ndim == 1 else s


def snap_t(w: torch.Tensor, q: WeightQuant) -> torch.Tensor:
    """:func:`lwdsl.semantics.quant.snap` of ``w`` at ``q``'s fixed scales, in float32 torch
    (binary, 1 bit: ``+scale`` where ``w >= 0`` or the scale is 0, else ``-scale``; a clustered
    layer: :func:`snap_levels_t` at its codebook)."""
    if q.codebook is not None:
        values, codes = codebook_levels(q.codebook)
        return snap_levels_t(w, torch.from_numpy(values).to(w.device), torch.from_numpy(codes.astype(np.int64)).to(w.device))
    s = _scale_t(q, w.dim(), w.device)
    if q.bits == 1:
        one = torch.ones((), dtype=w.dtype, device=w.device)
        return torch.where((w >= 0) | (s == 0), one, -one) * s
    qmin, qmax = q.bounds()  # the core's clamp of the layer's grid (narrow or full)
    return (torch.clamp(torch.round(w / s), float(qmin), float(qmax)) + 0.0) * s  # + 0.0: code -0 is +0, as int codes


def snap_levels_t(w: torch.Tensor, values: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``codebook[nearest_codes(w, codebook)]`` in float32 torch, from the core's
    :func:`~lwdsl.semantics.cluster.codebook_levels` (``values`` ascending, ``codes`` the lowest
    code of each): the same searchsorted, exact distances and tie rule, so the same bits."""
    i = torch.searchsorted(values, w.contiguous(), right=False)
    lo, hi = torch.clamp(i - 1, min=0), torch.clamp(i, max=values.numel() - 1)
    v_lo, v_hi = values[lo], values[hi]
    d_lo, d_hi = torch.abs(w - v_lo), torch.abs(w - v_hi)
    take_lo = (d_lo < d_hi) | ((d_lo == d_hi) & (codes[lo] < codes[hi]))
    return torch.where(take_lo, v_lo, v_hi)


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
    """The float master copies of ``handle.quant``'s layers during one training."""

    def __init__(self, handle: TorchModel, masters: Optional[dict[str, np.ndarray]] = None) -> None:
        self.handle = handle
        start = masters or {}
        with torch.no_grad():
            self.master = {
                layer: torch.from_numpy(np.array(start[layer], dtype=np.float32)).to(weight_of(handle.module, layer).device)
                if layer in start
                else weight_of(handle.module, layer).detach().clone()
                for layer in handle.quant
            }
            self.snapped = {layer: weight_of(handle.module, layer).detach().clone() for layer in handle.quant}

    def after_step(self) -> None:
        """After an optimizer step (masks re-applied): move the master by the step taken, put
        the weight back on the grid."""
        with torch.no_grad():
            for layer, q in self.handle.quant.items():
                w = weight_of(self.handle.module, layer)
                self.master[layer] += w - self.snapped[layer]
                w.copy_(snap_t(self.master[layer], q))
                if layer in self.handle.masks:
                    self.handle.apply_mask(layer)
                self.snapped[layer].copy_(w)

    def reset(self) -> None:
        """The weights were restored (a failed epoch): masters restart from them."""
        with torch.no_grad():
            for layer in self.handle.quant:
                w = weight_of(self.handle.module, layer).detach()
                self.master[layer].copy_(w)
                self.snapped[layer].copy_(w)

    def finish(self) -> None:
        """Keep the codes of the trained masters (``requantize(master)``: fixed scales or
        codebook); masked weights keep code 0."""
        for layer, q in list(self.handle.quant.items()):
            new = requantize(self.master[layer].cpu().numpy(), q)
            codes = new.codes
            if layer in self.handle.masks:
                codes = np.where(self.handle.masks[layer].numpy(), codes, np.zeros((), codes.dtype)).astype(codes.dtype)
            self.handle.quant[layer] = dataclasses.replace(q, codes=codes)
