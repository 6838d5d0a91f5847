"""What every step spec shares: immutability, no unknown fields, a selector, positional rules.

A spec is the validated, framework-free meaning of one recipe step. It is frozen and forbids
unknown fields, so a typo in an option is an error, never dropped. Runtime state (masks,
optimisers, models) never lives in a spec: backends keep it in their own objects.

``positional`` lists, in order, the fields a bare value may fill: the compiler gives each bare
word or number to the first listed field, not yet filled, whose type accepts it. That is how
``prune global l1 0.2`` becomes ``scope="global", method="l1", amount=0.2`` without the grammar
naming any operation.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...semantics.precision import PRECISIONS

__all__ = [
    "KINDS",
    "Glob",
    "Pattern",
    "Selector",
    "NMRatio",
    "FeaturePair",
    "StepSpec",
    "TrainingOptions",
    "Refusal",
]

KINDS = ("conv", "linear", "embedding", "norm", "all")
Kind = Literal["conv", "linear", "embedding", "norm", "all"]


class Refusal(ValueError):
    """A spec validator's refusal that names the field at fault and what it allows, where the
    field's own type and range would say less (``batch`` is 1 to 65,536, but at most 256 with
    ``relation=angle``). Error messages locate it at ``field`` and show ``expected``."""

    def __init__(self, message: str, *, field: str, expected: str) -> None:
        super().__init__(message)
        self.field = field
        self.expected = expected


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Glob(_Frozen):
    """A shell-style pattern matched against full layer names (``"features.*"``)."""

    glob: str = Field(min_length=1)


Pattern = Union[Kind, Glob]


class Selector(_Frozen):
    """Which layers a step applies to: ``on`` patterns minus ``except`` patterns.

    Portable kinds: ``conv`` (Conv1d/2d/3d, Keras Conv*), ``linear`` (Linear, Keras Dense),
    ``embedding``, ``norm`` (BatchNorm/LayerNorm), ``all`` (every layer with weights). A glob
    matches layer names. ``expect`` states how many layers must match (``expect_at_least``
    turns ``=`` into ``>=``). Matching no layer at all is always an error.
    """

    on: tuple[Pattern, ...] = ()
    except_: tuple[Pattern, ...] = Field(default=(), alias="except")
    expect: Optional[int] = Field(default=None, ge=0)
    expect_at_least: bool = False

    @model_validator(mode="after")
    def _check(self) -> "Selector":
        if self.expect is None and self.expect_at_least:
            raise ValueError("expect_at_least needs expect")
        return self


class NMRatio(_Frozen):
    """N:M sparsity: in every group of M consecutive weights, N are kept (``2:4``)."""

    n: int = Field(ge=1)
    m: int = Field(ge=2, le=64)

    @model_validator(mode="after")
    def _check(self) -> "NMRatio":
        if self.n >= self.m:
            raise ValueError(f"N:M needs N < M (N weights kept of every M), got {self.n}:{self.m}")
        return self

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


class FeaturePair(_Frozen):
    """A hint pair for feature distillation: ``teacher_layer->student_layer``."""

    teacher: str = Field(min_length=1)
    student: str = Field(min_length=1)

    def __str__(self) -> str:
        return f"{self.teacher}->{self.student}"


class StepSpec(_Frozen):
    """Base of every op spec.

    Class attributes:
        op: the op's name (a ``Literal`` field in each subclass; the union's discriminator).
        positional: fields a bare value may fill, in the order they are tried.
        default_kinds: the layers the step covers when it has no selector.
        summary: one line for ``lwdsl ops`` and ``explain``.
        FORMS: every form of the op a backend may or may not run (support tables list the
            forms they run; :meth:`forms` says which ones a step uses).
    """

    positional: ClassVar[tuple[str, ...]] = ()
    default_kinds: ClassVar[tuple[str, ...]] = ("conv", "linear")
    summary: ClassVar[str] = ""
    FORMS: ClassVar[tuple[str, ...]] = ()

    selector: Optional[Selector] = None

    def effective_selector(self) -> Selector:
        """The selector the step really uses (its own, or ``on`` its default kinds)."""
        return self.selector or Selector(on=self.kinds_by_default(self.__dict__))

    @classmethod
    def kinds_by_default(cls, fields: dict) -> tuple[str, ...]:
        """The kinds a selector without ``on`` covers, given the step's fields as written
        (``quantize int4 method=gptq``: linear only); ``default_kinds`` unless a spec says more."""
        return cls.default_kinds

    def forms(self) -> tuple[str, ...]:
        """The forms of the op this step uses (each one of ``FORMS``); a backend runs the step
        when its support table lists all of them."""
        return ()

    def layer_kinds(self) -> Optional[tuple[str, ...]]:
        """The only layer kinds the step can work on (a selected layer of another kind is an
        error before any work), or None for any kind."""
        return None

    def requested_sparsity(self) -> Optional[float]:
        """The fraction of each selected layer's weights this step asks to be zero (for the
        report's requested-vs-achieved), or None when the step asks for none."""
        return None

    def trains(self) -> bool:
        """Whether the step trains the model (runs an optimizer over its weights): the one fact
        the cross-step checks use, e.g. that nothing trains after an ``fp16``/``bf16`` cast."""
        return False

    def training_options(self) -> Optional["TrainingOptions"]:
        """How the step trains (epochs, lr, optimizer, batch) when it :meth:`trains`, else None."""
        return self if self.trains() and isinstance(self, TrainingOptions) else None

    def no_op(self) -> Optional["Refusal"]:
        """Why the step, as given, would change nothing (a :class:`Refusal` naming the field and
        what it allows), or None. A step that does nothing is refused, never run."""
        return None

    def needs_original(self) -> bool:
        """Whether the step uses the model as it was before the first step (the runner then
        keeps a copy in :attr:`lwdsl.backend.StepContext.original`)."""
        return False

    def paths_from(self, folder: str) -> "StepSpec":
        """This step with the files it reads given relative to ``folder`` made absolute (the
        folder of the recipe file it is written in); the step itself when it reads none."""
        return self

    def models_named(self) -> tuple[str, ...]:
        """Models the step builds by name besides the run's (``distill student=NAME``): the
        runner builds each once before reading data, so an unknown name fails up front, and
        looks them up first in ``lwdsl.run(models=...)``."""
        return ()

    def data_sets(self) -> tuple[str, ...]:
        """Data sets the step reads besides the run's (``distill data=NAME``): the runner checks
        their input shape before reading any data and loads them into
        :attr:`lwdsl.backend.StepContext.datasets`."""
        return ()


class TrainingOptions(_Frozen):
    """Options of every step that trains (fine-tuning, sparse training, gradual pruning, ...)."""

    epochs: int = Field(default=1, ge=0, le=10_000, description="passes over the training set")
    lr: float = Field(default=0.01, gt=0, le=10, description="learning rate")
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    batch: int = Field(default=64, ge=1, le=65_536, description="batch size")
    precision: Literal[PRECISIONS] = Field(  # type: ignore[valid-type]
        default="fp32",
        description="fp32; bf16: autocast, float32 master weights; fp16: autocast with loss scaling, GPU only",
    )
