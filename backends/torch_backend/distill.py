"""``distill`` on PyTorch: the core's flow (:mod:`lwdsl.backend.distill`) over
:class:`TorchDistillParts` (teachers loaded into the original's architecture, a student built in a
forked RNG, feature taps as forward hooks, 1x1 conv / linear projections), and the loss terms of
:mod:`lwdsl.backend.losses` over torch ops (:class:`TorchOps`, autodiff)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lwdsl.backend import StepContext
from lwdsl.backend import losses
from lwdsl.backend.distill import DistillParts, distill_handler

from .handle import TorchModel
from .models import BUILTINS
from .train import token_cross_entropy

__all__ = [
    "distill",
    "distill_loss",
    "OPS",
    "TorchDistillParts",
    "PARTS",
]


# --- the loss terms: lwdsl.backend.losses over torch ops --------------------------------------


class TorchOps:
    """:class:`lwdsl.backend.losses.TensorOps` on torch tensors (shapes always known: no ``rows``)."""

    cross_entropy = staticmethod(token_cross_entropy)  # mean over examples, or over tokens ([B, L, V])
    exp = staticmethod(torch.exp)
    where = staticmethod(torch.where)
    sqrt = staticmethod(torch.sqrt)
    mean = staticmethod(torch.mean)

    @staticmethod
    def log_softmax(x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(x, dim=-1)  # over the classes (the vocabulary for [B, L, V])

    @staticmethod
    def sum(x: torch.Tensor, axis: Optional[int] = None, keepdims: bool = False) -> torch.Tensor:
        return x.sum() if axis is None else x.sum(axis, keepdim=keepdims)

    @staticmethod
    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    @staticmethod
    def zero_diagonal(d: torch.Tensor) -> torch.Tensor:
        return d.masked_fill(torch.eye(len(d), dtype=torch.bool, device=d.device), 0.0)

    @staticmethod
    def matmul_t(u: torch.Tensor) -> torch.Tensor:
        return torch.bmm(u, u.transpose(1, 2))

    @staticmethod
    def cast(x: torch.Tensor, dtype: str) -> torch.Tensor:
        return x.to(getattr(torch, dtype))

    @staticmethod
    def take(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return table[idx]


OPS = TorchOps()

#: Every term and the weighted sum (``total``): :func:`lwdsl.backend.losses.distill_loss` on torch.
distill_loss = partial(losses.distill_loss, OPS)


# --- features --------------------------------------------------------------------------------------


class _Taps:
    """A module with forward hooks keeping the outputs of some of its sub-modules."""

    def __init__(self, module: nn.Module, names: Sequence[str]) -> None:
        self.module, self.names, self.out = module, list(names), {}
        known = dict(module.named_modules())
        self.handles = [known[name].register_forward_hook(partial(self._keep, name)) for name in names]

    def _keep(self, name: str, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.out[name] = output

    def features(self) -> list[torch.Tensor]:
        return [self.out[name] for name in self.names]


class TorchDistillParts(DistillParts):
    """PyTorch's parts of the core's ``distill`` flow."""

    ops = OPS

    def model_name(self, handle: TorchModel) -> str:
        return handle.ref

    def load_teacher(self, base: TorchModel, ctx: StepContext, path: Path) -> TorchModel:
        """The original's architecture (by name when it is a built-in or torchvision name, else a
        copy of its module), weights from ``path`` (``.lwz`` or a state dict read with
        ``weights_only=True``); the caller's random state untouched."""
        arch = base.ref if base.ref in BUILTINS or base.ref.startswith("torchvision:") else base.module
        with torch.random.fork_rng(devices=[]):
            return ctx.backend.load_model(arch, base.input_shape, base.num_classes, checkpoint=path)

    def build_student(self, name: str, ctx: StepContext) -> TorchModel:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.step_seed())
            return ctx.backend.load_model(ctx.models.get(name, name), ctx.data.input_shape, ctx.data.num_classes)

    def outputs(self, handle: TorchModel, x: np.ndarray) -> np.ndarray:
        module = handle.module
        was_training = module.training
        module.eval()
        try:
            with torch.inference_mode():
                return module(torch.from_numpy(np.ascontiguousarray(x))).float().numpy()
        finally:
            module.train(was_training)

    def layer_names(self, handle: TorchModel) -> list[str]:
        return [name for name, _ in handle.module.named_modules() if name]

    def tap(self, handle: TorchModel, names: Sequence[str], role: str) -> _Taps:
        return _Taps(handle.module, names)

    def start(self, student: TorchModel, teachers: Sequence[TorchModel], cache: Optional[np.ndarray]) -> Any:
        device = torch.device(student.device)  # the teachers label batches where the student trains
        for t in teachers:
            t.module.eval().to(device)
        return torch.from_numpy(cache).to(device) if cache is not None else None

    def stop(self, tapped: Sequence[_Taps], teachers: Sequence[TorchModel]) -> None:
        for h in [h for taps in tapped for h in taps.handles]:
            h.remove()
        for t in teachers:
            t.module.to("cpu")

    def images(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x)

    def run(self, tapped: Optional[_Taps], x: torch.Tensor, model: Any = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if model is not None:  # the student: its hooks (if any) fill as the loop's model runs
            return model(x), tapped.features() if tapped is not None else []
        x = x.to(next(tapped.module.parameters()).device)  # the probe: the student on the CPU, the teachers moved
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            return tapped.module(x), tapped.features()

    def projection(self, weight: np.ndarray, bias: np.ndarray, rank: int) -> tuple[nn.Module, list[nn.Module]]:
        c_out, c_in = weight.shape
        proj = nn.Linear(c_in, c_out) if rank == 2 else (nn.Conv2d if rank == 4 else nn.Conv1d)(c_in, c_out, 1)
        with torch.no_grad():
            proj.weight.copy_(torch.from_numpy(weight).reshape(proj.weight.shape))
            proj.bias.copy_(torch.from_numpy(bias))
        return proj, [proj]  # the module: fit moves it where the student trains


#: This backend's parts, and the ``distill`` handler: the core's flow over them.
PARTS = TorchDistillParts()
distill = distill_handler(PARTS)
