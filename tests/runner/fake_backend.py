"""A tiny numpy backend for testing the runner without any framework.

The model is a two-layer linear classifier on flattened images (``fc1``, ``fc2``); only the
``prune`` op (every unstructured rule, chosen by :func:`lwdsl.semantics.pruning.rule_for` as on
the real backends) and ``finetune`` (a no-op pass that can be told to fail) are supported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from lwdsl.backend import Backend, LayerInfo, LayerStats, ModelStats, StepContext, SupportTable
from lwdsl.errors import LwdslError, RunError
from lwdsl.semantics.pruning import keep_masks, rule_for
from lwdsl.language.specs import StepSpec, TrainingOptions
from lwdsl.backend.weights import load_weights


class FakeModel:
    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.state = state


def prune(model: Any, spec: Any, layers: Sequence[str], ctx: StepContext) -> Any:
    ws = [model.state[f"{n}.weight"] for n in layers]
    for n, keep in zip(layers, keep_masks(rule_for(spec, ctx.step_seed()), ws)):
        model.state[f"{n}.weight"] = np.where(keep, model.state[f"{n}.weight"], np.float32(0.0))
    return model


def finetune(model: Any, spec: Any, layers: Sequence[str], ctx: StepContext) -> Any:
    return model


class FakeBackend(Backend):
    name = "fake"
    extra = "fake"
    native_suffix = ".npz"
    support = SupportTable("fake", {"prune": ("magnitude", "global", "threshold", "random", "nm"), "finetune": ()})
    handlers = {"prune": prune, "finetune": finetune}

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail_on: Optional[str] = None  # an op name whose apply raises
        self.interrupt_on: Optional[str] = None
        self.warn_on: Optional[str] = None  # an op name whose apply warns

    def versions(self) -> dict[str, str]:
        return {"fake": "1"}

    def set_seed(self, seed: int) -> None:
        self.seed = seed

    def load_model(self, ref: Any, input_shape: tuple[int, ...], num_classes: int, checkpoint: Optional[Path] = None) -> Any:
        self.calls.append("load_model")
        if ref != "linear2":
            raise LwdslError(f"unknown model {ref}")
        rng = np.random.default_rng(getattr(self, "seed", 0))
        n_in = int(np.prod(input_shape))
        state = {
            "fc1.weight": rng.standard_normal((16, n_in)).astype(np.float32),
            "fc1.bias": np.zeros(16, np.float32),
            "fc2.weight": rng.standard_normal((num_classes, 16)).astype(np.float32),
            "fc2.bias": np.zeros(num_classes, np.float32),
        }
        if checkpoint is not None:
            state, _ = load_weights(checkpoint)
        return FakeModel(state)

    def layers(self, model: Any) -> list[LayerInfo]:
        return [
            LayerInfo(n, "linear", model.state[f"{n}.weight"].shape, model.state[f"{n}.weight"].size + model.state[f"{n}.bias"].size)
            for n in ("fc1", "fc2")
        ]

    def fit(self, model: Any, options: TrainingOptions, ctx: StepContext, **kwargs: Any) -> list[float]:
        self.calls.append("train" if kwargs.get("label") == "train" else "fit")
        return []

    def apply(self, model: Any, step: StepSpec, layers: Sequence[str], ctx: StepContext) -> Any:
        self.calls.append(f"apply:{step.op}")
        if step.op == self.fail_on:
            raise RunError(f"{step.op} failed on purpose")
        if step.op == self.interrupt_on:
            raise KeyboardInterrupt
        if step.op == self.warn_on:
            ctx.warn(f"{layers[0]} stays float")
        return super().apply(model, step, layers, ctx)

    def native(self, model: Any) -> Any:
        return model

    def _logits(self, model: Any, x: np.ndarray) -> np.ndarray:
        h = np.maximum(x.reshape(len(x), -1) @ model.state["fc1.weight"].T + model.state["fc1.bias"], 0)
        return h @ model.state["fc2.weight"].T + model.state["fc2.bias"]

    def evaluate(self, model: Any, ctx: StepContext) -> tuple[float, float]:
        z = self._logits(model, ctx.data.test_x)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        y = ctx.data.test_y
        return float((z.argmax(1) == y).mean()), float(-logp[np.arange(len(y)), y].mean())

    def stats(self, model: Any) -> ModelStats:
        params = sum(a.size for a in model.state.values())
        nonzero = sum(int(np.count_nonzero(a)) for a in model.state.values())
        layers = tuple(
            LayerStats(n, "linear", model.state[f"{n}.weight"].size, int((model.state[f"{n}.weight"] == 0).sum()))
            for n in ("fc1", "fc2")
        )
        return ModelStats(params, nonzero, layers)

    def latency_ms(self, model: Any, batch: int, input_shape: tuple[int, ...], threads: int) -> float:
        return 0.1 * batch

    def state(self, model: Any) -> dict[str, np.ndarray]:
        return dict(model.state)

    def load_state(self, model: Any, state: dict[str, np.ndarray]) -> None:
        model.state = dict(state)

    def save_native(self, model: Any, path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, **model.state)

    def finalize(self, model: Any) -> Any:
        return model
