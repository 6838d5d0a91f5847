"""``distill``: train a student on a teacher's soft targets (and features, relations).

Loss, per batch of size B (KL with 'batchmean' reduction, i.e. summed over classes and divided
by B, never by the number of classes):

    L = (1 - alpha) * CE(z_s, y)
        + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
        + beta  * mean_pairs MSE(f_t, proj(f_s))          (features=[...])
        + gamma * relation loss (distance or angle, RKD)  (relation=...)

With several teachers, z_t is the mean of their logits. Without ``student`` the current model
is the student and the teacher is the model as it was before the pipeline (self-distillation).
With ``data=NAME`` (a transfer set) the student trains on NAME's training images instead of the
run's, on soft targets only (``alpha=1``: a transfer set's labels are never read); accuracy is
still measured on the run's test set.
"""

from __future__ import annotations

import os
from typing import ClassVar, Literal, Optional, Union

from pydantic import Field, model_validator

from .base import FeaturePair, Refusal, StepSpec, TrainingOptions
from .train import no_epochs

__all__ = ["DistillSpec", "RELATION_MAX_BATCH"]

#: The largest ``batch`` each relation loss takes. Its memory grows faster than the batch: the
#: distance loss holds B x B x C differences (C classes) and the angle loss B x B x B cosines,
#: each several times over (student, teacher, gradients): 4 bytes x 256^3 is 64 MiB per angle
#: tensor, 4 bytes x 512^2 x 1000 classes is 1 GiB per distance tensor. A larger batch is
#: refused at check time, never tried (at batch=2048 the angle loss asked for 32 GiB).
RELATION_MAX_BATCH: dict[str, int] = {"distance": 512, "angle": 256}


class DistillSpec(StepSpec, TrainingOptions):
    """Knowledge distillation into ``student`` (or into the current model).

    Example: ``distill T=2 alpha=0.5 student=seedcnn_student epochs=3``.
    """

    positional: ClassVar[tuple[str, ...]] = ()
    default_kinds: ClassVar[tuple[str, ...]] = ("all",)
    summary: ClassVar[str] = "train a student on soft targets, features or relations of teachers"
    FORMS: ClassVar[tuple[str, ...]] = ("soft", "student", "teachers", "features", "relation", "transfer")

    op: Literal["distill"] = "distill"
    T: float = Field(default=4.0, gt=0, le=100, description="softmax temperature")
    alpha: float = Field(default=0.5, ge=0, le=1, description="weight of the soft-target loss")
    student: Optional[str] = Field(default=None, description="model name or path; default: the current model")
    teacher: Union[Literal["original"], str, tuple[str, ...]] = Field(
        default="original", description="original (the input model), a checkpoint path, or a list of them"
    )
    features: tuple[FeaturePair, ...] = Field(default=(), description="teacher_layer->student_layer hint pairs")
    beta: float = Field(default=1.0, ge=0, description="weight of the feature loss")
    relation: Optional[Literal["distance", "angle"]] = Field(default=None, description="relational KD term")
    gamma: float = Field(default=1.0, ge=0, description="weight of the relation loss")
    data: Optional[str] = Field(
        default=None, min_length=1, description="transfer set: train on this data set's images (soft targets only, alpha=1)"
    )
    schedule: Literal["constant", "cosine", "step"] = Field(
        default="constant", description="learning-rate schedule over the step's epochs (as finetune's)"
    )
    jitter: int = Field(
        default=0, ge=0, le=16, description="translate each training image by up to N pixels; teachers see the moved images"
    )

    @model_validator(mode="after")
    def _check(self) -> "DistillSpec":
        if isinstance(self.teacher, tuple) and not self.teacher:
            raise ValueError("teacher=[] names no teacher")
        if "beta" in self.model_fields_set and not self.features:
            raise ValueError("beta= weights the feature loss: give features=[teacher_layer->student_layer]")
        if "gamma" in self.model_fields_set and self.relation is None:
            raise ValueError("gamma= weights the relation loss: give relation=distance or angle")
        if self.relation is not None and self.batch > RELATION_MAX_BATCH[self.relation]:
            limit = RELATION_MAX_BATCH[self.relation]
            size = "B x B x C differences" if self.relation == "distance" else "B x B x B cosines"
            raise Refusal(
                f"batch={self.batch} is too large for relation={self.relation}, whose memory grows faster than the batch "
                f"({size} for a batch of B): at most batch={limit} with relation={self.relation}; write batch={limit} or less",
                field="batch",
                expected=f"`batch` = a whole number from 1 to {limit} with relation={self.relation} "
                f"({RELATION_MAX_BATCH['distance']} with distance, {RELATION_MAX_BATCH['angle']} with angle)",
            )
        if self.data is not None:
            _check_data_name(self.data)
            if self.alpha != 1:
                raise ValueError(
                    f"data={self.data} is a transfer set: the student learns only the teacher's soft targets there "
                    f"(its labels belong to another task and are never read), so alpha must be 1, got alpha={self.alpha:g}; "
                    "write alpha=1"
                )
        return self

    def models_named(self) -> tuple[str, ...]:
        return (self.student,) if self.student else ()

    def trains(self) -> bool:
        return True

    def paths_from(self, folder: str) -> "DistillSpec":
        """Teacher checkpoints relative to ``folder`` (the recipe's), made absolute."""
        if self.teacher == "original":
            return self

        def resolve(ref: str) -> str:
            return ref if ref == "original" or os.path.isabs(ref) else os.path.normpath(os.path.join(folder, ref))

        teacher = tuple(map(resolve, self.teacher)) if isinstance(self.teacher, tuple) else resolve(self.teacher)
        return self if teacher == self.teacher else self.model_copy(update={"teacher": teacher})

    def no_op(self) -> Optional[Refusal]:
        return no_epochs(self)

    def forms(self) -> tuple[str, ...]:
        out = ["soft"]
        if self.student is not None:
            out.append("student")
        if self.teacher != "original":
            out.append("teachers")
        if self.features:
            out.append("features")
        if self.relation is not None:
            out.append("relation")
        if self.data is not None:
            out.append("transfer")
        return tuple(out)

    def needs_original(self) -> bool:
        teachers = self.teacher if isinstance(self.teacher, tuple) else (self.teacher,)
        return "original" in teachers

    def data_sets(self) -> tuple[str, ...]:
        return (self.data,) if self.data is not None else ()


def _check_data_name(name: str) -> None:
    """A ValueError (with did-you-mean) for a data set name :func:`lwdsl.data.builtin.data_shape` does not know."""
    from ...data.builtin import data_shape  # framework-free; knows names and shapes without reading data
    from ...errors import UsageError

    try:
        data_shape(name)
    except UsageError as exc:
        raise ValueError(f"data={name}: {exc.message}" + (f"; {exc.hint}" if exc.hint else "")) from None
