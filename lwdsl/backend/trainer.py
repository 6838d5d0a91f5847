"""A backend's :class:`Trainer` for the core's one training loop (:func:`lwdsl.backend.fit.fit`):
what every backend decides the same way written once, over a few primitives each backend's
trainer (its subclass) gives.

The core decides here the optimizer's hyper-parameters (:func:`optimizer_settings`), which
layers train how (masks re-applied, quantized layers on their grid from float masters: where
the masters start, :func:`grid_scale`, :func:`snap_to_grid`, :func:`grid_codes`), a batch's
loss (:meth:`Trainer.batch_loss`, :meth:`Trainer.loss_terms`), the optimizer step on several
ranks (:meth:`Trainer.backward`, :meth:`Trainer.sync`, :meth:`Trainer.update`) and the names
and layout of a checkpoint (:meth:`Trainer.checkpoint`): ``param:I`` (the trained tensors,
extra ones last), ``buffer:NAME``, ``mask:LAYER``, ``opt:I:KEY`` (the optimizer's state of
trained tensor I in PyTorch's names: ``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``,
``step``), ``rng:WHAT``, ``master:LAYER`` (the backend's layout) and ``scaler`` (fp16's loss
scale and its count of finite steps).

A backend keeps the primitives: one batch's loss and gradients in its autodiff (and its
autocast), one optimizer update with the given settings, reading and writing its tensors.
"""

from __future__ import annotations

import contextlib
import dataclasses
from abc import ABC, abstractmethod
from typing import Any, Optional, Sequence

import numpy as np

from ..language.specs import TrainingOptions
from ..semantics.cluster import codebook_levels
from ..semantics.precision import loss_scaled
from ..semantics.quant import WeightQuant, code_bounds, requantize
from .context import StepContext

__all__ = ["OptimizerSettings", "optimizer_settings", "grid_scale", "snap_to_grid", "grid_codes", "Trainer"]


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """The optimizer of a training step: ``kind`` ``sgd`` (with ``momentum``, 0 for none) or
    ``adam`` (``betas``, ``eps``); ``weight_decay`` times the weight added to each gradient."""

    kind: str
    momentum: float
    weight_decay: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


def optimizer_settings(opts: TrainingOptions) -> OptimizerSettings:
    """The recipe's ``optimizer=``, ``momentum=``, ``weight_decay=`` as the optimizer's settings
    (Adam takes no momentum: PyTorch's defaults for its betas and epsilon)."""
    momentum = float(opts.momentum) if opts.optimizer == "sgd" else 0.0
    return OptimizerSettings(opts.optimizer, momentum, float(opts.weight_decay))


def grid_scale(q: WeightQuant) -> np.ndarray:
    """The grid a quantized layer trains on, float32 in the canonical layout: its scales,
    broadcastable to the weight (``WeightQuant.full_scale``: per tensor, per channel, or each
    group's scale repeated), or for a clustered layer its codebook as (2, n) levels (the core's
    :func:`~lwdsl.semantics.cluster.codebook_levels`: values ascending, the lowest code of each)."""
    if q.codebook is not None:
        return np.stack(codebook_levels(q.codebook)).astype(np.float32)
    return np.ascontiguousarray(q.full_scale(), dtype=np.float32)


