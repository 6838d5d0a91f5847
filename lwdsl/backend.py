"""The backend protocol and the lazy registry of backends.

Lifecycle of a run (driven by :mod:`lwdsl.runner`, which never branches on a backend's name):

1. ``unsupported(step)`` for every step, before anything is loaded: a step the backend cannot
   run fails the run up front, naming the step and the backend.
2. ``load_model`` builds a named model or loads a checkpoint (never modifying the file), or
   ``train`` produces a baseline.
3. ``layers`` lists the model's layers with portable kinds, for selectors.
4. ``apply`` runs one step on the model in place (or returns a new model, e.g. after removing
   channels) for the layer names its selector matched.
5. ``evaluate``, ``stats``, ``latency_ms`` and ``state`` (sizes) measure after every step.
6. ``finalize`` makes masks permanent (plain weights, no hooks); the runner then writes the
   canonical weights compactly (``lwdsl.weights``) and ``save_native`` the framework file.

A backend is found by name in :data:`BACKENDS` (explicit data) or in the ``lwdsl.backends``
entry-point group for third-party backends, and imported only when asked for, with an install
hint when its framework is missing.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence

import numpy as np

from .errors import LwdslError
from .specs import StepSpec, TrainingOptions

__all__ = [
    "BACKENDS",
    "Backend",
    "LayerInfo",
    "LayerStats",
    "ModelStats",
    "StepContext",
    "Dataset",
    "get_backend",
    "backend_names",
    "SupportTable",
    "support_table",
]


@dataclass(frozen=True)
class LayerInfo:
    """One layer with weights. ``kind`` is portable: conv, linear, embedding, norm or other.

    ``shape`` is the weight's shape in the canonical (PyTorch) layout: ``[out, in, kh, kw]``
    for conv, ``[out, in]`` for linear, whatever the framework stores.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    params: int  # all parameters of the layer (weight + bias + ...)


@dataclass(frozen=True)
class LayerStats:
    name: str
    kind: str
    weights: int  # elements of the weight tensor
    zeros: int  # of which are exactly zero

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


@dataclass(frozen=True)
class ModelStats:
    params: int
    nonzero_params: int
    layers: tuple[LayerStats, ...]


@dataclass
class Dataset:
    """Framework-free data: float32 NCHW images (normalised) and int64 labels, as numpy."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    sha256: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image."""
        return tuple(self.train_x.shape[1:])


ProgressFactory = Callable[[int, str], Any]


@dataclass
class StepContext:
    """What a step may use besides its spec: data, seed, progress bars, the original model.

    ``progress(total, description)`` returns an object with ``update(n)`` and ``close()``;
    every loop over data (training, calibration, evaluation) reports through it.
    """

    data: Dataset
    seed: int
    index: int  # the step's position in the recipe (0-based)
    progress: ProgressFactory
    original_model: Any = None
    run_dir: Optional[Path] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def step_seed(self) -> int:
        """The seed of this step: the run seed mixed with the step index (for random pruning)."""
        return (self.seed * 1_000_003 + self.index) % (2**32)


class Backend(ABC):
    """One framework's implementation of every op. Subclasses live in ``lwdsl.backends``."""

    name: ClassVar[str]
    extra: ClassVar[str]  # the pip extra that installs the framework
    native_suffix: ClassVar[str]  # suffix of the framework's own model file (".pt", ".keras")

    @abstractmethod
    def unsupported(self, step: StepSpec) -> Optional[str]:
        """Why this backend cannot run ``step`` (None when it can). Loads no model."""

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Framework versions for the lock file."""

    @abstractmethod
    def load_model(
        self,
        ref: str,
        input_shape: tuple[int, ...],
        num_classes: int,
        checkpoint: Optional[Path] = None,
    ) -> Any:
        """A model handle for a built-in name, ``torchvision:NAME``/``keras:NAME``, or a model
        file, with weights from ``checkpoint`` when given (a native file, or a ``.lwz`` file of
        canonical weights). ``input_shape`` is (C, H, W). Never writes to ``checkpoint``.

        The handle is the backend's own object (model plus masks and other state); the runner
        only passes it back. Raises LwdslError for an unknown name or a checkpoint that does
        not fit the model (naming the first mismatching tensor) or cannot be loaded safely."""

    @abstractmethod
    def layers(self, model: Any) -> list[LayerInfo]:
        """Layers with weights, in model order."""

    @abstractmethod
    def train(self, model: Any, options: TrainingOptions, ctx: StepContext) -> Any:
        """Plain cross-entropy training (the baseline)."""

    @abstractmethod
    def apply(self, model: Any, step: StepSpec, layers: Sequence[str], ctx: StepContext) -> Any:
        """Run ``step`` on ``layers`` (names from :meth:`layers`); returns the model."""

    @abstractmethod
    def evaluate(self, model: Any, ctx: StepContext) -> tuple[float, float]:
        """(accuracy in [0, 1], mean cross-entropy) on the test set."""

    @abstractmethod
    def stats(self, model: Any) -> ModelStats:
        """Parameter counts and per-layer weight sparsity."""

    @abstractmethod
    def latency_ms(self, model: Any, batch: int, input_shape: tuple[int, ...], threads: int) -> float:
        """Median forward latency in milliseconds at ``batch``, with ``threads`` threads."""

    @abstractmethod
    def state(self, model: Any) -> dict[str, np.ndarray]:
        """Canonical weights: ``"<layer>.weight"``, ``"<layer>.bias"`` (and norm buffers) as
        numpy in PyTorch layout and PyTorch's flatten order, masks applied. Same names and
        values on every backend for the built-in models: this is the cross-framework format."""

    @abstractmethod
    def load_state(self, model: Any, state: dict[str, np.ndarray]) -> None:
        """Set weights from a canonical state (inverse of :meth:`state`)."""

    @abstractmethod
    def save_native(self, model: Any, path: Path) -> None:
        """Write the framework's own model file (``model.pt`` state dict, ``model.keras``)."""

    @abstractmethod
    def finalize(self, model: Any) -> Any:
        """Make masks permanent: plain weights, no hooks or wrappers."""

    def set_seed(self, seed: int) -> None:
        """Seed the framework's global generators (weight initialisation of built-in models).
        The runner calls it before ``load_model``."""

    def adopt_data(self, train: Any, test: Any, name: str = "user") -> Dataset:
        """A :class:`Dataset` from the framework's own data objects (DataLoaders,
        ``tf.data.Dataset``) for the Python API; backends that support it override this."""
        raise LwdslError(f"the {self.name} backend cannot take data objects; give a data set name")

    def copy_model(self, model: Any) -> Any:
        """A deep copy (the original kept for distillation and for input safety)."""
        import copy

        return copy.deepcopy(model)


