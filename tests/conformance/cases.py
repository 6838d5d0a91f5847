"""The cross-framework conformance cases, shared by the tests and ``bench/conformance_table.py``.

Every case loads one canonical state into the torch and the tensorflow backend, runs the same
step through :class:`lwdsl.backend.Backend` only, and compares what comes out:

- prune cases: the canonical states afterwards must be bit-identical (values, +0.0 vs -0.0,
  shapes after ``remove=true``); the weights have planted ties (a fifth of every weight at one
  shared magnitude, equal-norm filters, exact zeros) so tie-breaking is exercised;
- training cases: per-step losses and the weights after ``STEPS`` optimizer steps from
  identical weights and data order agree within the tolerances stated in :data:`TOLERANCE`;
- selector and logits parity on the zoo.

Both backends draw the data order from :func:`lwdsl.semantics.order.epoch_order` and record the
loss of every optimizer step in their handle's ``losses``: the cases only call the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from lwdsl.backend import Dataset, StepContext
from lwdsl.runner.progress import NullBar
from lwdsl.language.specs import FinetuneSpec, PruneSpec, RegularizeSpec

BACKENDS = ("torch", "tensorflow")
SHAPE = (1, 28, 28)
TIE = np.float32(0.03)  # the planted magnitude: about the 24th percentile of |N(0, 0.1)|
STEPS = 20
#: measured worst cases (see docs/conformance.md) with a margin of about 10x
TOLERANCE = {"loss_rtol": 1e-4, "weight_atol": 1e-4}
#: the limits grow to this many times the rounding floor measured on the CPU at hand (torch vs
#: torch from weights one ulp away), so the suite tests "as close as float32 rounding allows"
#: on any x86 CPU, whichever kernels (AVX2, AVX-512, oneDNN) each framework picks there
FLOOR_FACTOR = 10.0


@dataclass(frozen=True)
class PruneCase:
    id: str
    model: str
    spec: dict[str, Any]
    layers: Optional[tuple[str, ...]] = None  # None: every conv and linear layer
    option: str = ""  # for the table: the option this case covers


@dataclass(frozen=True)
class TrainCase:
    id: str
    spec: Any  # FinetuneSpec / RegularizeSpec / PruneSpec(gradual)
    layers: tuple[str, ...] = ("conv1", "conv2", "fc1", "fc2")
    batch_note: str = ""


@dataclass
class Outcome:
    status: str  # identical | within tolerance | differs
    detail: str = ""
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("identical", "within tolerance")


def _p(**kw: Any) -> dict[str, Any]:
    return kw


PRUNE_CASES: tuple[PruneCase, ...] = (
    PruneCase("l1-layer", "lenet5", _p(method="l1", amount=0.3), option="l1 per layer"),
    PruneCase("l2-layer", "seedcnn", _p(method="l2", amount=0.3), option="l2 per layer"),
    PruneCase("ln-layer", "lenet5", _p(method="ln", n=3.0, amount=0.35), option="ln per layer"),
    PruneCase("random-layer", "lenet5", _p(method="random", amount=0.4), option="random per layer"),
    PruneCase("global-l1", "lenet5", _p(scope="global", method="l1", amount=0.2), option="global l1"),
    PruneCase("global-l1-lenet300", "lenet300", _p(scope="global", method="l1", amount=0.3), option="global l1"),
    PruneCase("global-random", "seedcnn", _p(scope="global", method="random", amount=0.5), option="global random"),
    PruneCase("threshold", "lenet5", _p(method="threshold", amount=float(TIE)), option="threshold"),
    PruneCase("filters-l1", "lenet5", _p(method="l1", amount=0.5, structured="filters"), option="structured filters l1"),
    PruneCase("filters-l2", "seedcnn", _p(method="l2", amount=0.3, structured="filters"), option="structured filters l2"),
    PruneCase("filters-random", "seedcnn", _p(method="random", amount=0.3, structured="filters"), option="structured filters random"),
    PruneCase("channels-l1", "lenet5", _p(method="l1", amount=0.4, structured="channels"), option="structured channels l1"),
    PruneCase("channels-ln", "seedcnn", _p(method="ln", n=3.0, amount=0.25, structured="channels"), option="structured channels ln"),
    PruneCase("nm-2:4", "lenet5", _p(nm={"n": 2, "m": 4}), option="N:M 2:4"),
    PruneCase("nm-1:3", "seedcnn", _p(nm={"n": 1, "m": 3}), option="N:M 1:3 (partial groups)"),
    PruneCase(
        "remove-lenet5", "lenet5", _p(method="l1", amount=0.5, structured="filters", remove=True), ("conv1", "conv2", "fc1"), "remove=true"
    ),
    PruneCase(
        "remove-seedcnn", "seedcnn", _p(method="l2", amount=0.3, structured="filters", remove=True), ("conv1", "conv2", "fc1"), "remove=true"
    ),
    PruneCase("remove-lenet300", "lenet300", _p(method="l1", amount=0.25, structured="filters", remove=True), ("fc1", "fc2"), "remove=true"),
    PruneCase("auto-lenet5", "lenet5", _p(method="auto", amount=0.6), option="prune auto (per-layer amounts from sensitivity)"),
    PruneCase("level-global", "seedcnn", _p(scope="global", method="l1", amount="auto", drop=1.0, epochs=0),
              option="amount=auto (level search, one-shot levels)"),
)

TRAIN_CASES: tuple[TrainCase, ...] = (
    TrainCase("sgd-momentum", FinetuneSpec(epochs=1, lr=0.01, momentum=0.9, batch=32)),
    TrainCase("sgd-plain-wd", FinetuneSpec(epochs=1, lr=0.01, momentum=0.0, weight_decay=1e-3, batch=32)),
    TrainCase("sgd-momentum-wd-cosine", FinetuneSpec(epochs=2, lr=0.01, momentum=0.9, weight_decay=5e-4, batch=64, schedule="cosine")),
    TrainCase("sgd-step", FinetuneSpec(epochs=2, lr=0.01, batch=64, schedule="step")),
    TrainCase("adam", FinetuneSpec(epochs=1, lr=1e-3, optimizer="adam", batch=32)),
    TrainCase("adam-wd", FinetuneSpec(epochs=1, lr=1e-3, optimizer="adam", weight_decay=1e-3, batch=32)),
    TrainCase("regularize-l1", RegularizeSpec(l1=1e-4, epochs=1, lr=0.01, batch=32)),
    TrainCase("finetune-with-masks", FinetuneSpec(epochs=1, lr=0.01, batch=32), batch_note="after prune global l1 0.5"),
)


def weight_tolerance(spec: Any) -> float:
    """Adam divides by the root of the squared gradients' average: where a gradient is ~0 its
    rounding noise moves the weight by up to lr per step, so its bound is ``lr * STEPS``."""
    return spec.lr * STEPS if spec.optimizer == "adam" else TOLERANCE["weight_atol"]


def backend(name: str):
    from lwdsl.backend import get_backend

    return get_backend(name)


def dataset(n_train: int = 640, n_test: int = 256, seed: int = 7) -> Dataset:
    """Small learnable synthetic data: 28x28 images, 10 classes (labels from a projection)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, *SHAPE), dtype=np.float32)
    proj = rng.standard_normal((int(np.prod(SHAPE)), 10)).astype(np.float32)
    y = np.argmax(x.reshape(len(x), -1) @ proj, axis=1).astype(np.int64)
    return Dataset("conformance", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10)


