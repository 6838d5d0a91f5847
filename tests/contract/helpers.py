"""Helpers of the contract suite (no tests here): numpy data and recording step contexts, and
one :class:`Kit` per framework, the few lines a test needs to touch it (read a weight as the
framework holds it, run the model, build a model by hand)."""

from __future__ import annotations

from typing import Any

import numpy as np
from lwdsl.backend import Dataset, StepContext


class Bar:
    """A progress bar that records what it was told."""

    def __init__(self, log: list, total: int, description: str) -> None:
        self.log, self.total, self.description, self.done, self.closed = log, total, description, 0, False
        log.append(self)

    def update(self, n: int = 1) -> None:
        self.done += n

    def close(self) -> None:
        self.closed = True


def make_data(shape=(1, 28, 28), classes: int = 10, n_train: int = 256, n_test: int = 128, seed: int = 0) -> Dataset:
    """Random images whose label is a fixed linear function of the pixels (learnable)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, *shape), dtype=np.float32)
    proj = rng.standard_normal((int(np.prod(shape)), classes)).astype(np.float32)
    y = np.argmax(x.reshape(len(x), -1) @ proj, axis=1).astype(np.int64)
    return Dataset("synthetic", x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes)


def make_ctx(data: Dataset | None = None, seed: int = 0, index: int = 0, **kw: Any) -> StepContext:
    """A step context whose progress bars (``ctx.extra["bars"]``) and warnings
    (``ctx.extra["warnings"]``) are recorded."""
    log: list[Bar] = []
    warnings: list[str] = []
    ctx = StepContext(data=data or make_data(), seed=seed, index=index, progress=lambda t, d: Bar(log, t, d),
                      warn=warnings.append, **kw)
    ctx.extra["bars"] = log
    ctx.extra["warnings"] = warnings
    return ctx


class Kit:
    """What a contract test needs of one framework. Weights and masks are numpy in the
    canonical (PyTorch) layout; images are NCHW float32."""

    name: str

    def weight(self, handle: Any, layer: str) -> np.ndarray:
        """The layer's weight as the framework holds it now (a copy)."""
        raise NotImplementedError

    def weights(self, handle: Any, layers) -> dict[str, np.ndarray]:
        return {n: self.weight(handle, n) for n in layers}

    def set_weight(self, handle: Any, layer: str, w: np.ndarray) -> None:
        raise NotImplementedError

    def mask(self, handle: Any, layer: str) -> np.ndarray:
        """The layer's keep mask (bool)."""
        raise NotImplementedError

    def masks(self, handle: Any) -> dict[str, np.ndarray]:
        return {n: self.mask(handle, n) for n in handle.masks}

    def logits(self, handle: Any, x: np.ndarray) -> np.ndarray:
        """The model's outputs on ``x`` in inference mode, float activations (no fake
        quantization of inputs)."""
        raise NotImplementedError

    def model_name(self, handle: Any) -> str:
        """The name the model was built from."""
        raise NotImplementedError

    def dense_model(self, input_shape: tuple[int, ...], sizes: dict[str, int]) -> Any:
        """A handle of a framework model that flattens (C, H, W) inputs into linear layers
        named and sized as ``sizes`` (name -> outputs), one after the other, no activations."""
        raise NotImplementedError

    def conv_norm_model(self, input_shape: tuple[int, ...], classes: int) -> Any:
        """A handle of a framework model: a 3x3 conv ``conv`` (4 filters), a batch norm ``norm``,
        flattened into a linear layer ``fc``."""
        raise NotImplementedError

    def layer_inputs(self, handle: Any, layers, x: np.ndarray) -> dict[str, np.ndarray]:
        """Each layer's input on NCHW ``x`` (float, inference mode), read with the framework's own
        API (hooks, a probe model), not the backend's; any layout."""
        raise NotImplementedError

    def forward_hooks(self, handle: Any) -> int:
        """Hooks or extra outputs left on the model (0 for a plain model)."""
        raise NotImplementedError

    def engine(self) -> Any:
        """The backend's deployable-file engine (:class:`lwdsl.backend.engines.Engine`)."""
        raise NotImplementedError

    def trainer(self, handle: Any, opts: Any, ctx: Any) -> Any:
        """The backend's :class:`lwdsl.backend.fit.Trainer` for ``handle`` (the caller closes it)."""
        raise NotImplementedError

    def loss_scale(self, trainer: Any) -> float:
        """The loss scale an fp16 trainer will use for its next step."""
        raise NotImplementedError

    def set_loss_scale(self, trainer: Any, scale: float) -> None:
        raise NotImplementedError

    def compute_dtypes(self, handle: Any) -> set[str]:
        """The dtypes the model's weights are held and computed in outside training."""
        raise NotImplementedError

    def run_file(self, path: Any, x: np.ndarray) -> np.ndarray:
        """The outputs of the deployable file at ``path`` on NCHW ``x``, loaded as a user would,
        with the runtime's own API (not lwdsl's)."""
        raise NotImplementedError


