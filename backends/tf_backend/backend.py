"""``KerasBackend``: every lwdsl op on tf_keras (Keras 2), behind :class:`lwdsl.backend.Backend`."""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from lwdsl.backend import Backend, Dataset, LayerInfo, LayerStats, ModelStats, StepContext
from lwdsl.errors import LwdslError
from lwdsl.specs import ExportSpec, FinetuneSpec, PruneSpec, RegularizeSpec, StepSpec, TrainingOptions
from lwdsl.weights import atomic_path, load_weights

from ._tf import quiet_stderr, tf
from .handle import KerasHandle
from .latency import latency_ms
from .layout import layer_infos, load_state_into, state_of, views
from .models import build, load_file
from .support import SUPPORT
from .surgery import resize_to_state
from .training import cross_entropy, fit, nhwc

__all__ = ["KerasBackend"]

_EXPORTS = {"keras": ".keras", "saved_model": "", "tflite": ".tflite"}


def _handle(model: Any) -> KerasHandle:
    if isinstance(model, KerasHandle):
        return model
    raise LwdslError(f"the tensorflow backend got a {type(model).__name__}, not one of its model handles")


class KerasBackend(Backend):
    """PyTorch-equivalent pruning and training on tf_keras models (see docs/semantics.md)."""

    name = "tensorflow"
    extra = "tensorflow"
    native_suffix = ".keras"

    def unsupported(self, step: StepSpec) -> Optional[str]:
        return SUPPORT.unsupported(step)

    def versions(self) -> dict[str, str]:
        out = {}
        for pkg in ("tensorflow", "tf-keras", "tensorflow-model-optimization"):
            try:
                out[pkg] = version(pkg)
            except PackageNotFoundError:
                out[pkg] = "not installed"
        return out

    def set_seed(self, seed: int) -> None:
        tf.random.set_seed(seed)

    # -- models and weights ---------------------------------------------------------------

    def load_model(
        self, ref: Any, input_shape: tuple[int, ...], num_classes: int, checkpoint: Optional[Path] = None
    ) -> KerasHandle:
        """A handle for a zoo name, ``keras:NAME``, a ``.keras``/``.h5`` file or a tf_keras
        model object (cloned: the caller's model is never modified); ``checkpoint`` is a
        ``.lwz`` file of canonical weights or a ``.keras``/``.h5`` file (its weights are used),
        loaded as :meth:`load_state` does (narrower widths rebuild the model)."""
        handle = KerasHandle(build(ref, tuple(input_shape), num_classes))
        if checkpoint is not None:
            self.load_state(handle, _read_checkpoint(Path(checkpoint)))
        return handle

    def layers(self, model: Any) -> list[LayerInfo]:
        return layer_infos(_handle(model).model)

    def state(self, model: Any) -> dict[str, np.ndarray]:
        return state_of(_handle(model).model)

    def load_state(self, model: Any, state: dict[str, np.ndarray]) -> None:
        """Set the weights, rebuilding the model at narrower widths when the state's filters
        were removed; masks of layers that keep their shape are re-applied, as on torch."""
        handle = _handle(model)
        resized = resize_to_state(handle.model, state)
        load_state_into(resized, state)
        if resized is not handle.model:
            shapes = {v.name: v.weight.variable.shape for v in views(resized)}
            handle.masks = {k: m for k, m in handle.masks.items() if shapes.get(k) == m.shape}
            handle.model = resized
        handle.apply_masks()

    def copy_model(self, model: Any) -> KerasHandle:
        return _handle(model).copy()

    def finalize(self, model: Any) -> KerasHandle:
        return _handle(model).finalize()

    def save_native(self, model: Any, path: Path) -> None:
        _save_keras(_handle(model).model, Path(path))

    # -- steps ----------------------------------------------------------------------------

    def train(self, model: Any, options: TrainingOptions, ctx: StepContext) -> KerasHandle:
        handle = _handle(model)
        fit(handle, options, ctx, description="train")
        return handle

    def apply(self, model: Any, step: StepSpec, layers: Sequence[str], ctx: StepContext) -> KerasHandle:
        handle = _handle(model)
        if isinstance(step, PruneSpec):
            if step.schedule == "gradual":
                from .gradual import prune_gradual

                return prune_gradual(handle, step, layers, ctx)
            from .pruning import prune_oneshot

            return prune_oneshot(handle, step, layers, ctx.step_seed())
        if isinstance(step, FinetuneSpec):
            fit(handle, step, ctx, description="finetune", schedule=step.schedule)
            return handle
        if isinstance(step, RegularizeSpec):
            fit(handle, step, ctx, description=f"regularize l1={step.l1:g}", l1=step.l1, l1_layers=layers)
            return handle
        if isinstance(step, ExportSpec) and step.format in _EXPORTS:
            _export(handle, step, ctx)
            return handle
        raise LwdslError(self.unsupported(step) or f"the tensorflow backend cannot run {step.op}")

    # -- measurements ---------------------------------------------------------------------

    def evaluate(self, model: Any, ctx: StepContext) -> tuple[float, float]:
        keras_model = _handle(model).model
        x, y = nhwc(ctx.data.test_x), ctx.data.test_y
        forward = tf.function(lambda t: keras_model(t, training=False), reduce_retracing=True)
        correct, loss_sum, batch = 0, 0.0, 1000
        bar = ctx.progress(-(-len(x) // batch), "evaluate")
        try:
            for start in range(0, len(x), batch):
                logits = forward(tf.constant(x[start : start + batch]))
                yb = tf.constant(y[start : start + batch])
                correct += int(tf.reduce_sum(tf.cast(tf.argmax(logits, 1) == yb, tf.int64)))
                loss_sum += float(cross_entropy(yb, logits)) * len(yb)
                bar.update(1)
        finally:
            bar.close()
        return correct / max(len(x), 1), loss_sum / max(len(x), 1)

    def stats(self, model: Any) -> ModelStats:
        params = nonzero = 0
        layers = []
        for v in views(_handle(model).model):
            for t in v.tensors:
                if t.is_param:
                    arr = t.variable.numpy()
                    params += arr.size
                    nonzero += int(np.count_nonzero(arr))
            w = v.weight.variable.numpy()
            layers.append(LayerStats(v.name, v.kind, int(w.size), int(w.size - np.count_nonzero(w))))
        return ModelStats(params, nonzero, tuple(layers))

    def latency_ms(self, model: Any, batch: int, input_shape: tuple[int, ...], threads: int) -> float:
        """Median latency in ms (threads: see :mod:`lwdsl.backends.tf_backend.latency`)."""
        return latency_ms(_handle(model).model, batch, tuple(input_shape), threads)

    def adopt_data(self, train: Any, test: Any, name: str = "user") -> Dataset:
        """A Dataset from two ``tf.data.Dataset`` of (image NHWC, integer label) pairs, batched
        or not; images become NCHW float32 numpy."""
        tx, ty = _numpy_data(train, "train")
        vx, vy = _numpy_data(test, "test")
        return Dataset(name, tx, ty, vx, vy, int(max(ty.max(), vy.max())) + 1)


def _numpy_data(ds: Any, which: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(ds, tf.data.Dataset):
        raise LwdslError(f"{which}= must be a tf.data.Dataset of (image, label) pairs, got {type(ds).__name__}")
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(np.asarray(x, dtype=np.float32))
        ys.append(np.asarray(y, dtype=np.int64))
    if not xs:
        raise LwdslError(f"the {which} data set is empty")
    batched = xs[0].ndim == 4
    x = np.concatenate(xs) if batched else np.stack(xs)
    y = np.concatenate(ys) if batched else np.stack(ys)
    if x.ndim != 4:
        raise LwdslError(f"{which} images must be NHWC (4 axes with the batch), got shape {x.shape}")
    return np.ascontiguousarray(np.moveaxis(x, -1, 1)), y.reshape(-1)


def _read_checkpoint(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise LwdslError(f"checkpoint {path} does not exist")
    if path.suffix == ".lwz":
        return load_weights(path)[0]
    if path.suffix in (".keras", ".h5"):
        return state_of(load_file(path))
    raise LwdslError(
        f"the tensorflow backend cannot read checkpoint '{path}' (a {path.suffix or 'suffix-less'} file)",
        hint="give a .lwz file of canonical weights (any backend writes one: model.lwz in the run folder) or a .keras/.h5 file",
    )


def _save_keras(model: Any, path: Path) -> None:
    """Write ``model`` as a ``.keras`` file atomically (Keras picks the format by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.save(tmp / "model.keras")
        os.replace(tmp / "model.keras", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export(handle: KerasHandle, step: ExportSpec, ctx: StepContext) -> None:
    """``export keras|saved_model|tflite [PATH]``: the model with its masks applied (float32)."""
    root = Path(ctx.run_dir) if ctx.run_dir is not None else Path.cwd()
    path = root / (step.path or f"model{_EXPORTS[step.format] or '.savedmodel'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = handle.copy().finalize().model
    if step.format == "keras":
        _save_keras(model, path.with_suffix(".keras") if path.suffix != ".keras" else path)
    elif step.format == "saved_model":
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            model.export(str(tmp / "out"))
            shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp / "out", path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        with quiet_stderr():
            data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        with atomic_path(path) as tmp_file:
            tmp_file.write_bytes(data)