def snap_to_grid(ops: Any, w: Any, grid: Any, bits: Optional[int], bounds: Optional[tuple[int, int]] = None) -> Any:
    """:func:`lwdsl.semantics.quant.snap` of ``w`` in a framework's float32 ``ops`` (``where``,
    ``round`` half to even, ``clip(x, lo, hi)``, ``abs``, ``searchsorted(values, flat)`` on the
    left, ``take(values, indices)``, ``flat(x)``, ``like(x, w)``: ``x`` shaped as ``w``), the same bits,
    at a layer's fixed :func:`grid_scale` (``grid``: scales broadcastable to ``w``, a variable on
    TensorFlow: a graph turns ``x / constant`` into a multiply by the reciprocal). ``bits`` None:
    a clustered layer's (2, n) levels, the nearest value by the core's searchsorted, exact
    distances and tie rule (the lowest code). Binary (1 bit): ``+scale`` where ``w >= 0`` or the
    scale is 0, else ``-scale``. Else the codes clamped to ``bounds`` (the core's ``(qmin,
    qmax)`` of the layer's grid, ``WeightQuant.bounds()``; None: the narrow one), code -0 as +0."""
    if bits is None:
        values, codes, flat = grid[0], grid[1], ops.flat(w)
        i, last = ops.searchsorted(values, flat), int(values.shape[0]) - 1
        lo, hi = ops.clip(i - 1, 0, last), ops.clip(i, 0, last)
        v_lo, v_hi = ops.take(values, lo), ops.take(values, hi)
        d_lo, d_hi = ops.abs(flat - v_lo), ops.abs(flat - v_hi)
        take_lo = (d_lo < d_hi) | ((d_lo == d_hi) & (ops.take(codes, lo) < ops.take(codes, hi)))
        return ops.like(ops.where(take_lo, v_lo, v_hi), w)
    if bits == 1:
        return ops.where((w >= 0) | (grid == 0), 1.0, -1.0) * grid
    qmin, qmax = code_bounds(bits) if bounds is None else bounds
    codes = ops.clip(ops.round(w / grid), float(qmin), float(qmax))
    return ops.where(codes == 0, 0.0, codes) * grid  # code -0 is +0, as integer codes (a graph drops ``+ 0``)


def grid_codes(q: WeightQuant, master: np.ndarray, keep: Optional[np.ndarray]) -> WeightQuant:
    """The codes a quantized layer keeps after training: ``requantize`` of its trained float
    master (canonical layout) at its fixed scales or codebook; pruned weights (``keep`` False)
    keep code 0."""
    codes = requantize(master, q).codes
    if keep is not None:
        codes = np.where(keep, codes, np.zeros((), codes.dtype)).astype(codes.dtype)
    return dataclasses.replace(q, codes=codes)


