"""``KerasBackend``: the :class:`lwdsl.backend.Backend` protocol on Keras 3 (TensorFlow backend),
delegating to the modules of this package (one concept each, named as in the torch backend)."""

from __future__ import annotations

import os

from pathlib import Path
from typing import Any, Optional

import numpy as np

from lwdsl.backend import Backend, LayerInfo, ModelStats, StepContext
from lwdsl.backend.load import load_checkpoint
from lwdsl.backend.steps import handler_table
from lwdsl.data.dataset import Dataset
from lwdsl.errors import LwdslError, UsageError
from lwdsl.language.specs import TrainingOptions

from ._tf import keras, tf
from . import io
from .data import adopt_data
from .handle import KerasHandle
from .hf_folder import is_hf_folder, read_hf_handle
from .latency import latency_ms
from .layers import canonical_state, list_layers, model_stats, output_positions
from .models import build_model
from .support import SUPPORT
from .train import evaluate, fit

__all__ = ["KerasBackend"]


def _handle(model: Any) -> KerasHandle:
    if isinstance(model, KerasHandle):
        return model
    raise LwdslError(f"the tensorflow backend got a {type(model).__name__}, not one of its model handles")


class KerasBackend(Backend):
    """PyTorch-equivalent ops on Keras models (see docs/semantics.md). The model handle is a
    :class:`~lwdsl.backends.tf_backend.handle.KerasHandle`."""

    name = "tensorflow"
    extra = "tensorflow"
    native_suffix = ".keras"
    support = SUPPORT
    handlers = handler_table(__package__, SUPPORT.runs)
    precisions = ("fp32", "bf16", "fp16")
    packages = ("tensorflow", "keras")
    load_parts = io.LOAD

    def is_model(self, obj: Any) -> bool:
        """A Keras 3 model, or a Keras 2 (``tf_keras``) one (refused when built, with how to move it)."""
        from .models import is_keras2

        return isinstance(obj, keras.Model) or (is_keras2(obj) and not isinstance(obj, type) and hasattr(obj, "layers"))

    def set_threads(self, threads: int) -> int:
        """TensorFlow's intra-op threads; it fixes them when its runtime starts (the first model
        built in this process), so after that the count already in effect is returned."""
        try:
            tf.config.threading.set_intra_op_parallelism_threads(max(1, int(threads)))
            return max(1, int(threads))
        except RuntimeError:
            return self.get_threads()

    def get_threads(self) -> int:
        return tf.config.threading.get_intra_op_parallelism_threads() or (os.cpu_count() or 1)

    def set_seed(self, seed: int) -> None:
        """TensorFlow's global seed, and Python's: Keras 3 draws the seed of a layer created
        without one (Dropout's ``SeedGenerator``, in the zoo's mlp1200 or a user's model) from
        Python's ``random`` when the layer is built, so a run's dropout follows its seed."""
        import random

        from .models import RUN_SEED

        tf.random.set_seed(seed)
        random.seed(seed)
        RUN_SEED[0] = int(seed)

    def adopt_data(self, train: Any, test: Any, name: str = "user") -> Dataset:
        return adopt_data(train, test, name)

    def load_model(
        self, ref: Any, input_shape: tuple[int, ...], num_classes: int, checkpoint: Optional[Path] = None
    ) -> KerasHandle:
        """A handle for a zoo name, ``keras:NAME``, a ``.keras``/``.h5`` file or a keras
        model object (cloned: the caller's model is never modified); ``checkpoint`` is a
        ``.lwz`` file of canonical weights or a ``.keras``/``.h5`` file (its weights are used),
        loaded as :meth:`load_state` does (narrower widths rebuild the model)."""
        if isinstance(ref, (str, Path)) and is_hf_folder(ref):  # a Hugging Face folder (hf_folder.py)
            handle = read_hf_handle(Path(ref), tuple(input_shape))
        else:
            handle = KerasHandle(build_model(ref, tuple(input_shape), num_classes))
            handle.ref = ref if isinstance(ref, str) else handle.model.name
        if checkpoint is not None:
            load_checkpoint(io.LOAD, handle, Path(checkpoint))
        return handle

    def join_ranks(self, rank: int, world: int, timeout_s: float, join_s: Optional[float] = None) -> Any:
        """The workers of ``TF_CONFIG``: TensorFlow's collective ops in MultiWorkerMirroredStrategy's cluster."""
        from .ranks import TFRanks

        return TFRanks(rank, world, self.device, timeout_s)

    def launch(self, workers: int, entry: Any, args: tuple[Any, ...], timeout_s: float, max_restarts: int = 0,
               join_s: Optional[float] = None) -> dict[int, int]:
        """``workers`` processes on localhost, each with its own ``TF_CONFIG``; a failed group
        restarted up to ``max_restarts`` times."""
        from lwdsl.backend.tfconfig import launch_local  # framework-free: `lwdsl run` calls it without TensorFlow

        return launch_local(workers, entry, args, timeout_s, max_restarts=max_restarts)

    def set_device(self, device: str) -> dict[str, str]:
        """TensorFlow places work on its first visible GPU: ``cpu`` hides the GPUs, ``cuda:N``
        leaves only GPU N visible, ``auto`` uses a GPU when TensorFlow sees one. Visibility can
        only change before TensorFlow first touches the GPUs in this process."""
        from lwdsl.backend.threads import cpu_model

        gpus = tf.config.list_physical_devices("GPU")
        if device == "mps":
            raise UsageError("--device mps: the tensorflow backend has no MPS device", hint="use --device cpu (or auto)")
        if device == "auto":
            device = "cuda" if gpus else "cpu"
        if device == "cpu":
            if gpus:
                try:
                    tf.config.set_visible_devices([], "GPU")
                except RuntimeError as exc:
                    raise UsageError(f"--device cpu: TensorFlow has set up its GPUs in this process already ({exc})",
                                     hint="set CUDA_VISIBLE_DEVICES= before starting") from None
            self.device = "cpu"
            return {"device": "cpu", "model": cpu_model()}
        if not gpus:
            raise UsageError(f"--device {device}: TensorFlow sees no GPU on this machine", hint="use --device cpu (or auto)")
        index = int(device.partition(":")[2] or 0)
        if index >= len(gpus):
            raise UsageError(f"--device {device}: TensorFlow sees {len(gpus)} GPU(s), numbered from 0")
        try:
            tf.config.set_visible_devices([gpus[index]], "GPU")
        except RuntimeError:
            pass  # already set up: TensorFlow keeps what it chose first
        self.device = f"cuda:{index}"
        details = tf.config.experimental.get_device_details(gpus[index])
        return {"device": self.device, "model": str(details.get("device_name", gpus[index].name))}

    def wrap_model(self, obj: Any, input_shape: tuple[int, ...], num_classes: int) -> KerasHandle:
        if not isinstance(obj, keras.Model):
            raise UsageError(f"the Keras callback needs a keras.Model, not a {type(obj).__module__}.{type(obj).__name__}")
        return KerasHandle(obj)

    def user_optimizer(self, optimizer: Any) -> tuple[Any, Any]:
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise UsageError("the Keras callback needs a model compiled with a keras optimizer (model.compile(optimizer=...))")

        def set_lr(lr: float) -> None:
            optimizer.learning_rate.assign(lr)

        def fresh() -> None:  # momentum, moments and the step count (Adam's bias correction) from zero
            for v in optimizer.variables:
                if v is not getattr(optimizer, "_learning_rate", None) and "learning_rate" not in v.path:
                    v.assign(tf.zeros(v.shape, v.dtype))

        return set_lr, fresh

    def make_callback(self, begin: Any, batch_end: Any, end: Any) -> Any:
        class RecipeCallback(keras.callbacks.Callback):
            """Applies an lwdsl recipe to ``model.fit`` (built by ``lwdsl.keras_callback``)."""

            def on_train_begin(self, logs: Any = None) -> None:
                begin(self.model)

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                batch_end((logs or {}).get("loss"))

            def on_train_end(self, logs: Any = None) -> None:
                end()

        return RecipeCallback()

    def native(self, model: Any) -> Any:
        return _handle(model).model

    def layers(self, model: Any) -> list[LayerInfo]:
        return list_layers(_handle(model))

    def groups(self, model: Any) -> list:
        from .graph import find_groups

        handle = _handle(model)
        return find_groups(handle.model, {v.name: i for i, v in enumerate(handle.views())})

    def fit(self, model: Any, options: TrainingOptions, ctx: StepContext, **kwargs: Any) -> list[float]:
        return fit(_handle(model), options, ctx, **kwargs)

    def evaluate(self, model: Any, ctx: StepContext) -> tuple[float, float]:
        return evaluate(_handle(model), ctx)

    def stats(self, model: Any) -> ModelStats:
        return model_stats(_handle(model))

    def positions(self, model: Any, input_shape: tuple[int, ...]) -> dict[str, int]:
        return output_positions(_handle(model), input_shape)

    def latency_ms(self, model: Any, batch: int, input_shape: tuple[int, ...], threads: int) -> float:
        """Median latency in ms (threads: see :mod:`lwdsl.backends.tf_backend.latency`)."""
        return latency_ms(_handle(model), batch, tuple(input_shape), threads)

    def state(self, model: Any) -> dict[str, np.ndarray]:
        return canonical_state(_handle(model))

    def save_native(self, model: Any, path: Path) -> None:
        io.save_native(_handle(model), Path(path))

    def copy_model(self, model: Any) -> KerasHandle:
        return _handle(model).copy()
