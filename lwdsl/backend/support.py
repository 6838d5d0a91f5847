"""What a backend runs, as data: per op and per form, importable without any framework.

``lwdsl check --backend``, ``lwdsl ops`` and the backend's own ``apply`` all read the same
table, so a check can never promise what a run refuses; a contract test checks that every
backend's handlers (and exporters) are exactly what its table lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..language.specs import OPS, StepSpec

__all__ = ["SupportTable"]


@dataclass(frozen=True)
class SupportTable:
    """The ops a backend runs and, for each, the forms it runs (``quantize``: ``int8/static``,
    ``export``: ``onnx``; see each spec's ``FORMS`` and ``forms()``).

    A step is run when its op is listed and every form the step uses (``step.forms()``) is
    listed for that op. Each built-in backend keeps its table in ``<package>/support.py`` as
    ``SUPPORT``.

    Attributes:
        backend: the backend's name.
        runs: op -> the forms of that op the backend runs (empty for ops without forms).
        notes: op -> a few words shown by ``lwdsl ops`` (how it runs, the engine used).
        workers: whether it trains on several processes (``lwdsl run --workers N``, a
            launcher's ranks; :meth:`lwdsl.backend.Backend.join_ranks`).
        no_models: model names (before any ``?sizes``) the backend cannot build -> why, so
            that ``lwdsl check --backend`` refuses a recipe's ``target`` up front.
    """

    backend: str
    runs: dict[str, tuple[str, ...]]
    notes: dict[str, str] = field(default_factory=dict)
    workers: bool = False
    no_models: dict[str, str] = field(default_factory=dict)

    def model_refusal(self, model: str) -> Optional[str]:
        """Why the backend cannot build ``model`` (None when the table does not say)."""
        return self.no_models.get(str(model).partition("?")[0])

    def unsupported(self, step: StepSpec, others: Sequence["SupportTable"] = ()) -> Optional[str]:
        """Why the backend cannot run ``step`` (None when it can), in words naming the backend;
        ``yet`` is said unless one of ``others`` (the other backends' tables,
        :func:`lwdsl.backend.registry.unsupported` passes them) runs that form."""
        if step.op not in self.runs:
            return f"the {self.backend} backend cannot run {step.op} yet"
        have = self.runs[step.op]
        missing = [f for f in step.forms() if f not in have]
        if not missing:
            return None
        form = missing[0]
        what = f"export {form}" if step.op == "export" else f"run {step.op} {form}"
        elsewhere = [t.backend for t in others if t.backend != self.backend and form in t.runs.get(step.op, ())]
        return f"the {self.backend} backend cannot {what}" + ("" if elsewhere else " yet")

    def describe(self, op: str) -> str:
        """A few words for ``lwdsl ops``: the forms run (or "all forms"), or "not yet"."""
        if op not in self.runs:
            return "not yet"
        have = self.runs[op]
        every = getattr(OPS.get(op), "FORMS", ())
        words = "all forms" if every and set(have) == set(every) else (", ".join(have) or "yes")
        note = self.notes.get(op)
        return f"{words} ({note})" if note else words
