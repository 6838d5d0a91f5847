"""``distill`` on PyTorch: the core's flow (:mod:`lwdsl.backend.distill`) over
:class:`TorchDistillParts` (teachers loaded into the original's architecture, a student built in a
forked RNG, feature taps as forward hooks, 1x1 conv / linear projections), and the loss terms of
:mod:`lwdsl.backend.losses` over torch ops (:class:`TorchOps`, autodiff)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lwdsl.backend import StepContext
from lwdsl.backend import losses
from lwdsl.backend.distill import DistillParts, DistillTraining, distill_handler, no_feature_layer, projection_channels
from lwdsl.semantics import distill as core
from lwdsl.language.specs import DistillSpec

from .handle import TorchModel
from .models import BUILTINS
from .train import fit, token_cross_entropy

__all__ = [
    "distill",
    "distill_loss",
    "OPS",
    "TorchDistillParts",
    "PARTS",
]


# --- the loss terms: lwdsl.backend.losses over torch ops --------------------------------------


class TorchOps:
    """:class:`lwdsl.backend.losses.TensorOps` on torch tensors."""

    cross_entropy = staticmethod(token_cross_entropy)  # mean over examples, or over tokens ([B, L, V])
    exp = staticmethod(torch.exp)
    where = staticmethod(torch.where)
    zeros_like = staticmethod(torch.zeros_like)
    abs = staticmethod(torch.abs)
    sqrt = staticmethod(torch.sqrt)
    mean = staticmethod(torch.mean)

    @staticmethod
    def log_softmax(x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(x, dim=-1)  # over the classes (the vocabulary for [B, L, V])

    @staticmethod
    def sum(x: torch.Tensor, axis: Optional[int] = None, keepdims: bool = False) -> torch.Tensor:
        return x.sum() if axis is None else x.sum(axis, keepdim=keepdims)

    @staticmethod
    def maximum(x: torch.Tensor, floor: float) -> torch.Tensor:
        return x.clamp(min=floor)

    @staticmethod
    def rows(x: torch.Tensor) -> int:
        return x.shape[0]

    static_rows = rows

    @staticmethod
    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    @staticmethod
    def zero_diagonal(d: torch.Tensor) -> torch.Tensor:
        return d.masked_fill(torch.eye(len(d), dtype=torch.bool, device=d.device), 0.0)

    @staticmethod
    def matmul_t(u: torch.Tensor) -> torch.Tensor:
        return torch.bmm(u, u.transpose(1, 2))


OPS = TorchOps()


def distill_loss(spec: DistillSpec, *tensors: Any) -> dict[str, torch.Tensor]:
    """Every term and the weighted sum (``total``): :func:`lwdsl.backend.losses.distill_loss`."""
    return losses.distill_loss(OPS, spec, *tensors)


# --- models: teachers and students ---------------------------------------------------------------


def _outputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return module(x)


# --- features --------------------------------------------------------------------------------------


class _Taps:
    """Forward hooks keeping the outputs of some sub-modules of one module."""

    def __init__(self, module: nn.Module, names: Sequence[str], role: str) -> None:
        self.out: dict[str, torch.Tensor] = {}
        self.handles = []
        known = dict(module.named_modules())
        for name in names:
            if name not in known or name == "":
                self.remove()
                raise no_feature_layer(name, [n for n in known if n], role)
            self.handles.append(known[name].register_forward_hook(self._keep(name)))

    def _keep(self, name: str):
        def hook(mod, inp, out):
            self.out[name] = out

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _projection(shape_s: torch.Size, shape_t: torch.Size, seed: int, pair: str) -> nn.Module:
    c_in, c_out = projection_channels(shape_s, shape_t, pair, channels_last=False)
    w, b = core.projection_init(c_in, c_out, seed)
    if len(shape_s) == 2:
        proj: nn.Module = nn.Linear(c_in, c_out)
        weight = torch.from_numpy(w)
    else:
        proj = nn.Conv2d(c_in, c_out, 1) if len(shape_s) == 4 else nn.Conv1d(c_in, c_out, 1)
        weight = torch.from_numpy(w).reshape(c_out, c_in, *([1] * (len(shape_s) - 2)))
    with torch.no_grad():
        proj.weight.copy_(weight)
        proj.bias.copy_(torch.from_numpy(b))
    return proj


# --- the handler ---------------------------------------------------------------------------------


def _batch_teacher_logits(teachers: Sequence[TorchModel], xb: torch.Tensor) -> torch.Tensor:
    """The teachers' mean logits for one batch (inference mode, float32 whatever the student's
    ``precision=``, as the cache computes them)."""
    with torch.inference_mode(), torch.autocast(xb.device.type, enabled=False):
        out = torch.stack([t.module(xb).double() for t in teachers]).mean(0).float()
    return out.clone()  # a normal tensor: inference tensors cannot be saved for backward


class TorchDistillParts(DistillParts):
    """PyTorch's parts of the core's ``distill`` flow."""

    def model_name(self, handle: TorchModel) -> str:
        return handle.ref

    def load_teacher(self, handle: TorchModel, ctx: StepContext, path: Path) -> TorchModel:
        """The original's architecture (by name when it is a built-in or torchvision name, else a
        copy of its module), weights from ``path`` (``.lwz`` or a state dict read with
        ``weights_only=True``); the caller's random state untouched."""
        base = ctx.original if ctx.original is not None else handle
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
            return _outputs(module, torch.from_numpy(np.ascontiguousarray(x))).float().numpy()
        finally:
            module.train(was_training)

    def training(self, student: TorchModel, teachers: Sequence[TorchModel], spec: DistillSpec,
                 cache: Optional[np.ndarray], ctx: StepContext) -> DistillTraining:
        for t in teachers:
            t.module.eval()
        table = torch.from_numpy(cache) if cache is not None else None
        pairs = list(spec.features)
        projections: list[nn.Module] = []
        s_taps: Optional[_Taps] = None
        t_taps: list[_Taps] = []

        def close() -> None:
            for taps in ([s_taps] if s_taps is not None else []) + t_taps:
                taps.remove()
            for t in teachers:
                t.module.to("cpu")

        try:
            if pairs:
                s_taps = _Taps(student.module, [p.student for p in pairs], "student")
                for i, t in enumerate(teachers):
                    t_taps.append(_Taps(t.module, [p.teacher for p in pairs], f"teacher {i + 1}"))
                probe = torch.as_tensor(ctx.data.train_x[:2])
                _outputs(student.module, probe)
                for t in teachers:
                    _outputs(t.module, probe)
                for i, p in enumerate(pairs):
                    fs, ft = s_taps.out[p.student], t_taps[0].out[p.teacher]
                    projections.append(_projection(fs.shape, ft.shape, ctx.step_seed() + i, str(p)))
            device = torch.device(student.device)  # the teachers label batches where the student trains
            for t in teachers:
                t.module.to(device)
            table = table.to(device) if table is not None else None
        except BaseException:
            close()
            raise

        def batch_loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor):
            logits = model(xb).float()  # float32 under precision=bf16|fp16 autocast too
            tf_, ps = [], []
            t_logits = table[idx] if table is not None else _batch_teacher_logits(teachers, xb)
            if pairs:
                with torch.inference_mode(), torch.autocast(xb.device.type, enabled=False):
                    for t in teachers:
                        t.module(xb)
                for i, p in enumerate(pairs):
                    ft = torch.stack([taps.out[p.teacher] for taps in t_taps]).mean(0)
                    tf_.append(ft.clone())
                    ps.append(projections[i](s_taps.out[p.student]).float())
            terms = distill_loss(spec, logits, yb, t_logits, tf_, ps)
            return terms["total"], terms["soft" if spec.data is not None else "ce"]

        return DistillTraining(batch_loss, projections, len(projections), close)

    def fit(self, handle: TorchModel, spec: DistillSpec, ctx: StepContext, **kwargs: Any) -> Any:
        return fit(handle, spec, ctx, **kwargs)


#: This backend's parts, and the ``distill`` handler: the core's flow over them.
PARTS = TorchDistillParts()
distill = distill_handler(PARTS)
