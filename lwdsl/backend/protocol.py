"""The backend protocol: what a framework must provide to run recipes.

Lifecycle of a run (driven by :mod:`lwdsl.runner.pipeline`, which never branches on a backend's name or
on an op):

1. ``unsupported(step)`` for every step, before anything is loaded, from the backend's static
   :class:`~lwdsl.backend.support.SupportTable` (per op and per form): a step the backend
   cannot run fails the run up front, naming the step and the backend.
2. ``load_model`` builds a named model or loads a checkpoint (never modifying the file), or
   ``train`` produces a baseline.
3. ``layers`` lists the model's layers with portable kinds, for selectors.
4. ``apply`` runs one step: it refuses what the support table refuses, then calls the op's
   handler from the backend's ``handlers`` table (:func:`~lwdsl.backend.steps.handler_table`), which
   changes the model in place or returns a new handle (after filters are removed, or a student
   replaces the model).
5. ``evaluate``, ``stats``, ``latency_ms`` and ``state`` (sizes) measure after every step.
6. ``finalize`` makes masks permanent (plain weights, no hooks); the runner then writes the
   canonical weights compactly (``lwdsl.backend.weights``) and ``save_native`` the framework file.

Every number that gives a step its meaning (masks, data order, schedules, quantization codes,
distillation losses) comes from :mod:`lwdsl.semantics`; a backend only moves tensors and runs
its framework.
"""

from __future__ import annotations

import importlib
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

import numpy as np

from ..data.dataset import Dataset
from ..errors import LwdslError
from ..language.specs import StepSpec, TrainingOptions
from .context import StepContext
from .handle import ModelHandle
from .registry import unsupported
from .support import SupportTable

__all__ = ["Backend", "Handler", "LayerInfo", "LayerStats", "ModelStats"]

#: A handler runs one op: (handle, spec, layer names its selector matched, context) -> handle.
Handler = Callable[[Any, Any, Sequence[str], StepContext], Any]

#: Packages a run may import for some models or data (transformer models, their tokenizers,
#: ``export pt2e``, KerasHub): named in the lock file when it did (:meth:`Backend.versions`).
USED_PACKAGES = ("transformers", "tokenizers", "torchao", "keras_hub")


