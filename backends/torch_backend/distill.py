"""``distill`` on PyTorch: the loss terms of :mod:`lwdsl.semantics.distill` as torch ops.

Forms: ``soft`` (the current model is the student, the teacher is the model before the
pipeline, ``ctx.original``; masks stay fixed), ``student`` (a new model built with the
backend's own ``load_model`` replaces the current one: the handler returns it), ``teachers``
(checkpoints of the original's architecture, their logits averaged), ``features`` (hint pairs
through a learned 1x1 conv / linear projection, trained with the student and dropped
afterwards) and ``relation`` (RKD distance or angle, on the logits).

``data=NAME`` (``transfer``): the student trains on the transfer set's images
(:func:`lwdsl.semantics.distill.training_set`), soft targets only; accuracy stays the run's.

The teachers are fixed, so without ``jitter`` their (averaged) logits for every training image
are computed once, in inference mode, before training, and each batch gathers its rows by index
(the cache is noted in ``ctx.notes``; with :data:`lwdsl.semantics.distill.CACHE_TEACHER_LOGITS`
off, for measuring it, they are computed per batch). With ``jitter=N`` the student trains on
translated images (:mod:`lwdsl.semantics.jitter`, applied by ``fit``) and the teachers label
each batch as it is, per batch. Teacher features, when asked for, are computed per batch without gradients.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lwdsl.backend import StepContext
from lwdsl.errors import LwdslError
from lwdsl.semantics import distill as core
from lwdsl.specs import DistillSpec

from .handle import TorchModel
from .models import BUILTINS
from .train import fit

__all__ = [
    "distill",
    "cross_entropy",
    "kl_batchmean",
    "soft_target_loss",
    "feature_loss",
    "rkd_distance_loss",
    "rkd_angle_loss",
    "relation_loss",
    "distill_loss",
    "teacher_logits",
    "load_teachers",
    "build_student",
]

_CACHE_BATCH = 1000


# --- the loss terms (same names and formulas as lwdsl.semantics.distill) -----------------------


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


def kl_batchmean(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) summed over classes, divided by the batch size."""
    logp_s = F.log_softmax(student_logits / T, dim=1)
    logp_t = F.log_softmax(teacher_logits / T, dim=1)
    p_t = logp_t.exp()
    terms = torch.where(p_t > 0, p_t * (logp_t - logp_s), torch.zeros_like(p_t))
    return terms.sum() / student_logits.shape[0]


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    return float(T) ** 2 * kl_batchmean(student_logits, teacher_logits, T)


def feature_loss(teacher_feats: Sequence[torch.Tensor], projected: Sequence[torch.Tensor]) -> torch.Tensor:
    losses = [F.mse_loss(s, t) for t, s in zip(teacher_feats, projected)]
    return torch.stack(losses).mean()


def _smooth_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.smooth_l1_loss(a, b, beta=1.0)


def _distances(e: torch.Tensor) -> torch.Tensor:
    e = e.flatten(1)
    diff = e[:, None, :] - e[None, :, :]
    d = diff.pow(2).sum(-1).clamp(min=core.EPS).sqrt()
    eye = torch.eye(len(e), dtype=torch.bool)
    d = d.masked_fill(eye, 0.0)
    b = len(e)
    return d / (d.sum() / (b * (b - 1)))


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if len(student) < 2:
        return student.sum() * 0.0
    return _smooth_l1(_distances(student), _distances(teacher))


def _angles(e: torch.Tensor) -> torch.Tensor:
    e = e.flatten(1)
    v = e[None, :, :] - e[:, None, :]
    u = v / v.pow(2).sum(-1, keepdim=True).clamp(min=core.EPS * core.EPS).sqrt()  # no inf gradient at 0
    return torch.bmm(u, u.transpose(1, 2))


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if len(student) < 2:
        return student.sum() * 0.0
    return _smooth_l1(_angles(student), _angles(teacher))


