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
- ``prune auto AMOUNT``: per-layer counts chosen on training images (the global-magnitude,
  uniform and sensitivity allocations compared, then exchanges between layers), so that the
  selected layers together lose exactly AMOUNT of their weights (:mod:`lwdsl.semantics.allocation`).
- ``prune auto AMOUNT of=macs`` (``of=flops``: 2 x MACs, the same share): whole filters removed
  per dependency group so that the model keeps at most ``1 - AMOUNT`` of its baseline MACs
  (:mod:`lwdsl.semantics.mac_allocation`).
- ``prune l1 amount=auto drop=D``: the highest level whose accuracy after ``epochs`` of
  fine-tuning stays within ``D`` points of the accuracy before the step (a step search).
- ``wanda`` and ``sparsegpt`` (linear layers only, per layer, one-shot) calibrate on
  ``calibrate=N`` training examples (default 128): the layers' inputs ``X`` give
  ``H = X^T X`` (:mod:`lwdsl.semantics.hessian`); Wanda prunes the lowest
  ``|W| * ||X_j||_2`` of each output row (:mod:`lwdsl.semantics.wanda`), SparseGPT prunes and
  updates the kept weights with the OBS update (``damp=``, ``block=``;
  :mod:`lwdsl.semantics.sparsegpt`). AMOUNT or ``nm=N:M``. Every layer is calibrated on the
  inputs of the model as it was before the step, or with ``sequential=true`` on the model
  already pruned before it (a pass per group of layers that share an input, as the papers do).
- With ``nm=N:M`` an AMOUNT may be written only when it is the N:M sparsity itself
  (``prune sparsegpt 50% nm=2:4``).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Optional, Union

from pydantic import Field, model_validator

from ...semantics.auto_grid import AUTO_GRID
from .base import NMRatio, Refusal, StepSpec, TrainingOptions

__all__ = ["PruneSpec"]


