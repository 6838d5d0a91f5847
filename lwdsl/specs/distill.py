"""``distill``: train a student on a teacher's soft targets (and features, relations).

Loss, per batch of size B (KL with 'batchmean' reduction, i.e. summed over classes and divided
by B, never by the number of classes):

    L = (1 - alpha) * CE(z_s, y)
        + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
        + beta  * mean_pairs MSE(f_t, proj(f_s))          (features=[...])
        + gamma * relation loss (distance or angle, RKD)  (relation=...)

With several teachers, z_t is the mean of their logits. Without ``student`` the current model
is the student and the teacher is the model as it was before the pipeline (self-distillation).
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional, Union

from pydantic import Field, model_validator

from .base import FeaturePair, StepSpec, TrainingOptions

__all__ = ["DistillSpec"]


class DistillSpec(StepSpec, TrainingOptions):
    """Knowledge distillation into ``student`` (or into the current model).

    Example: ``distill T=2 alpha=0.5 student=seedcnn_student epochs=3``.
    """

    positional: ClassVar[tuple[str, ...]] = ()
    default_kinds: ClassVar[tuple[str, ...]] = ("all",)
    summary: ClassVar[str] = "train a student on soft targets, features or relations of teachers"
    FORMS: ClassVar[tuple[str, ...]] = ("soft", "student", "teachers", "features", "relation")

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

    @model_validator(mode="after")
    def _check(self) -> "DistillSpec":
        if isinstance(self.teacher, tuple) and not self.teacher:
            raise ValueError("teacher=[] names no teacher")
        if "beta" in self.model_fields_set and not self.features:
            raise ValueError("beta= weights the feature loss: give features=[teacher_layer->student_layer]")
        if "gamma" in self.model_fields_set and self.relation is None:
            raise ValueError("gamma= weights the relation loss: give relation=distance or angle")
        return self

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
        return tuple(out)

    def needs_original(self) -> bool:
        teachers = self.teacher if isinstance(self.teacher, tuple) else (self.teacher,)
        return "original" in teachers
