"""Per-layer sensitivity, measured once for every backend over the :class:`Backend` protocol.

One layer at a time, from one baseline: the layer's weight (canonical layout, from
:meth:`Backend.state`) is replaced by the core's answer (magnitude pruning at an amount,
:func:`lwdsl.semantics.masks.magnitude_keep_masks`; or weight-only rounding to a form,
:func:`lwdsl.semantics.auto_bits.trial_weight`), the model is evaluated on the probe images
(:func:`lwdsl.semantics.allocation.probe_indices` of a split), and the baseline state is put
back exactly (:meth:`Backend.load_state`) before the next probe. A backend gives only
``state``/``load_state``/``evaluate``/``layers``; every number is the core's, so the same
weights give the same accuracies on every backend (up to a prediction that float rounding
flips, which the conformance case shows does not happen on its planted weights).

Used by ``lwdsl sensitivity`` (:mod:`lwdsl.runner.sensitivity`) and ``prune auto``
(:mod:`lwdsl.backend.prune_auto`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from ..data.dataset import Dataset
from ..errors import LwdslError
from ..semantics.allocation import probe_indices
from ..semantics.auto_bits import trial_weight
from ..semantics.forms import FORM_BITS
from ..semantics.masks import magnitude_keep_masks
from .context import StepContext

__all__ = ["probe_data", "probe_context", "measure_sensitivity", "pruned_weight"]


def probe_data(data: Dataset, samples: int, seed: int, split: str = "test") -> Dataset:
    """A data set whose test images are the probe images: ``probe_indices`` of ``split``
    (``test`` or ``train``) of ``data``, read into memory."""
    x, y = (data.test_x, data.test_y) if split == "test" else (data.train_x, data.train_y)
    if not len(x):
        raise LwdslError(f"the {split} split of {data.name} has no images to measure sensitivity on")
    idx = probe_indices(len(x), samples, seed)
    px = np.ascontiguousarray(np.asarray(x[idx], dtype=np.float32))
    py = np.asarray(y)[idx].astype(np.int64)
    return Dataset(f"{data.name} ({split}, {len(idx)} probe images)", px, py, px, py, data.num_classes, classes=data.classes)


def probe_context(ctx: StepContext, samples: int, split: str = "test") -> StepContext:
    """``ctx`` whose data's test images are the probe images (:func:`probe_data`), quiet."""
    return dataclasses.replace(ctx, data=probe_data(ctx.data, samples, ctx.seed, split), progress=_quiet)


def pruned_weight(w: np.ndarray, amount: float) -> np.ndarray:
    """``w`` with the core's per-layer magnitude rule applied at ``amount`` (pruned weights +0.0)."""
    keep = magnitude_keep_masks([w], amount)[0]
    return np.where(keep, w, np.float32(0.0)).astype(np.float32)


def measure_sensitivity(
    be: Any,
    handle: Any,
    layers: Sequence[str],
    ctx: StepContext,
    *,
    amounts: Sequence[float] = (),
    forms: Sequence[str] = (),
    samples: int = 1000,
    split: str = "test",
    granularity: str = "per_channel",
) -> dict[str, Any]:
    """Accuracy and loss of the model with one layer at a time pruned to each of ``amounts``
    and rounded to each of ``forms``, on the probe images.

    Returns:
        ``{"split", "samples", "seed", "baseline": {"accuracy", "loss"}, "amounts", "forms",
        "layers": [{"layer", "kind", "weights", "prune": [{"amount", "accuracy", "loss"}],
        "bits": [{"form", "bits", "accuracy", "loss"}]}]}``; accuracies in [0, 1]. The model is
        left exactly as it was.
    """
    probe = probe_context(ctx, samples, split)
    info = {layer.name: layer for layer in be.layers(handle)}
    base = be.state(handle)
    missing = [name for name in layers if f"{name}.weight" not in base]
    if missing:
        raise LwdslError(f"layer{'s' if len(missing) > 1 else ''} {', '.join(missing)} ha{'ve' if len(missing) > 1 else 's'} "
                         "no weight to measure")
    bar = ctx.progress(1 + len(layers) * (len(amounts) + len(forms)),
                       f"sensitivity: {len(layers)} layers on {len(probe.data.test_y)} {split} images")
    out: dict[str, Any] = {"split": split, "samples": int(len(probe.data.test_y)), "seed": int(ctx.seed),
                           "amounts": [float(a) for a in amounts], "forms": list(forms)}
    try:
        acc, loss = be.evaluate(handle, probe)
        out["baseline"] = {"accuracy": float(acc), "loss": float(loss)}
        bar.update(1)
        rows = []
        for name in layers:
            key = f"{name}.weight"
            w = np.asarray(base[key], dtype=np.float32)
            row: dict[str, Any] = {"layer": name, "kind": info[name].kind if name in info else "other",
                                   "weights": int(w.size), "prune": [], "bits": []}
            try:
                for amount in amounts:
                    be.load_state(handle, {**base, key: pruned_weight(w, float(amount))})
                    acc, loss = be.evaluate(handle, probe)
                    row["prune"].append({"amount": float(amount), "accuracy": float(acc), "loss": float(loss)})
                    bar.update(1)
                for form in forms:
                    be.load_state(handle, {**base, key: trial_weight(w, form, granularity)})
                    acc, loss = be.evaluate(handle, probe)
                    row["bits"].append({"form": form, "bits": int(FORM_BITS[form]), "accuracy": float(acc), "loss": float(loss)})
                    bar.update(1)
            finally:
                be.load_state(handle, base)  # the baseline again, exactly
            rows.append(row)
        out["layers"] = rows
    finally:
        bar.close()
    return out


class _NullBar:
    def update(self, n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None


def _quiet(total: int, description: str) -> _NullBar:
    return _NullBar()
