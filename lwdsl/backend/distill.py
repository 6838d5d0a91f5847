"""The ``distill`` op, written once: the training set, the teachers, the student, the class
checks, the teacher-logit cache, the training and every note a report shows.

The numbers are the core's (:mod:`lwdsl.semantics.distill`: loss terms, projections'
initial weights, the transfer set, whether teacher logits are cached); the flow is here, the
loss of one batch included (:func:`distill_training`: which teachers run, the feature taps'
pairs, each pair's projection and its seed, the terms of :mod:`lwdsl.backend.losses`); a
backend gives :class:`DistillParts`: load a teacher checkpoint into the original's
architecture, build a student, run a model (with taps on named layers), make a 1x1 projection
from given weights, and its tensor ops.

Forms: ``soft`` (the current model is the student, the teacher is the model before the
pipeline, ``ctx.original``; masks stay fixed), ``student=NAME`` (a new model replaces the
current one: the handler returns it), ``teacher=PATH,...`` (checkpoints of the original's
architecture, their logits averaged), ``features`` (hint pairs through a learned 1x1
projection, trained with the student and dropped afterwards), ``relation`` (RKD distance or
angle on the logits) and ``data=NAME`` (a transfer set: soft targets only; accuracy stays the
run's).

The teachers are fixed, so without ``jitter`` their (averaged) logits for every training image
are computed once, in inference mode, before training (:func:`teacher_logits`), and each batch
gathers its rows by index (noted in the report); with ``jitter=N`` the teachers label each
translated batch as it is.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from functools import reduce
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..data.stream import chunks, eval_batch
from ..errors import LwdslError, did_you_mean
from ..semantics import distill as core
from ..language.specs import DistillSpec
from . import losses
from .context import StepContext

__all__ = ["DistillParts", "DistillTraining", "distill_handler", "distill_training", "load_teachers", "teacher_logits",
           "CACHE_BATCH", "no_feature_layer", "projection_channels"]

#: Images per forward pass while caching the teachers' logits.
CACHE_BATCH = 1000


@dataclass
class DistillTraining:
    """What :func:`distill_training` gives the training loop: the loss of one batch (a
    :func:`lwdsl.backend.fit.fit` ``loss``), the extra parameters trained with the student
    (feature projections: parameters, or the backend's modules holding them), and what to undo
    afterwards (feature taps, teachers' devices)."""

    loss: Any
    extra: Sequence[Any] = ()
    projections: int = 0
    close: Callable[[], None] = field(default=lambda: None)


class DistillParts(ABC):
    """What a backend gives the ``distill`` flow. Images are NCHW float32 numpy; a "tapped"
    model is what :meth:`tap` returns; tensors are the backend's own."""

    #: The backend's tensor ops (:class:`lwdsl.backend.losses.TensorOps`): the loss terms.
    ops: Any = None
    #: Whether the backend's feature maps have their channels last (NHWC) rather than second.
    channels_last: bool = False

    @abstractmethod
    def model_name(self, handle: Any) -> str:
        """The name the model was built from (``lenet5``, ``torchvision:resnet18``), for notes."""

    @abstractmethod
    def load_teacher(self, base: Any, ctx: StepContext, path: Path) -> Any:
        """A teacher: the checkpoint ``path`` loaded into the architecture of ``base`` (the
        original, ``ctx.original``, or the current model when none was kept) by
        ``ctx.backend.load_model``. Raises LwdslError."""

    @abstractmethod
    def build_student(self, name: str, ctx: StepContext) -> Any:
        """A fresh ``name`` for the data's input shape and classes, initialised from the step
        seed; the user's own model when ``ctx.models`` has ``name`` (a copy)."""

    @abstractmethod
    def outputs(self, handle: Any, x: np.ndarray) -> np.ndarray:
        """The model's outputs on ``x`` in inference mode (float32); the model's training
        mode is left as it was."""

    def fit(self, handle: Any, spec: DistillSpec, ctx: StepContext, **kwargs: Any) -> Any:
        """The student's training: the backend's :meth:`~lwdsl.backend.Backend.fit`."""
        return ctx.backend.fit(handle, spec, ctx, **kwargs)

    @abstractmethod
    def layer_names(self, handle: Any) -> list[str]:
        """The names a feature pair may give for the model's layers (those :meth:`tap` taps)."""

    @abstractmethod
    def tap(self, handle: Any, names: Sequence[str], role: str) -> Any:
        """The model tapped at its layers ``names`` (each one of :meth:`layer_names`; none: the
        model as it is): :meth:`run` gives their outputs before any fused activation. Raises
        LwdslError for a layer it cannot tap (naming ``role``: student, teacher N)."""

    @abstractmethod
    def start(self, student: Any, teachers: Sequence[Any], cache: Optional[np.ndarray]) -> Any:
        """Before the taps: the teachers in inference mode where the student trains, and the
        cached teacher logits (``cache``, or None) as a tensor there (rows for ``ops.take``)."""

    def stop(self, tapped: Sequence[Any], teachers: Sequence[Any]) -> None:
        """After training (or a failure before it): the taps removed, the teachers back home."""

    @abstractmethod
    def images(self, x: np.ndarray) -> Any:
        """NCHW numpy images as the backend's input tensor (the probe of the features' shapes)."""

    @abstractmethod
    def run(self, tapped: Any, x: Any, model: Any = None) -> tuple[Any, list[Any]]:
        """(logits, the tapped layers' outputs) on the input tensor ``x``. With ``model`` (the
        training loop's: the student's forward, or a user's outputs) in training mode inside the
        backend's autodiff; without it in inference mode, in float32 whatever the student's
        ``precision=``, as constants for the autodiff (teachers; the features' shape probe)."""

    @abstractmethod
    def projection(self, weight: np.ndarray, bias: np.ndarray, rank: int) -> tuple[Callable[[Any], Any], Sequence[Any]]:
        """A learned 1x1 map on the channel axis of rank-``rank`` features (a linear map for
        rank 2) holding ``weight`` ``[c_out, c_in]`` and ``bias``: (the map, what ``fit``
        trains with the student as its ``extra``)."""


def no_feature_layer(name: str, known: Sequence[str], role: str) -> LwdslError:
    """The error for a feature pair naming a layer the ``role`` (student, teacher N) lacks."""
    near = did_you_mean(name, list(known))
    return LwdslError(f"distill features: the {role} has no layer '{name}'",
                      hint=f"did you mean '{near}'?" if near else f"its layers: {', '.join(known)}")


def projection_channels(shape_s: Sequence[int], shape_t: Sequence[int], pair: str, channels_last: bool) -> tuple[int, int]:
    """(student channels, teacher channels) of a feature pair's 1x1 projection; every other axis
    must agree (batch first, the channels last or second, as the backend lays features out)."""
    shape_s, shape_t = tuple(shape_s), tuple(shape_t)
    axis = len(shape_s) - 1 if channels_last else 1
    rest = (lambda s: s[1:-1]) if channels_last else (lambda s: s[2:])
    if len(shape_s) != len(shape_t) or rest(shape_s) != rest(shape_t):
        raise LwdslError(
            f"distill features {pair}: the student's feature has shape {list(shape_s[1:])} and the teacher's "
            f"{list(shape_t[1:])}{' (NHWC)' if channels_last else ''}; only the channels may differ (a 1x1 projection maps them)"
        )
    return int(shape_s[axis]), int(shape_t[axis])


def _mean(tensors: Sequence[Any]) -> Any:
    """The tensors' sum, in their order, divided by their count (one tensor: itself, exactly)."""
    return reduce(lambda a, b: a + b, tensors) / len(tensors)


def _taps(parts: DistillParts, handle: Any, names: Sequence[str], role: str, made: list[Any]) -> Any:
    """``handle`` tapped at ``names`` (appended to ``made``, for :meth:`DistillParts.stop`)."""
    known = parts.layer_names(handle)
    for name in names:
        if name not in known:
            raise no_feature_layer(name, known, role)
    made.append(parts.tap(handle, names, role))
    return made[-1]


def distill_training(parts: DistillParts, student: Any, teachers: Sequence[Any], spec: DistillSpec,
                     cache: Optional[np.ndarray], ctx: StepContext) -> DistillTraining:
    """The loss of one batch: :func:`lwdsl.backend.losses.distill_loss`'s ``total`` (and the
    part recorded as the step's loss: ``soft`` with a transfer set, else ``ce``) in the
    backend's autodiff. The teachers' logits are gathered from ``cache`` by the batch's indices,
    or averaged per batch (in float64, as the cache) when it is None; each feature pair taps
    the student's and every teacher's layer (the teachers' outputs averaged), the student's
    through a projection made before training from the probe of two training images' shapes
    (:func:`lwdsl.semantics.distill.projection_init`, seeded ``ctx.step_seed() + i``)."""
    ops, pairs = parts.ops, list(spec.features)
    tapped: list[Any] = []
    table = parts.start(student, teachers, cache)
    try:
        s_taps = _taps(parts, student, [p.student for p in pairs], "student", tapped) if pairs else None
        t_taps = [_taps(parts, t, [p.teacher for p in pairs], f"teacher {i + 1}", tapped) for i, t in enumerate(teachers)]
        projections = []
        if pairs:
            probe = parts.images(ctx.data.train_x[:2])
            fs, ft = parts.run(s_taps, probe)[1], parts.run(t_taps[0], probe)[1]
            for i, (a, b, p) in enumerate(zip(fs, ft, pairs)):
                c_in, c_out = projection_channels(a.shape, b.shape, str(p), parts.channels_last)
                projections.append(parts.projection(*core.projection_init(c_in, c_out, ctx.step_seed() + i), len(a.shape)))
    except BaseException:
        parts.stop(tapped, teachers)
        raise

    def batch_loss(model: Any, xb: Any, yb: Any, idx: Any) -> tuple[Any, Any]:
        logits, fs = parts.run(s_taps, xb, model)
        per = [parts.run(t, xb) for t in t_taps] if table is None or pairs else []  # each teacher once a batch
        if table is not None:
            t_logits = ops.take(table, idx)
        else:
            t_logits = ops.cast(_mean([ops.cast(out[0], "float64") for out in per]), "float32")
        t_feats = [_mean([out[1][i] for out in per]) for i in range(len(pairs))]
        # the loss in float32 under precision=bf16|fp16 too (a projection under autocast gives its dtype)
        projected = [ops.cast(proj(ops.cast(f, "float32")), "float32") for (proj, _), f in zip(projections, fs)]
        terms = losses.distill_loss(ops, spec, ops.cast(logits, "float32"), yb, t_logits, t_feats, projected)
        return terms["total"], terms["soft" if spec.data is not None else "ce"]

    return DistillTraining(batch_loss, [q for _, trained in projections for q in trained], len(projections),
                           lambda: parts.stop(tapped, teachers))


def _refs(spec: DistillSpec) -> tuple[str, ...]:
    return spec.teacher if isinstance(spec.teacher, tuple) else (spec.teacher,)


def load_teachers(parts: DistillParts, handle: Any, spec: DistillSpec, ctx: StepContext) -> list[Any]:
    """The teachers named by ``spec.teacher``: ``original`` is ``ctx.original``; a path is a
    checkpoint loaded into the original's architecture (:meth:`DistillParts.load_teacher`)."""
    out, base = [], (ctx.original if ctx.original is not None else handle)
    for ref in _refs(spec):
        if ref == "original":
            if ctx.original is None:
                raise LwdslError(
                    f"step {ctx.index + 1} (distill): the teacher is the original model, but none was kept",
                    hint="give teacher=PATH (a checkpoint), or run the recipe through the runner",
                )
            out.append(ctx.original)
            continue
        try:
            out.append(parts.load_teacher(base, ctx, Path(ref)))
        except LwdslError as exc:
            raise LwdslError(f"teacher checkpoint {ref}: {exc.message}", hint=getattr(exc, "hint", None)) from None
    return out


def teacher_logits(parts: DistillParts, teachers: Sequence[Any], x: np.ndarray, ctx: StepContext,
                   batch: int = CACHE_BATCH) -> np.ndarray:
    """The mean of the teachers' logits over ``x`` (one pass in inference mode), float32
    (:func:`lwdsl.semantics.distill.average_logits`)."""
    batch = eval_batch(x.shape[1:], batch)
    bar = ctx.progress(len(teachers) * -(-len(x) // batch), "distill: teacher logits")
    rows: list[list[np.ndarray]] = [[] for _ in teachers]
    try:
        for _, xb in chunks(x, batch):  # each batch read once (decoded once from files), every teacher on it
            for t, out in zip(teachers, rows):
                out.append(np.asarray(parts.outputs(t, xb), dtype=np.float32))
                bar.update(1)
    finally:
        bar.close()
    return core.average_logits([np.concatenate(r) if r else np.zeros((0, 0), np.float32) for r in rows])


def _classes(parts: DistillParts, handle: Any, shape: tuple[int, ...], what: str, task: str = "classify") -> int:
    """The number of outputs per example (per position for a language model), from a zero input
    of the data's kind (token ids for ``task`` lm and for token classification: 1-D inputs)."""
    try:
        out = parts.outputs(handle, np.zeros((2, *shape), dtype=np.int64 if task == "lm" or len(shape) == 1 else np.float32))
    except LwdslError:
        raise
    except Exception as exc:  # each framework raises its own error for an input that does not fit
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LwdslError(f"the {what} does not take inputs of shape {tuple(shape)}: {first}") from None
    return int(out.shape[-1])


def distill_handler(parts: DistillParts) -> Callable[..., Any]:
    """The ``distill`` handler over a backend's :class:`DistillParts`."""

    def distill(handle: Any, spec: DistillSpec, layers: Sequence[str], ctx: StepContext) -> Any:
        """The ``distill`` handler; returns the student (a new handle with ``student=``)."""
        data = core.training_set(spec, ctx)
        run_ctx, ctx = ctx, (replace(ctx, data=data) if data is not ctx.data else ctx)
        teachers = load_teachers(parts, handle, spec, ctx)
        shape = tuple(ctx.data.input_shape)
        student = parts.build_student(spec.student, ctx) if spec.student is not None else handle
        name = spec.student or parts.model_name(handle)
        k_student = _classes(parts, student, shape, f"student {name}", ctx.data.task)
        if k_student != ctx.data.num_classes:
            raise LwdslError(f"distill: the student {name} has {k_student} output classes, the data {ctx.data.num_classes}")
        for t, ref in zip(teachers, _refs(spec)):
            k = _classes(parts, t, shape, f"teacher {ref}", ctx.data.task)
            if k != k_student:
                raise LwdslError(f"distill: the teacher {ref} has {k} output classes, the student {k_student}")

        before = ctx.backend.stats(handle)
        cache: Optional[np.ndarray] = None
        per_example = k_student * (int(np.prod(shape)) if ctx.data.task == "lm" else 1)  # a distribution per position
        nbytes = 4 * per_example * len(ctx.data.train_x)
        if not spec.jitter and nbytes > core.CACHE_LIMIT_BYTES:
            ctx.notes["teacher_cache"] = (f"not cached: the teachers' logits would take {nbytes / 2**20:.0f} MiB "
                                          f"(over {core.CACHE_LIMIT_BYTES // 2**20} MiB); computed per batch")
        if core.cache_teacher_logits(spec.jitter, nbytes) and ctx.loop is None:  # a user's loop: per batch
            start = time.perf_counter()
            cache = teacher_logits(parts, teachers, ctx.data.train_x, ctx)
            ctx.notes["teacher_cache_seconds"] = round(time.perf_counter() - start, 3)
            ctx.notes["teacher_cache"] = (
                f"logits of {len(teachers)} teacher(s) cached for {len(cache)} training images in one pass before training"
            )
        if spec.data is not None:
            ctx.notes["transfer_set"] = {"data": spec.data, "images": int(len(data.train_x)), "sha256": data.sha256}

        training = distill_training(parts, student, teachers, spec, cache, ctx)
        try:
            what = f"distill T={spec.T:g} alpha={spec.alpha:g}" + (f" into {spec.student}" if spec.student else "")
            parts.fit(student, spec, ctx, label=what, schedule=spec.schedule, jitter=spec.jitter, loss=training.loss,
                      extra=training.extra)
        finally:
            training.close()
        if training.projections:
            ctx.notes["feature_projections"] = f"{training.projections} projection(s) trained with the student, then dropped"
        if spec.student is not None:
            after = ctx.backend.stats(student)
            run_ctx.notes["student"] = {
                "name": spec.student,
                "replaces": parts.model_name(handle),
                "params_before": before.params,
                "params_after": after.params,
                "nonzero_before": before.nonzero_params,
                "nonzero_after": after.nonzero_params,
            }
        return student

    return distill
