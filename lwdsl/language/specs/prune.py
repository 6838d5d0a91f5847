"""``prune``: set weights to zero (unstructured, structured, N:M), at once or gradually.

Exact semantics (both backends follow them bit for bit; see docs/semantics.md):
- Weights only, never biases. Weights are seen in the canonical layout (PyTorch's:
  ``[out, in, kh, kw]`` for conv, ``[out, in]`` for linear) and flattened row-major.
- AMOUNT for l1/l2/ln/random counts elements (unstructured) or slices (structured):
  ``k = round_half_even(AMOUNT * count)`` of them are pruned. For one element every Ln norm is
  ``|w|``, so l1, l2 and ln give the same unstructured mask.
- Ties: among equal scores the element (slice) with the lower flat index is pruned first; for
  ``global`` the flat index runs over the selected layers in model order.
- ``threshold T`` prunes every weight with ``|w| < T`` (strictly), whatever the scope.
- ``random`` scores every element with numpy's PCG64 seeded by the run seed and the step index.
- ``nm=N:M`` keeps the N largest ``|w|`` in every M consecutive weights along the flattened
  input axis (per output row); a last partial group of r < M keeps ``min(r, N)``.
- Already-zero weights count as candidates like any other (they are the smallest).
- ``wanda`` and ``sparsegpt`` (linear layers only, per layer, one-shot) calibrate on
  ``calibrate=N`` training examples (default 128): the layers' inputs ``X`` give
  ``H = X^T X`` (:mod:`lwdsl.semantics.hessian`); Wanda prunes the lowest
  ``|W| * ||X_j||_2`` of each output row (:mod:`lwdsl.semantics.wanda`), SparseGPT prunes and
  updates the kept weights with the OBS update (``damp=``, ``block=``;
  :mod:`lwdsl.semantics.sparsegpt`). AMOUNT or ``nm=N:M``.
- With ``nm=N:M`` an AMOUNT may be written only when it is the N:M sparsity itself
  (``prune sparsegpt 50% nm=2:4``).
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, model_validator

from .base import NMRatio, StepSpec, TrainingOptions

__all__ = ["PruneSpec"]


class PruneSpec(StepSpec, TrainingOptions):
    """Prune weights of the selected layers.

    Example: ``prune global l1 0.2``, ``prune l1 0.4 on linear``, ``prune threshold 0.1``,
    ``prune l2 0.5 structured=filters remove=true on conv``, ``prune nm=2:4 on linear``,
    ``prune l1 0.9 schedule=gradual epochs=5``, ``prune wanda 50% except "lm_head"``,
    ``prune sparsegpt 50% nm=2:4``.
    """

    positional: ClassVar[tuple[str, ...]] = ("scope", "method", "amount")
    summary: ClassVar[str] = "zero out weights: magnitude, random, threshold, structured, N:M, gradual"
    FORMS: ClassVar[tuple[str, ...]] = ("magnitude", "global", "threshold", "random", "structured", "remove", "nm", "gradual",
                                        "wanda", "sparsegpt")
    #: The methods that calibrate on the layers' inputs (linear layers only).
    CALIBRATED: ClassVar[tuple[str, ...]] = ("wanda", "sparsegpt")

    op: Literal["prune"] = "prune"
    scope: Literal["layer", "global"] = Field(
        default="layer", description="layer: AMOUNT of each layer; global: AMOUNT of all selected weights together"
    )
    method: Literal["l1", "l2", "ln", "random", "threshold", "wanda", "sparsegpt"] = Field(
        default="l1",
        description="score: magnitude (Ln norm of the element or slice), random, an absolute threshold, "
        "or calibrated on the layers' inputs (wanda, sparsegpt)",
    )
    amount: Optional[float] = Field(
        default=None, ge=0, description="fraction pruned in [0, 1) (20% = 0.2); with threshold, the magnitude limit"
    )
    n: Optional[float] = Field(default=None, gt=0, description="the p of the Ln norm (method ln only)")
    structured: Literal["none", "channels", "filters"] = Field(
        default="none", description="filters: whole output channels/neurons; channels: whole input channels/features"
    )
    remove: bool = Field(default=False, description="physically remove pruned filters (structured=filters)")
    nm: Optional[NMRatio] = Field(default=None, description="N:M sparsity, e.g. 2:4")
    schedule: Literal["oneshot", "gradual"] = Field(
        default="oneshot", description="gradual: cubic ramp (Zhu & Gupta 2017) while training"
    )
    start: float = Field(default=0.0, ge=0, description="gradual: epoch at which pruning begins")
    final: Optional[float] = Field(default=None, gt=0, description="gradual: epoch at which AMOUNT is reached (default: epochs)")
    frequency: int = Field(default=100, ge=1, description="gradual: optimizer steps between mask updates")
    calibrate: int = Field(default=128, ge=1, le=65_536, description="wanda/sparsegpt: training examples calibrated on")
    damp: float = Field(default=0.01, gt=0, le=1, description="sparsegpt: dampening, a fraction of the mean of diag(X^T X)")
    block: int = Field(default=128, ge=1, le=65_536, description="sparsegpt: columns pruned and updated together")

    @model_validator(mode="after")
    def _check(self) -> "PruneSpec":
        set_ = self.model_fields_set
        calibrated = self.method in self.CALIBRATED
        if self.nm is not None:
            nm_amount = 1 - self.nm.n / self.nm.m
            if self.amount is not None and abs(self.amount - nm_amount) > 1e-9:
                raise ValueError(f"nm={self.nm} prunes {nm_amount:.4g} of the weights itself; AMOUNT {self.amount:g} "
                                 f"contradicts it (write {nm_amount:.4g} or drop AMOUNT)")
            if self.method not in ("l1", "l2", "ln", *self.CALIBRATED) or self.structured != "none" or self.scope != "layer":
                raise ValueError("nm=N:M works with magnitude, wanda or sparsegpt pruning per layer, unstructured")
            if self.schedule != "oneshot":
                raise ValueError("nm=N:M is one-shot; fine-tune afterwards instead of schedule=gradual")
        elif self.amount is None:
            raise ValueError("AMOUNT is missing: write a fraction such as 0.2 or 20% (or a magnitude after threshold)")
        elif self.method != "threshold" and self.amount >= 1:
            raise ValueError(f"AMOUNT is a fraction in [0, 1), got {self.amount:g}; write 20% or 0.2 for a fifth")
        if calibrated and (self.scope != "layer" or self.structured != "none" or self.schedule != "oneshot"):
            raise ValueError(f"{self.method} prunes each linear layer once, from its calibration inputs: "
                             "no global scope, structured= or schedule=gradual")
        only = {"calibrate": self.CALIBRATED, "damp": ("sparsegpt",), "block": ("sparsegpt",)}
        for name, methods in only.items():
            if name in set_ and self.method not in methods:
                raise ValueError(f"{name}= only applies to prune {' or '.join(methods)}")
        if (self.method == "ln") != (self.n is not None):
            raise ValueError("method ln needs n=P (the norm's p), and n= goes only with ln")
        if self.structured != "none" and self.scope == "global":
            raise ValueError("structured pruning is per layer: norms of different layers' slices are not comparable")
        if self.structured != "none" and self.method == "threshold":
            raise ValueError("threshold prunes single weights; use l1/l2/ln with structured=")
        if self.remove and self.structured != "filters":
            raise ValueError("remove=true physically removes filters: it needs structured=filters")
        if self.schedule == "gradual":
            if self.method == "threshold":
                raise ValueError("a threshold prune has no fraction to ramp; use l1 with schedule=gradual")
            if "epochs" not in set_ or self.epochs < 1:
                raise ValueError("schedule=gradual trains while pruning: give epochs=N (N >= 1)")
            end = self.final if self.final is not None else self.epochs
            if not self.start < end <= self.epochs:
                raise ValueError(f"gradual needs start < final <= epochs, got start={self.start:g} final={end:g} epochs={self.epochs}")
        else:
            training = {"epochs", "lr", "optimizer", "momentum", "weight_decay", "batch", "start", "final", "frequency"}
            extra = sorted(training & set_)
            if extra:
                raise ValueError(f"{', '.join(extra)} only apply with schedule=gradual")
        return self

    def forms(self) -> tuple[str, ...]:
        if self.method in self.CALIBRATED:
            return (self.method, "nm") if self.nm is not None else (self.method,)
        if self.nm is not None:
            out = ["nm"]
        elif self.method in ("threshold", "random"):
            out = [self.method]
        else:
            out = ["magnitude"]
        if self.scope == "global":
            out.append("global")
        if self.structured != "none":
            out.append("structured")
        if self.remove:
            out.append("remove")
        if self.schedule == "gradual":
            out.append("gradual")
        return tuple(out)

    def trains(self) -> bool:
        return self.schedule == "gradual"  # prunes while it trains

    def layer_kinds(self) -> Optional[tuple[str, ...]]:
        if self.method in self.CALIBRATED:
            return ("linear",)  # X W^T: the calibrated objective is a linear layer's
        return None

    def requested_sparsity(self) -> Optional[float]:
        if self.nm is not None:
            return 1 - self.nm.n / self.nm.m
        if self.method == "threshold" or self.amount is None:
            return None
        return self.amount