class TorchKit(Kit):
    name = "torch"

    def __init__(self, backend: Any) -> None:
        self.be = backend

    def weight(self, handle, layer):
        return handle.module.get_submodule(layer).weight.detach().numpy().copy()

    def set_weight(self, handle, layer, w):
        import torch

        with torch.no_grad():
            handle.module.get_submodule(layer).weight.copy_(torch.from_numpy(np.asarray(w, np.float32)))

    def mask(self, handle, layer):
        return handle.masks[layer].numpy().copy()

    def logits(self, handle, x):
        import torch

        module = handle.module
        was = module.training
        module.eval()
        try:
            with torch.no_grad():
                return module(torch.as_tensor(x)).numpy()
        finally:
            module.train(was)

    def model_name(self, handle):
        return handle.ref

    def dense_model(self, input_shape, sizes):
        from torch import nn

        net, width = nn.Sequential(), int(np.prod(input_shape))
        net.add_module("flat", nn.Flatten())
        for name, out in sizes.items():
            net.add_module(name, nn.Linear(width, out))
            width = out
        return self.be.load_model(net, tuple(input_shape), width)

    def conv_norm_model(self, input_shape, classes):
        from collections import OrderedDict

        from torch import nn

        c, hh, ww = input_shape
        net = nn.Sequential(OrderedDict(conv=nn.Conv2d(c, 4, 3), norm=nn.BatchNorm2d(4), flat=nn.Flatten(),
                                        fc=nn.Linear(4 * (hh - 2) * (ww - 2), classes)))
        return self.be.load_model(net, tuple(input_shape), classes)

    def layer_inputs(self, handle, layers, x):
        seen: dict[str, list] = {n: [] for n in layers}
        hooks = [handle.module.get_submodule(n).register_forward_pre_hook(
            lambda m, a, n=n: seen[n].append(a[0].detach().numpy().copy())) for n in layers]
        try:
            self.logits(handle, x)
        finally:
            for h in hooks:
                h.remove()
        return {n: np.concatenate(v) for n, v in seen.items()}

    def forward_hooks(self, handle):
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in handle.module.modules())

    def trainer(self, handle, opts, ctx):
        from lwdsl.backends.torch_backend.train import TorchTrainer

        return TorchTrainer(handle, opts, ctx)

    def loss_scale(self, trainer):
        return float(trainer.scaler.get_scale())

    def set_loss_scale(self, trainer, scale):
        if trainer.scaler._scale is None:  # GradScaler makes its scale tensor at the first scale()
            trainer.scaler._lazy_init_scale_growth_tracker(trainer.device)
        trainer.scaler.update(new_scale=float(scale))

    def compute_dtypes(self, handle):
        return {str(p.dtype).removeprefix("torch.") for p in handle.module.parameters()}

    def engine(self):
        from lwdsl.backends.torch_backend.int8_engine import ONNX

        return ONNX

    def run_file(self, path, x):
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)})[0]


class KerasKit(Kit):
    name = "tensorflow"

    def __init__(self, backend: Any) -> None:
        self.be = backend

    def _view(self, handle, layer):
        return handle.view_map()[layer]

    def weight(self, handle, layer):
        return self._view(handle, layer).weight.canonical().copy()

    def set_weight(self, handle, layer, w):
        t = self._view(handle, layer).weight
        t.variable.assign(t.from_canon(np.asarray(w, np.float32)))

    def mask(self, handle, layer):
        return np.ascontiguousarray(self._view(handle, layer).weight.to_canon(handle.masks[layer])).astype(bool)

    def logits(self, handle, x):
        from lwdsl.backends.tf_backend.layers import nhwc

        return handle.model(nhwc(np.asarray(x, np.float32)), training=False).numpy()

    def model_name(self, handle):
        return handle.model.name

    def dense_model(self, input_shape, sizes):
        import keras

        c, *hw = input_shape
        inp = keras.Input((*hw, c))
        x = keras.layers.Flatten()(inp)
        for name, out in sizes.items():
            x = keras.layers.Dense(out, name=name)(x)
        return self.be.load_model(keras.Model(inp, x), tuple(input_shape), out)

    def conv_norm_model(self, input_shape, classes):
        import keras

        c, *hw = input_shape
        inp = keras.Input((*hw, c))
        x = keras.layers.Conv2D(4, 3, name="conv")(inp)
        x = keras.layers.BatchNormalization(name="norm")(x)
        out = keras.layers.Dense(classes, name="fc")(keras.layers.Flatten()(x))
        return self.be.load_model(keras.Model(inp, out), tuple(input_shape), classes)

    def layer_inputs(self, handle, layers, x):
        import keras

        from lwdsl.backends.tf_backend.layers import nhwc

        m = handle.model
        probe = keras.Model(m.inputs, [m.get_layer(n).input for n in layers])
        got = probe([nhwc(np.asarray(x, np.float32))], training=False)
        return {n: np.asarray(g) for n, g in zip(layers, got if len(layers) > 1 else [got])}

    def forward_hooks(self, handle):
        return len(handle.model.outputs) - 1

    def trainer(self, handle, opts, ctx):
        from lwdsl.backends.tf_backend.train import KerasTrainer

        return KerasTrainer(handle, opts, ctx)

    def loss_scale(self, trainer):
        return float(trainer.loss_scale.numpy())

    def set_loss_scale(self, trainer, scale):
        trainer.loss_scale.assign(float(scale))

    def compute_dtypes(self, handle):
        from lwdsl.backends.tf_backend.layers import every_layer

        out = {str(v.dtype) for v in handle.model.weights}
        return out | {layer.dtype_policy.compute_dtype for layer in every_layer(handle.model) if layer.weights}

    def engine(self):
        from lwdsl.backends.tf_backend.tflite_engine import LITERT

        return LITERT

    def run_file(self, path, x):
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path))
        xb = np.ascontiguousarray(np.moveaxis(np.asarray(x, np.float32), 1, -1))
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        it.resize_tensor_input(inp["index"], list(xb.shape))
        it.allocate_tensors()
        it.set_tensor(inp["index"], xb)
        it.invoke()
        return it.get_tensor(out["index"])


KITS = {"torch": TorchKit, "tensorflow": KerasKit}