@dataclass(frozen=True)
class SupportTable:
    """What a backend runs, as data, importable without its framework (``lwdsl check
    --backend``, ``lwdsl ops``). A backend's ``unsupported`` delegates to it, so there is one
    truth; each built-in backend keeps its table in ``<package>/support.py`` as ``SUPPORT``.

    ``runs`` maps each op the backend runs to a few words on what it covers; ``exports`` lists
    the ``export`` formats it writes; any other op is refused with the reason in ``not_yet``.
    """

    backend: str
    runs: dict[str, str]
    exports: tuple[str, ...] = ()

    def unsupported(self, step: StepSpec) -> Optional[str]:
        if step.op == "export":
            from .specs import FORMAT_BACKENDS

            fmt = getattr(step, "format", "")
            if fmt in self.exports:
                return None
            writes = ", ".join(self.exports) or "no format yet"
            owners = [b for b in FORMAT_BACKENDS.get(fmt, ()) if b != self.backend]
            if owners:
                return f"export {fmt} is written by the {' or '.join(owners)} backend; the {self.backend} backend writes: {writes}"
            return f"export {fmt} is not implemented on the {self.backend} backend yet (it writes: {writes})"
        if step.op in self.runs:
            return None
        return f"{step.op} is not implemented on the {self.backend} backend yet"

    def describe(self, op: str) -> str:
        if op == "export":
            return ", ".join(self.exports) or "not yet"
        return self.runs.get(op, "not yet")


def support_table(name: str) -> Optional[SupportTable]:
    """The static support table of a built-in backend (None for plugins or when absent)."""
    key = ALIASES.get(name, name)
    if key not in BACKENDS:
        return None
    try:
        module = importlib.import_module(BACKENDS[key][0] + ".support")
    except ImportError:
        return None
    return getattr(module, "SUPPORT", None)


#: Built-in backends: name -> (module, class, pip extra). Imported only when asked for.
BACKENDS: dict[str, tuple[str, str, str]] = {
    "torch": ("lwdsl.backends.torch_backend", "TorchBackend", "torch"),
    "tensorflow": ("lwdsl.backends.tf_backend", "KerasBackend", "tensorflow"),
}
ALIASES = {"pytorch": "torch", "tf": "tensorflow", "keras": "tensorflow"}


def backend_names() -> list[str]:
    names = list(BACKENDS)
    try:
        from importlib.metadata import entry_points

        names += [ep.name for ep in entry_points(group="lwdsl.backends") if ep.name not in names]
    except Exception:  # pragma: no cover - metadata problems must not break the CLI
        pass
    return names


_instances: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (imported now), or a clear error with an install hint."""
    from .errors import did_you_mean

    key = ALIASES.get(name, name)
    if key in _instances:
        return _instances[key]
    if key in BACKENDS:
        module_name, cls_name, extra = BACKENDS[key]
    else:
        from importlib.metadata import entry_points

        eps = {ep.name: ep for ep in entry_points(group="lwdsl.backends")}
        if key not in eps:
            near = did_you_mean(name, backend_names() + list(ALIASES))
            raise LwdslError(
                f"unknown backend '{name}' (known: {', '.join(backend_names())})",
                hint=f"did you mean '{near}'?" if near else None,
            )
        module_name, _, cls_name = eps[key].value.partition(":")
        extra = key
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LwdslError(
            f"the {key} backend needs a framework that is not installed ({exc.name or exc})",
            hint=f"pip install 'lwdsl[{extra}]'",
        ) from exc
    backend = getattr(module, cls_name)()
    _instances[key] = backend
    return backend