def relation_loss(kind: Optional[str], student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if kind == "distance":
        return rkd_distance_loss(student, teacher)
    if kind == "angle":
        return rkd_angle_loss(student, teacher)
    return student.sum() * 0.0


def distill_loss(
    spec: DistillSpec,
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher: torch.Tensor,
    teacher_feats: Sequence[torch.Tensor] = (),
    projected: Sequence[torch.Tensor] = (),
) -> dict[str, torch.Tensor]:
    """Every term and the weighted sum (``total``), as :func:`lwdsl.semantics.distill.distill_terms`."""
    ce = cross_entropy(student_logits, labels)
    soft = soft_target_loss(student_logits, teacher, spec.T)
    total = (1.0 - spec.alpha) * ce + spec.alpha * soft
    out = {"ce": ce, "soft": soft}
    if teacher_feats:
        out["feature"] = feature_loss(teacher_feats, projected)
        total = total + spec.beta * out["feature"]
    if spec.relation is not None:
        out["relation"] = relation_loss(spec.relation, student_logits, teacher)
        total = total + spec.gamma * out["relation"]
    out["total"] = total
    return out


# --- models: teachers and students ---------------------------------------------------------------


def _outputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return module(x)


def teacher_logits(teachers: Sequence[TorchModel], x: np.ndarray, ctx: StepContext, batch: int = _CACHE_BATCH) -> torch.Tensor:
    """The mean of the teachers' logits over ``x`` (one pass in inference mode, eval mode)."""
    xs = torch.as_tensor(x)
    bar = ctx.progress(len(teachers) * -(-len(xs) // batch), "distill: teacher logits")
    per: list[np.ndarray] = []
    try:
        for t in teachers:
            t.module.eval()
            parts = []
            for start in range(0, len(xs), batch):
                parts.append(_outputs(t.module, xs[start : start + batch]).float().numpy())
                bar.update(1)
            per.append(np.concatenate(parts) if parts else np.zeros((0, 0), np.float32))
    finally:
        bar.close()
    return torch.from_numpy(core.average_logits(per))


def _backend():
    from .backend import TorchBackend

    return TorchBackend()


def _architecture(handle: TorchModel, ctx: StepContext) -> Any:
    """What a teacher checkpoint is loaded into: the original's architecture (by name when it is
    a built-in or torchvision name, else a copy of its module)."""
    base = ctx.original if ctx.original is not None else handle
    if base.ref in BUILTINS or base.ref.startswith("torchvision:"):
        return base.ref, base
    return base.module, base


def load_teachers(handle: TorchModel, spec: DistillSpec, ctx: StepContext) -> list[TorchModel]:
    """The teachers named by ``spec.teacher``: ``original`` is ``ctx.original``; a path is a
    checkpoint (``.lwz`` or a torch state dict, read with ``weights_only=True``) loaded into the
    original's architecture with the backend's own ``load_model``."""
    refs = spec.teacher if isinstance(spec.teacher, tuple) else (spec.teacher,)
    out = []
    for ref in refs:
        if ref == "original":
            if ctx.original is None:
                raise LwdslError(
                    f"step {ctx.index + 1} (distill): the teacher is the original model, but none was kept",
                    hint="give teacher=PATH (a checkpoint), or run the recipe through the runner",
                )
            out.append(ctx.original)
            continue
        arch, base = _architecture(handle, ctx)
        try:
            with torch.random.fork_rng(devices=[]):
                out.append(_backend().load_model(arch, base.input_shape, base.num_classes, checkpoint=Path(ref)))
        except LwdslError as exc:
            raise LwdslError(f"teacher checkpoint {ref}: {exc.message}", hint=getattr(exc, "hint", None)) from None
    return out


def build_student(name: str, ctx: StepContext) -> TorchModel:
    """A fresh ``name`` for the data's input shape and classes, initialised from the step seed
    (the caller's random state is untouched); the user's own module when ``ctx.models`` has
    ``name`` (a deep copy, as it is)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.step_seed())
        return _backend().load_model(ctx.models.get(name, name), ctx.data.input_shape, ctx.data.num_classes)


def _classes(module: nn.Module, shape: tuple[int, ...], what: str) -> int:
    module.eval()
    try:
        out = _outputs(module, torch.zeros(2, *shape))
    except RuntimeError as exc:
        raise LwdslError(f"the {what} does not take inputs of shape {tuple(shape)}: {exc}") from None
    return int(out.shape[-1])


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
                from lwdsl.errors import did_you_mean

                near = did_you_mean(name, [n for n in known if n])
                raise LwdslError(
                    f"distill features: the {role} has no layer '{name}'",
                    hint=f"did you mean '{near}'?" if near else f"its layers: {', '.join(n for n in known if n)}",
                )
            self.handles.append(known[name].register_forward_hook(self._keep(name)))

    def _keep(self, name: str):
        def hook(mod, inp, out):
            self.out[name] = out

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _projection(shape_s: torch.Size, shape_t: torch.Size, seed: int, pair: str) -> nn.Module:
    if len(shape_s) != len(shape_t) or shape_s[2:] != shape_t[2:]:
        raise LwdslError(
            f"distill features {pair}: the student's feature has shape {list(shape_s[1:])} and the teacher's "
            f"{list(shape_t[1:])}; only the channels may differ (a 1x1 projection maps them)"
        )
    c_in, c_out = int(shape_s[1]), int(shape_t[1])
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
    """The teachers' mean logits for one batch (inference mode, as the cache computes them)."""
    with torch.inference_mode():
        out = torch.stack([t.module(xb).double() for t in teachers]).mean(0).float()
    return out.clone()  # a normal tensor: inference tensors cannot be saved for backward


def distill(handle: TorchModel, spec: DistillSpec, layers: Sequence[str], ctx: StepContext) -> TorchModel:
    """The ``distill`` handler; returns the student (a new handle with ``student=``)."""
    data = core.training_set(spec, ctx)
    run_ctx, ctx = ctx, (replace(ctx, data=data) if data is not ctx.data else ctx)
    teachers = load_teachers(handle, spec, ctx)
    shape = tuple(ctx.data.input_shape)
    student = build_student(spec.student, ctx) if spec.student is not None else handle
    k_student = _classes(student.module, shape, f"student {spec.student or handle.ref}")
    if k_student != ctx.data.num_classes:
        raise LwdslError(
            f"distill: the student {spec.student or handle.ref} has {k_student} output classes, "
            f"the data {ctx.data.num_classes}"
        )
    for t, ref in zip(teachers, spec.teacher if isinstance(spec.teacher, tuple) else (spec.teacher,)):
        k = _classes(t.module, shape, f"teacher {ref}")
        if k != k_student:
            raise LwdslError(f"distill: the teacher {ref} has {k} output classes, the student {k_student}")

    before = _backend().stats(handle)
    cache: Optional[torch.Tensor] = None
    if core.cache_teacher_logits(spec.jitter):
        start = time.perf_counter()
        cache = teacher_logits(teachers, ctx.data.train_x, ctx)
        ctx.notes["teacher_cache_seconds"] = round(time.perf_counter() - start, 3)
        ctx.notes["teacher_cache"] = (
            f"logits of {len(teachers)} teacher(s) cached for {len(cache)} training images in one pass before training"
        )
    else:
        for t in teachers:
            t.module.eval()
    if spec.data is not None:
        ctx.notes["transfer_set"] = {"data": spec.data, "images": int(len(data.train_x)), "sha256": data.sha256}

    projections: list[nn.Module] = []
    s_taps: Optional[_Taps] = None
    t_taps: list[_Taps] = []
    pairs = list(spec.features)
    try:
        if pairs:
            s_taps = _Taps(student.module, [p.student for p in pairs], "student")
            for i, t in enumerate(teachers):
                t_taps.append(_Taps(t.module, [p.teacher for p in pairs], f"teacher {i + 1}"))
            probe = torch.as_tensor(ctx.data.train_x[:2])
            _outputs(student.module, probe)
            for taps, t in zip(t_taps, teachers):
                _outputs(t.module, probe)
            for i, p in enumerate(pairs):
                fs, ft = s_taps.out[p.student], t_taps[0].out[p.teacher]
                projections.append(_projection(fs.shape, ft.shape, ctx.step_seed() + i, str(p)))
        params = [q for proj in projections for q in proj.parameters()]

        def batch_loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor):
            logits = model(xb)
            tf_, ps = [], []
            t_logits = cache[idx] if cache is not None else _batch_teacher_logits(teachers, xb)
            if pairs:
                with torch.inference_mode():
                    for t in teachers:
                        t.module(xb)
                for i, p in enumerate(pairs):
                    ft = torch.stack([taps.out[p.teacher] for taps in t_taps]).mean(0)
                    tf_.append(ft.clone())
                    ps.append(projections[i](s_taps.out[p.student]))
            terms = distill_loss(spec, logits, yb, t_logits, tf_, ps)
            return terms["total"], terms["soft" if spec.data is not None else "ce"]

        what = f"distill T={spec.T:g} alpha={spec.alpha:g}" + (f" into {spec.student}" if spec.student else "")
        fit(student, spec, ctx, label=what, schedule=spec.schedule, jitter=spec.jitter, loss=batch_loss, extra=params)
    finally:
        if s_taps is not None:
            s_taps.remove()
        for taps in t_taps:
            taps.remove()
    if projections:
        ctx.notes["feature_projections"] = f"{len(projections)} projection(s) trained with the student, then dropped"
    if spec.student is not None:
        after = _backend().stats(student)
        run_ctx.notes["student"] = {
            "name": spec.student,
            "replaces": handle.ref,
            "params_before": before.params,
            "params_after": after.params,
            "nonzero_before": before.nonzero_params,
            "nonzero_after": after.nonzero_params,
        }
    return student