class Trainer(ABC):
    """One training run of a backend, built for :func:`lwdsl.backend.fit.fit` and closed by it.

    Lifecycle: built (optimizer state, masks, quantized masters set up), then per epoch
    :meth:`snapshot`, then :meth:`step` per batch (:meth:`masks_changed` when ``after_step``
    changed masks, :meth:`restore` when a step was not finite), and :meth:`close` always,
    last (codes of quantized layers re-read, model back in inference mode).

    The flows here (see the module's docstring) are the core's; a backend's trainer gives:

    - ``_accumulate(images, labels, idx, weight, seed)``: add the gradients of ``weight`` times
      the batch's whole loss to those held; (cross-entropy, whole loss, finite) unweighted;
    - ``_pack_grads()`` / ``_unpack_grads(flat)``: the held gradients as one native vector
      (zeros where none, then a 0/1 per trained tensor), and back;
    - ``_apply(lr)``: one optimizer update on the held gradients (then masks, grid), cleared;
    - ``_cross_entropy(outputs, labels)``, ``_penalty()`` (None without penalised layers),
      ``_autocast()`` and ``_float32(t)`` (none by default) for :meth:`batch_loss`, and
      ``_zero(outputs)`` for :meth:`loss_terms`;
    - ``_tensors()``: ``{"param": the trained tensors (extra ones last), "buffer": the model's
      other state, "master": the quantized layers' float masters}``, each by name, read and
      written by ``_read(t)``/``_write(t, array)`` (and ``"opt"``, the optimizer's state by
      ``"I:KEY"``, where it is tensors); else ``_optimizer_state()`` and
      ``_load_optimizer_state``; ``_rng_state()``/``_load_rng_state`` (none by default);
      ``_loss_scale()``/``_load_loss_scale(scale, good)``; ``_set_mask(layer, keep)``.
    """

    @abstractmethod
    def step(self, images: np.ndarray, labels: np.ndarray, idx: np.ndarray, lr: float) -> tuple[float, float, bool]:
        """One optimizer step on a batch (``images`` NCHW float32, ``labels`` int64, ``idx`` the
        batch's indices into the training set) at learning rate ``lr``. Returns (the batch's
        cross-entropy, the whole loss, whether the loss and gradients were finite); a step
        that is not finite must leave the weights unchanged."""

    @abstractmethod
    def snapshot(self) -> Any:
        """The weights now (restored by :meth:`restore`)."""

    @abstractmethod
    def restore(self, snapshot: Any) -> None:
        """Put the weights of :meth:`snapshot` back (masks re-applied)."""

    def masks_changed(self) -> None:
        """``after_step`` changed the handle's masks: use the new ones from the next step."""

    def hold(self) -> None:
        """What follows an optimizer step made outside :meth:`step` (the user's own loop,
        ``lwdsl.attach``): masks re-applied, quantized weights put back on their grid."""
        raise NotImplementedError(f"{type(self).__name__} cannot train inside a user's loop")

    def close(self) -> None:
        """End of training (also after an error)."""

    def __init__(self, handle: Any, opts: TrainingOptions, ctx: StepContext, *, l1: float, l1_layers: Sequence[str],
                 loss: Any, masters: Optional[dict[str, np.ndarray]], mask_layers: Sequence[str]) -> None:
        self.handle, self.ranks, self.loss, self.l1 = handle, ctx.ranks, loss, l1
        self.optimizer_settings = optimizer_settings(opts)
        self.masked = sorted(set(handle.masks) | set(mask_layers))  # masks re-applied after each step
        self.quantized = sorted(handle.quant)  # kept on their grid, from float masters
        self.scaled = loss_scaled(opts.precision)  # fp16: dynamic loss scaling
        self._masters_from = masters or {}

    def master_start(self, layer: str) -> Optional[np.ndarray]:
        """Where the float master of quantized ``layer`` starts, canonical layout: the weight
        before quantization ``quantize mode=qat`` gives, else None (the weight on its grid)."""
        start = self._masters_from.get(layer)
        return None if start is None else np.array(start, dtype=np.float32)

    def batch_loss(self, forward: Any, xb: Any, yb: Any, idx: Any) -> tuple[Any, Any]:
        """(the loss to minimise, its cross-entropy part) of one batch in the backend's autodiff:
        the step's own ``loss`` or the cross-entropy of ``forward(xb)`` (under the backend's
        ``_autocast()``, then in float32), plus the L1 penalty."""
        with self._autocast():
            if self.loss is not None:
                whole, ce = self.loss(forward, xb, yb, idx)
            else:
                ce = whole = self._cross_entropy(forward(xb), yb)
        whole, ce = self._float32(whole), self._float32(ce)
        penalty = self._penalty()
        return (whole if penalty is None else whole + penalty), ce

    def _autocast(self) -> Any:
        return contextlib.nullcontext()

    def _float32(self, t: Any) -> Any:
        return t

    # --- several ranks ------------------------------------------------------------------------

    # The optimizer step in three parts, for training on several ranks: gradients of each shard
    # added up, summed over the ranks, then one step.

    def backward(self, images: np.ndarray, labels: np.ndarray, idx: np.ndarray, weight: float,
                 seed: int) -> tuple[float, float, bool]:
        """Add the gradients of ``weight`` times the mean loss of this shard (``images`` may
        have no rows: then nothing is added) to those accumulated since the last
        :meth:`update`; random layers draw from a generator seeded with ``seed``. Returns
        (``weight`` times the shard's cross-entropy, ``weight`` times its whole loss, whether the
        loss was finite); a loss that is not finite adds nothing."""
        if len(labels) == 0:  # no example of this batch here: nothing added (the rank still syncs)
            return 0.0, 0.0, True
        ce, whole, ok = self._accumulate(images, labels, idx, weight, seed)
        if not ok:  # a shard whose loss is not finite adds nothing
            return float("nan"), whole, False
        return ce * weight, whole * weight, True

    def sync(self) -> None:
        """Sum the accumulated gradients over the processes of ``ctx.ranks``, in place, in one
        collective (:meth:`lwdsl.backend.ranks.Ranks.all_sum_native`); nothing in one process.
        A parameter no shard gave a gradient to keeps none."""
        if self.ranks is None or self.ranks.processes <= 1:
            return
        flat = self._pack_grads()
        self.ranks.all_sum_native(flat)  # one collective, every rank, examples or not
        self._unpack_grads(flat)

    def update(self, lr: float) -> None:
        """One optimizer step at ``lr`` on the summed gradients (pruned weights' gradients
        zeroed, masks re-applied, quantized weights back on their grid), then clear them."""
        self._apply(lr)

    def broadcast_buffers(self) -> None:
        """What is not trained (batch-norm running statistics) made rank 0's on every rank."""
        if self.ranks is not None and self.ranks.processes > 1:
            self.ranks.broadcast_native(list(self._tensors()["buffer"].values()))

    # --- a user's loop ------------------------------------------------------------------------

    def loss_terms(self, inputs: Any, outputs: Any, labels: Any) -> Any:
        """What this step adds to a plain cross-entropy on (``inputs``, ``outputs``,
        ``labels``) of the user's batch, in the backend's autodiff: the step's own loss minus
        the cross-entropy, plus the L1 penalty (zero for a plain fine-tune)."""
        extra = self._zero(outputs)
        if self.loss is not None:  # the step's own loss on the user's outputs (teachers label the batch)
            whole, _ = self.loss(lambda _x, **_: outputs, inputs, labels, None)
            extra = whole - self._cross_entropy(outputs, labels)
        penalty = self._penalty()
        return extra if penalty is None else extra + penalty

    # --- checkpoints --------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, np.ndarray]:
        """Everything the next epoch depends on, as named numpy arrays (the layout: the
        module's docstring): the trained weights and buffers (extra parameters too), the masks,
        the optimizer's state, the random generator's state, the master copies of quantized
        weights and the loss scale."""
        out = {f"{group}:{name}": self._read(t) for group, held in self._tensors().items() for name, t in held.items()}
        for layer in self.handle.masks:  # numpy on one backend, native on another
            keep = self.handle.masks[layer]
            out[f"mask:{layer}"] = np.array(keep if isinstance(keep, np.ndarray) else self._read(keep), dtype=bool)
        out.update({f"opt:{key}": value for key, value in self._optimizer_state().items()})
        out.update({f"rng:{key}": value for key, value in self._rng_state().items()})
        if self.scaled:
            out["scaler"] = np.array(self._loss_scale(), dtype=np.float64)
        return out

    def resume(self, state: dict[str, np.ndarray]) -> None:
        """Put back what :meth:`checkpoint` gave (the trainer was just built for the same step
        from the model as it was when the step began)."""
        for layer in [k[5:] for k in state if k.startswith("mask:")]:  # masks first: gradual pruning may have added some
            self._set_mask(layer, np.array(state[f"mask:{layer}"], dtype=bool))
        for group, held in self._tensors().items():
            for name, t in held.items():
                if f"{group}:{name}" in state or group != "buffer":
                    self._write(t, state[f"{group}:{name}"])
        self._load_optimizer_state({k[4:]: v for k, v in state.items() if k.startswith("opt:")})
        self._load_rng_state({k[4:]: v for k, v in state.items() if k.startswith("rng:")})
        if self.scaled and "scaler" in state:
            scale, good = (float(v) for v in state["scaler"])
            self._load_loss_scale(scale, int(good))
        self._resumed()

    def _optimizer_state(self) -> dict[str, np.ndarray]:
        return {}

    def _load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        pass

    def _rng_state(self) -> dict[str, np.ndarray]:
        return {}

    def _load_rng_state(self, state: dict[str, np.ndarray]) -> None:
        pass

    def _resumed(self) -> None:
        """After :meth:`resume`: the loaded masks in use (the grid's last snap the weights now)."""
        self.masks_changed()