class PruneSpec(StepSpec, TrainingOptions):
    """Prune weights of the selected layers.

    Example: ``prune global l1 0.2``, ``prune l1 0.4 on linear``, ``prune threshold 0.1``,
    ``prune l2 0.5 structured=filters remove=true on conv``, ``prune nm=2:4 on linear``,
    ``prune l1 0.9 schedule=gradual epochs=5``, ``prune auto 70%``, ``prune auto 75% of=macs``,
    ``prune l1 amount=auto drop=0.3 epochs=1``, ``prune wanda 50% except "lm_head"``,
    ``prune sparsegpt 50% nm=2:4``.
    """

    positional: ClassVar[tuple[str, ...]] = ("scope", "method", "amount")
    summary: ClassVar[str] = "zero out weights: magnitude, structured, N:M, gradual, auto, wanda, sparsegpt"
    FORMS: ClassVar[tuple[str, ...]] = ("magnitude", "global", "threshold", "random", "structured", "remove", "nm", "gradual", "auto", "level",
                                        "wanda", "sparsegpt")
    #: The methods that calibrate on the layers' inputs (linear layers only).
    CALIBRATED: ClassVar[tuple[str, ...]] = ("wanda", "sparsegpt")

    op: Literal["prune"] = "prune"
    scope: Literal["layer", "global"] = Field(
        default="layer", description="layer: AMOUNT of each layer; global: AMOUNT of all selected weights together"
    )
    method: Literal["l1", "l2", "ln", "random", "threshold", "auto", "wanda", "sparsegpt"] = Field(
        default="l1",
        description="score: magnitude (Ln norm of the element or slice), random, an absolute threshold; "
        "auto: magnitude, per-layer amounts from measured sensitivity; "
        "or calibrated on the layers' inputs (wanda, sparsegpt)",
    )
    amount: Optional[Union[Annotated[float, Field(ge=0)], Literal["auto"]]] = Field(
        default=None,
        description="fraction pruned in [0, 1) (20% = 0.2); with threshold, the magnitude limit; auto: searched (drop=)",
    )
    drop: Optional[float] = Field(
        default=None, gt=0, le=100,
        description="amount=auto: accuracy drop allowed, in points against the accuracy before the step (0.3: 0.3 points)",
    )
    of: Literal["weights", "macs", "flops"] = Field(
        default="weights",
        description="prune auto: what AMOUNT is a fraction of: weights (unstructured), or macs/flops "
        "(whole filters removed; flops = 2 x macs, the same share)",
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
    sequential: bool = Field(default=False, description="wanda/sparsegpt: calibrate each layer on the model already "
                             "pruned before it (a pass per group of layers sharing an input), not all on the model as it was")

    @model_validator(mode="after")
    def _check(self) -> "PruneSpec":
        set_ = self.model_fields_set
        level = self.amount == "auto"
        calibrated = self.method in self.CALIBRATED
        if "of" in set_ and self.method != "auto":
            raise Refusal("of= goes only with prune auto (what its AMOUNT is a fraction of)", field="of",
                          expected="`prune auto 75% of=macs`, or no of=")
        if self.method == "auto":
            self._check_auto()
        elif self.nm is not None:
            nm_amount = 1 - self.nm.n / self.nm.m
            if level:
                raise ValueError("nm=N:M fixes the sparsity itself; drop amount=auto")
            if self.amount is not None and abs(self.amount - nm_amount) > 1e-9:
                raise ValueError(f"nm={self.nm} prunes {nm_amount:.4g} of the weights itself; AMOUNT {self.amount:g} "
                                 f"contradicts it (write {nm_amount:.4g} or drop AMOUNT)")
            if self.method not in ("l1", "l2", "ln", *self.CALIBRATED) or self.structured != "none" or self.scope != "layer":
                raise ValueError("nm=N:M works with magnitude, wanda or sparsegpt pruning per layer, unstructured")
            if self.schedule != "oneshot":
                raise ValueError("nm=N:M is one-shot; fine-tune afterwards instead of schedule=gradual")
        elif self.amount is None:
            raise ValueError("AMOUNT is missing: write a fraction such as 0.2 or 20% (or a magnitude after threshold)")
        elif level:
            self._check_level()
        elif self.method != "threshold" and self.amount >= 1:
            raise ValueError(f"AMOUNT is a fraction in [0, 1), got {self.amount:g}; write 20% or 0.2 for a fifth")
        if self.drop is not None and not level:
            raise Refusal("drop= goes only with amount=auto (the accuracy drop the level search allows)",
                          field="drop", expected="`prune l1 amount=auto drop=0.3`, or no drop=")
        if calibrated and level:
            raise ValueError(f"{self.method} takes a fixed AMOUNT (or nm=N:M), not amount=auto")
        if calibrated and (self.scope != "layer" or self.structured != "none" or self.schedule != "oneshot"):
            raise ValueError(f"{self.method} prunes each linear layer once, from its calibration inputs: "
                             "no global scope, structured= or schedule=gradual")
        only = {"calibrate": self.CALIBRATED, "sequential": self.CALIBRATED, "damp": ("sparsegpt",), "block": ("sparsegpt",)}
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
            training = {"start", "final", "frequency"} if level else {
                "epochs", "lr", "optimizer", "momentum", "weight_decay", "batch", "precision", "start", "final", "frequency"}
            extra = sorted(training & set_)
            if extra:
                where = "schedule=gradual" + ("" if level else " or amount=auto (fine-tuning at each level)")
                raise ValueError(f"{', '.join(extra)} only apply with {where}")
        return self

    def _check_auto(self) -> None:
        """``prune auto AMOUNT``: magnitude per layer, the amounts from sensitivity."""
        cap = AUTO_GRID[-1]
        if self.amount is None or self.amount == "auto":
            raise Refusal("prune auto needs AMOUNT: the fraction of all selected weights to prune, e.g. prune auto 70%",
                          field="amount", expected=f"a fraction from 0 to {cap:g} ({100 * cap:g}%)")
        if self.of != "weights":
            if self.amount >= 1:
                raise Refusal(f"prune auto {100 * self.amount:g}% of={self.of}: AMOUNT is the share of the {self.of.upper()[:-1]}s "
                              "removed, a fraction below 1", field="amount",
                              expected=f"a fraction such as 75% (the model keeps 25% of its {self.of})")
        elif self.amount > cap:
            raise Refusal(f"prune auto {self.amount:g}: no layer is pruned above {100 * cap:g}% (the top of the "
                          f"sensitivity grid), so the selection cannot lose more", field="amount",
                          expected=f"AMOUNT from 0 to {cap:g} ({100 * cap:g}%), or `prune global l1 {self.amount:g}`")
        others = [(k, f"{k}={v}") for k, v in (("scope", self.scope), ("structured", self.structured),
                                                 ("schedule", self.schedule))
                  if k in self.model_fields_set and v not in ("layer", "none", "oneshot")]
        if self.nm is not None:
            others.append(("nm", f"nm={self.nm}"))
        if others:
            if self.of != "weights":
                raise Refusal(f"prune auto of={self.of} removes whole filters itself (one-shot, per-layer ratios): "
                              f"{', '.join(w for _, w in others)} does not apply", field=others[0][0],
                              expected=f"`prune auto {self.amount:g} of={self.of}`")
            raise Refusal(f"prune auto chooses per-layer magnitude amounts itself (one-shot, unstructured): "
                          f"{', '.join(w for _, w in others)} does not apply", field=others[0][0],
                          expected=f"`prune auto {self.amount:g}` (per-layer amounts), or `prune global l1 {self.amount:g}`")

    def _check_level(self) -> None:
        """``amount=auto``: the step search over the level of the step's own rule."""
        if self.drop is None:
            raise Refusal("amount=auto needs drop=POINTS: the accuracy drop the level search allows",
                          field="amount", expected="`prune l1 amount=auto drop=0.3` (0.3 points)")
        if self.method == "threshold":
            raise ValueError("amount=auto searches a fraction; a threshold is a magnitude: use l1 amount=auto drop=...")
        if self.schedule != "oneshot":
            raise ValueError("amount=auto prunes one-shot at each level and fine-tunes (epochs=); drop schedule=gradual")
        if self.remove:
            raise Refusal("amount=auto restores the model between levels: it cannot remove filters", field="remove",
                          expected="amount=auto without remove=true (masks), then a prune ... remove=true at the level found")

    def forms(self) -> tuple[str, ...]:
        if self.method == "auto":
            return ("auto",)
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
        if self.amount == "auto":
            out.append("level")
        return tuple(out)

    def trains(self) -> bool:
        # gradual prunes while it trains; amount=auto fine-tunes at every level it tries
        return self.schedule == "gradual" or (self.amount == "auto" and self.epochs > 0)

    def layer_kinds(self) -> Optional[tuple[str, ...]]:
        if self.method in self.CALIBRATED:
            return ("linear",)  # X W^T: the calibrated objective is a linear layer's
        return None

    def requested_sparsity(self) -> Optional[float]:
        if self.nm is not None:
            return 1 - self.nm.n / self.nm.m
        if self.method in ("threshold", "auto") or self.amount is None or self.amount == "auto":
            return None  # a magnitude, per-layer amounts of its own, or a level not known yet
        return self.amount