def context(data: Dataset, seed: int = 3, index: int = 1) -> StepContext:
    return StepContext(data=data, seed=seed, index=index, progress=lambda total, description: NullBar())


def planted_state(model: str, seed: int = 0, trainable: bool = False) -> dict[str, np.ndarray]:
    """A canonical state of ``model`` with ties planted in every weight (see module doc);
    ``trainable`` scales each tensor to PyTorch's initial scale (std ~ 0.5/sqrt(fan_in)) so
    that training from it is stable."""
    shapes = {k: v.shape for k, v in backend("tensorflow").state(backend("tensorflow").load_model(model, SHAPE, 10)).items()}
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in shapes.items():
        w = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if name.endswith(".weight") and len(shape) >= 2:
            flat = w.reshape(-1)
            tie = rng.random(flat.size) < 0.2
            flat[tie] = np.where(rng.random(int(tie.sum())) < 0.5, -TIE, TIE)
            zero = rng.random(flat.size) < 0.01
            flat[zero] = np.where(rng.random(int(zero.sum())) < 0.5, np.float32(-0.0), np.float32(0.0))
            w[1] = -w[0]  # equal-norm filters (rows) 0 and 1: a tie for structured pruning
            if shape[0] > 3:
                w[3] = w[2][..., ::-1] if len(shape) > 2 else w[2][::-1]
            if shape[1] > 1:
                w[:, 1] = w[:, 0]  # equal-norm input channels 0 and 1
        if trainable:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
            w = (w * np.float32(5.0 / np.sqrt(fan_in))).astype(np.float32)
        state[name] = w
    return state


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def compare_states(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> Outcome:
    """Bit-for-bit comparison of two canonical states."""
    if set(a) != set(b):
        return Outcome("differs", f"tensor names differ: {sorted(set(a) ^ set(b))[:3]}")
    for name in a:
        if np.shape(a[name]) != np.shape(b[name]):
            return Outcome("differs", f"{name}: shape {np.shape(a[name])} vs {np.shape(b[name])}")
        diff = np.count_nonzero(_bits(a[name]) != _bits(b[name]))
        if diff:
            zeros = np.count_nonzero((a[name] == 0) != (b[name] == 0))
            return Outcome("differs", f"{name}: {diff} elements differ ({zeros} in the zero pattern)")
    return Outcome("identical")


def run_prune_case(case: PruneCase) -> dict[str, dict[str, np.ndarray]]:
    """The canonical state after the case's prune step, per backend."""
    state = planted_state(case.model)
    spec = PruneSpec(**case.spec)
    out = {}
    for name in BACKENDS:
        be = backend(name)
        handle = be.load_model(case.model, SHAPE, 10)
        be.load_state(handle, state)
        layers = list(case.layers or [i.name for i in be.layers(handle) if i.kind in ("conv", "linear")])
        handle = be.apply(handle, spec, layers, context(dataset(64, 64)))
        out[name] = be.state(be.finalize(handle))
    return out


def prune_outcome(case: PruneCase) -> Outcome:
    states = run_prune_case(case)
    outcome = compare_states(states["torch"], states["tensorflow"])
    pruned = sum(int(np.count_nonzero(v == 0)) for k, v in states["torch"].items() if k.endswith(".weight"))
    outcome.figures["zeros"] = pruned
    return outcome


def run_train_case(case: TrainCase, data: Optional[Dataset] = None) -> dict[str, Any]:
    """Losses per step and the final canonical state, per backend, from one initial state."""
    data = data or dataset()
    ctx = context(data)
    state = planted_state("lenet5", seed=1, trainable=True)
    out: dict[str, Any] = {}
    for name in BACKENDS:
        be = backend(name)
        handle = be.load_model("lenet5", SHAPE, 10)
        be.load_state(handle, state)
        if case.batch_note:
            handle = be.apply(handle, PruneSpec(scope="global", method="l1", amount=0.5), list(case.layers), ctx)
        handle = be.apply(handle, case.spec, list(case.layers), ctx)
        losses = list(handle.losses)
        out[name] = {"losses": losses, "state": be.state(be.finalize(handle))}
    out["floor"] = [_perturbed_run(case, ctx, state, direction) for direction in (np.inf, -np.inf)]
    return out


def _perturbed_run(case: TrainCase, ctx: StepContext, state: dict[str, np.ndarray], direction: float) -> dict[str, Any]:
    """The torch backend from the same state with every float moved by one ulp: how far float32
    rounding alone carries training on this CPU (max-pool windows whose two largest inputs are
    within rounding of each other send the gradient to a different input when the rounding
    changes, which moves weights by a gradient step, not by an ulp)."""
    be = backend("torch")
    handle = be.load_model("lenet5", SHAPE, 10)
    be.load_state(handle, {k: np.nextafter(v, np.float32(direction)).astype(v.dtype) if v.dtype == np.float32 else v for k, v in state.items()})
    if case.batch_note:
        handle = be.apply(handle, PruneSpec(scope="global", method="l1", amount=0.5), list(case.layers), ctx)
    handle = be.apply(handle, case.spec, list(case.layers), ctx)
    return {"losses": list(handle.losses), "state": be.state(be.finalize(handle))}


def train_outcome(case: TrainCase, data: Optional[Dataset] = None) -> Outcome:
    runs = run_train_case(case, data)
    lt, lk = np.asarray(runs["torch"]["losses"]), np.asarray(runs["tensorflow"]["losses"])
    if lt.shape != lk.shape:
        return Outcome("differs", f"{lt.size} torch steps vs {lk.size} tensorflow steps")
    n = min(STEPS, lt.size)
    loss_rel = float(np.max(np.abs(lt[:n] - lk[:n]) / np.abs(lt[:n])))
    st, sk = runs["torch"]["state"], runs["tensorflow"]["state"]
    weight_abs = max(float(np.max(np.abs(st[k] - sk[k]))) for k in st)
    floor_loss = max(float(np.max(np.abs(lt[:n] - np.asarray(f["losses"])[:n]) / np.abs(lt[:n]))) for f in runs["floor"])
    floor_weight = max(max(float(np.max(np.abs(st[k] - f["state"][k]))) for k in st) for f in runs["floor"])
    zeros_same = all(np.array_equal(st[k] == 0, sk[k] == 0) for k in st if k.endswith(".weight"))
    loss_limit = max(TOLERANCE["loss_rtol"], FLOOR_FACTOR * floor_loss)
    weight_limit = max(weight_tolerance(case.spec), FLOOR_FACTOR * floor_weight)
    figures = {
        "steps": float(lt.size),
        "loss_rel": loss_rel,
        "weight_abs": weight_abs,
        "floor_loss_rel": floor_loss,
        "floor_weight_abs": floor_weight,
        "loss_limit": loss_limit,
        "weight_limit": weight_limit,
    }
    ok = loss_rel <= loss_limit and weight_abs <= weight_limit and zeros_same
    detail = (
        f"{lt.size} steps: loss rel. diff <= {loss_rel:.1e} (first {n}), weights abs. diff <= {weight_abs:.1e}; "
        f"torch vs torch one ulp away: {floor_loss:.1e} / {floor_weight:.1e}"
    )
    if not zeros_same:
        detail += "; zero patterns differ"
    return Outcome("within tolerance" if ok else "differs", detail, figures)
