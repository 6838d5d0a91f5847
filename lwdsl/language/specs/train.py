"""``finetune`` and ``regularize``: the steps that only train.

``finetune`` trains the whole model with cross-entropy on the training set; pruned weights stay
zero (masks are fixed). ``regularize l1=LAMBDA`` trains with ``LAMBDA * sum(|w|)`` over the
selected layers' weights added to the loss (sparse training, to be followed by
``prune threshold``).
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field

from .base import Refusal, StepSpec, TrainingOptions

__all__ = ["FinetuneSpec", "RegularizeSpec", "no_epochs"]

#: The largest ``epochs`` of a step (TrainingOptions' own bound).
MAX_EPOCHS = 10_000


def no_epochs(spec: TrainingOptions) -> Optional[Refusal]:
    """``epochs=0`` on a step that only trains: it would change nothing."""
    if spec.epochs != 0:
        return None
    return Refusal(
        "epochs=0 trains for no epoch, so the step would change nothing; write epochs=1 or more, or remove the step",
        field="epochs",
        expected=f"`epochs` = a whole number from 1 to {MAX_EPOCHS}",
    )


class FinetuneSpec(StepSpec, TrainingOptions):
    """Train the current model; masks from earlier prune steps stay fixed.

    Example: ``finetune epochs=5 lr=0.01 optimizer=sgd momentum=0.9 schedule=cosine``.
    """

    positional: ClassVar[tuple[str, ...]] = ()
    default_kinds: ClassVar[tuple[str, ...]] = ("all",)
    summary: ClassVar[str] = "train with cross-entropy; pruned weights stay zero"

    op: Literal["finetune"] = "finetune"
    schedule: Literal["constant", "cosine", "step"] = Field(
        default="constant", description="learning-rate schedule over the step's epochs"
    )
    jitter: int = Field(
        default=0, ge=0, le=16, description="translate each training image by up to N pixels (lwdsl.semantics.jitter)"
    )

    def trains(self) -> bool:
        return True

    def no_op(self) -> Optional[Refusal]:
        return no_epochs(self)


class RegularizeSpec(StepSpec, TrainingOptions):
    """Sparse training: cross-entropy plus ``l1 * sum(|w|)`` over the selected weights.

    Example: ``regularize l1=1e-4 epochs=3 | prune threshold 0.01``.
    """

    positional: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = "train with an L1 penalty on weights (before a threshold prune)"

    op: Literal["regularize"] = "regularize"
    l1: float = Field(gt=0, le=1, description="weight of the L1 penalty (lambda)")

    def trains(self) -> bool:
        return True

    def no_op(self) -> Optional[Refusal]:
        return no_epochs(self)