@dataclass(frozen=True)
class LayerInfo:
    """One layer with weights. ``kind`` is portable: ``conv`` (not the transposed ones, whose
    weight is laid out [in, out, ...]), ``linear``, ``embedding``, ``norm`` (batch, layer, group
    and instance norms, and the transformers' own ``*RMSNorm``/``*LayerNorm``) or ``other``.

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


class Backend(ABC):
    """One framework's implementation of every op. Subclasses live in ``lwdsl.backends``.

    Class attributes:
        name, extra, native_suffix: the backend's name, the pip extra that installs its
            framework, the suffix of the framework's own model file (``.pt``, ``.keras``).
        support: the static table of what it runs (``<package>/support.py``).
        handlers: op -> :data:`Handler` (built ones: ``handler_table(__package__, SUPPORT.runs)``);
            a contract test checks that its keys are exactly the ops ``support`` runs.
    """

    name: ClassVar[str]
    extra: ClassVar[str]
    native_suffix: ClassVar[str]
    support: ClassVar[SupportTable]
    handlers: ClassVar[Mapping[str, Handler]]

    def unsupported(self, step: StepSpec) -> Optional[str]:
        """Why this backend cannot run ``step`` (None when it can), from its support table."""
        return unsupported(self.support, step)

    def apply(self, model: Any, step: StepSpec, layers: Sequence[str], ctx: StepContext) -> Any:
        """Run ``step`` on ``layers`` (names from :meth:`layers`); returns the model handle."""
        reason = self.unsupported(step)
        if reason:
            raise LwdslError(reason)
        ctx.backend = self
        return self.handlers[step.op](model, step, layers, ctx)

    #: The packages whose versions the lock file names (:meth:`versions`).
    packages: tuple[str, ...] = ()

    def versions(self) -> dict[str, str]:
        """Versions for the lock file: each of :attr:`packages` (its ``__version__``, a build's
        own string: ``2.14.1+cu130``), and each of :data:`USED_PACKAGES` the run imported."""
        out = {}
        for name in (*self.packages, *(n for n in USED_PACKAGES if n in sys.modules and n not in self.packages)):
            try:
                out[name] = str(getattr(importlib.import_module(name), "__version__", "unknown"))
            except ImportError:
                out[name] = "not installed"
        return out

    @abstractmethod
    def load_model(
        self,
        ref: Any,
        input_shape: tuple[int, ...],
        num_classes: int,
        checkpoint: Optional[Path] = None,
    ) -> Any:
        """A model handle for a built-in name, ``torchvision:NAME``/``keras:NAME``, a model
        file or the framework's own model object (copied), with weights from ``checkpoint``
        when given (a native file, or a ``.lwz`` file of canonical weights). ``input_shape``
        is (C, H, W). Never writes to ``checkpoint`` nor changes a given model object.

        The handle is the backend's own object (model plus masks and other state); the runner
        only passes it back. Raises LwdslError for an unknown name or a checkpoint that does
        not fit the model (naming the first mismatching tensor) or cannot be loaded safely."""

    @abstractmethod
    def native(self, model: Any) -> Any:
        """The framework's own model object of a handle (``nn.Module``, ``keras.Model``)."""

    @abstractmethod
    def layers(self, model: Any) -> list[LayerInfo]:
        """Layers with weights, in model order."""

    @abstractmethod
    def fit(self, model: Any, options: TrainingOptions, ctx: StepContext, **kwargs: Any) -> list[float]:
        """Train ``model`` by ``options``: the core's loop (:func:`lwdsl.backend.fit.fit`) over
        this backend's trainer; ``kwargs`` as that function takes them (``label``, ``l1``,
        ``masters``, a distillation ``loss``, ...). Every op that trains calls it; returns the losses."""

    def train(self, model: Any, options: TrainingOptions, ctx: StepContext) -> Any:
        """Plain cross-entropy training (the baseline)."""
        self.fit(model, options, ctx, label="train")
        return model

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

    #: The backend's :class:`~lwdsl.backend.load.LoadParts`: :meth:`load_state`, :meth:`masks_of`,
    #: :meth:`set_masks` and :meth:`finalize` are written once over them (None: it has none).
    load_parts: ClassVar[Any] = None

    def _load_parts(self) -> Any:
        if self.load_parts is None:
            raise LwdslError(f"the {self.name} backend cannot load a state or move its masks")
        return self.load_parts

    def load_state(self, model: Any, state: dict[str, np.ndarray], source: str = "the state") -> None:
        """Set weights from a canonical state (inverse of :meth:`state`): :func:`lwdsl.backend.load.load_state`."""
        from .load import load_state

        load_state(self._load_parts(), model, state, source)

    @abstractmethod
    def save_native(self, model: Any, path: Path) -> None:
        """Write the framework's own model file (``model.pt`` state dict, ``model.keras``)."""

    def finalize(self, model: Any) -> Any:
        """Make masks permanent: plain weights (pruned ones are zero), no hooks or wrappers; the
        masks dropped."""
        self._load_parts()
        model.apply_masks()
        model.masks.clear()
        return model

    def is_model(self, obj: Any) -> bool:
        """Whether ``obj`` is a model object of this backend's framework (``--model
        file.py:NAME`` calls NAME when it is not: a class or a factory)."""
        return False

    def set_threads(self, threads: int) -> int:
        """Train, evaluate and calibrate with ``threads`` threads from now on (the runner calls
        it before the model is built); returns the count in effect, which may differ when the
        framework fixed its thread pool earlier in this process."""
        return threads

    def get_threads(self) -> int:
        """The framework's thread count now (the runner puts it back after a run)."""
        return 1

    #: Where training, evaluation and calibration run (``cpu``, ``cuda:0``, ...), set by :meth:`set_device`.
    device: str = "cpu"

    #: The ``precision=`` values its trainer runs (:mod:`lwdsl.semantics.precision`); a step
    #: asking for another is refused before any work (:func:`lwdsl.backend.precision.check_precisions`).
    precisions: tuple[str, ...] = ("fp32",)

    def set_device(self, device: str) -> dict[str, str]:
        """Train, evaluate and calibrate on ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``,
        ``mps``) from now on; returns what is in effect: ``{"device": ..., "model": ...}``.
        ``auto`` is a GPU when one is present, else the CPU. Raises UsageError for a device this
        machine does not have. A backend with GPUs overrides this."""
        from ..errors import UsageError
        from .threads import cpu_model

        if device not in ("auto", "cpu"):
            raise UsageError(f"--device {device}: the {self.name} backend runs on the CPU only", hint="use --device cpu (or auto)")
        self.device = "cpu"
        return {"device": "cpu", "model": cpu_model()}

    def set_seed(self, seed: int) -> None:
        """Seed the framework's global generators (weight initialisation of built-in models).
        The runner calls it before ``load_model``."""

    def adopt_data(self, train: Any, test: Any, name: str = "user") -> Dataset:
        """A :class:`~lwdsl.data.dataset.Dataset` from the framework's own data objects
        (DataLoaders, ``tf.data.Dataset``) for the Python API; backends override this."""
        raise LwdslError(f"the {self.name} backend cannot take data objects; give a data set name")

    def positions(self, model: Any, input_shape: tuple[int, ...]) -> dict[str, int]:
        """How many times each conv and linear layer's weights are applied to one input of
        ``input_shape`` (C, H, W): the positions of its output (H' x W' for a 2-d convolution,
        1 for a linear layer on a vector). With the layer's non-zero weights this gives its
        multiply-accumulates (:func:`lwdsl.runner.metrics.macs`). Backends that count MACs
        override this."""
        raise LwdslError(f"the {self.name} backend does not count multiply-accumulates")

    def groups(self, model: Any) -> list[Any]:
        """The model's dependency groups for structured removal
        (:class:`lwdsl.semantics.groups.Group`, listed by ``lwdsl explain --model``); backends
        that find them override this."""
        raise LwdslError(f"the {self.name} backend does not find dependency groups")

    def wrap_model(self, obj: Any, input_shape: tuple[int, ...], num_classes: int) -> Any:
        """A handle around the user's own model object itself, not a copy: ``lwdsl.attach``
        compresses the model the user's loop trains. Backends that support attach override this."""
        raise LwdslError(f"the {self.name} backend cannot attach a recipe to a model of your own training loop")

    def release(self, model: Any) -> None:
        """The user's own model (:meth:`wrap_model`) goes back where its owner had it (the
        device it came on), when ``lwdsl.attach``'s session ends, however it ends. Nothing for
        a backend that never moves it."""

    def user_optimizer(self, optimizer: Any) -> tuple[Callable[[float], None], Callable[[], None]]:
        """(set its learning rate, clear its state) for the user's own optimizer (``lwdsl.attach``)."""
        raise LwdslError(f"the {self.name} backend cannot drive an optimizer of yours")

    def make_callback(self, begin: Callable[[Any], None], batch_end: Callable[[Any], None], end: Callable[[], None]) -> Any:
        """The framework's training callback calling ``begin(model)``, ``batch_end(loss)`` after
        each optimizer step and ``end()`` (the Keras callback of ``lwdsl.keras_callback``)."""
        raise LwdslError(f"the {self.name} backend has no training callback: use lwdsl.attach in your loop")

    def masks_of(self, model: Any) -> dict[str, np.ndarray]:
        """The model's pruning masks, layer -> bool keep array in the canonical layout (what a
        resumed run must hold again: a pruned weight is not just a zero)."""
        return self._load_parts().masks_to_canon(model, model.masks)

    def set_masks(self, model: Any, masks: dict[str, np.ndarray]) -> None:
        """Give the model these masks (from :meth:`masks_of`), applied to its weights."""
        native = self._load_parts().masks_from_canon(model, masks)
        model.masks.clear()
        model.masks.update(native)
        model.apply_masks()

    def handle_meta(self, model: Any) -> dict[str, Any]:
        """What else of the handle a resumed run needs, as JSON (not its weights, codes, scales
        or masks: :meth:`state` and :meth:`masks_of` hold those): a
        :class:`~lwdsl.backend.handle.ModelHandle`'s quantization record
        (:meth:`~lwdsl.backend.handle.QuantState.meta`: modes, settings, calibration)."""
        return model.qstate.meta() if isinstance(model, ModelHandle) else {}

    def set_handle_meta(self, model: Any, meta: dict[str, Any], data: Optional[Dataset] = None) -> None:
        """Put back what :meth:`handle_meta` gave, after :meth:`load_state`; ``data``: the
        resumed run's data set (the calibration reference indexes its training images)."""
        if isinstance(model, ModelHandle):
            model.qstate.set_meta(meta, getattr(data, "train_x", None))

    def join_ranks(self, rank: int, world: int, timeout_s: float, join_s: Optional[float] = None) -> Any:
        """Join the other ranks of a run started by a launcher (its environment says where):
        a :class:`lwdsl.backend.ranks.Ranks` over the framework's collectives, on
        :attr:`device`; the join waits ``join_s`` seconds at most (None: ``timeout_s``), then
        raises UsageError; each collective waits ``timeout_s``. Backends that train on several
        processes override this (and say so in their support table's ``workers``)."""
        from ..errors import UsageError

        raise UsageError(f"the {self.name} backend cannot run on several workers yet", hint="run with --backend torch, or without --workers")

    def launch(self, workers: int, entry: Callable[..., Any], args: tuple[Any, ...], timeout_s: float, max_restarts: int = 0,
               join_s: Optional[float] = None) -> dict[int, int]:
        """Run ``entry(*args)`` in ``workers`` processes of this machine through the
        framework's own launcher, each with the environment :meth:`join_ranks` reads; when a
        worker fails, the launcher stops the others and starts them all again, up to
        ``max_restarts`` times (the restarted workers resume: :mod:`lwdsl.runner.resume`);
        returns each failed local rank's exit code (empty: all succeeded)."""
        from ..errors import UsageError

        raise UsageError(f"the {self.name} backend cannot run on several workers yet", hint="run with --backend torch, or without --workers")

    def copy_model(self, model: Any) -> Any:
        """A deep copy (the original kept for distillation and for input safety)."""
        import copy

        return copy.deepcopy(model)
