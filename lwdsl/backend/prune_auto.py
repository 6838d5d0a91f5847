"""The two automatic prune flows, written once over a backend's :class:`~lwdsl.backend.prune.PruneParts`
and the :class:`~lwdsl.backend.Backend` primitives (``state``/``load_state``, ``masks_of``/
``set_masks``, ``evaluate``).

``prune auto AMOUNT`` (:func:`prune_auto`): every selected layer's accuracy on
:data:`~lwdsl.semantics.allocation.AUTO_SAMPLES` seeded training images with that layer alone
pruned to each amount of :data:`~lwdsl.semantics.allocation.AUTO_GRID`
(:func:`lwdsl.backend.sensitivity.measure_sensitivity`), the core's allocation
(:func:`lwdsl.semantics.allocation.allocate`), then each layer pruned by the magnitude rule at
its own amount. Notes: ``auto_prune`` (threshold, each layer's amount, count and reason, the
measured curves).

``prune METHOD amount=auto drop=D`` (:func:`prune_level`): the core's step search
(:func:`lwdsl.semantics.allocation.level_search`); each level starts from the model as it was
before the step (weights and masks put back exactly), is pruned by the step's own rule at the
level, fine-tuned ``epochs`` and evaluated on the test set, as the run measures every step.
The model kept is the highest level within the drop, as it was after its fine-tuning; when no
level is within, the model before the step, with a warning. Notes: ``level_search`` (baseline
accuracy, drop, epochs per level, every level tried with its accuracy, the level chosen).
"""

from __future__ import annotations

from typing import Any, Sequence

from ..language.specs import PruneSpec
import numpy as np

from ..semantics.allocation import (AUTO_BUDGET, AUTO_GRID, AUTO_SAMPLES, Candidate, allocate, global_counts,
                                    better, level_search, refine, score, uniform_counts)
from ..semantics.pruning import MaskRule, rule_for
from .context import StepContext
from .sensitivity import measure_sensitivity, probe_context, pruned_weight

__all__ = ["prune_auto", "prune_level"]


def prune_auto(parts: Any, handle: Any, spec: PruneSpec, layers: Sequence[str], ctx: StepContext) -> Any:
    """``prune auto AMOUNT`` on ``layers`` (model order); returns the handle."""
    if spec.of != "weights":
        from .prune_channels import prune_auto_channels

        return prune_auto_channels(parts, handle, spec, layers, ctx)
    be = ctx.backend
    measured = measure_sensitivity(be, handle, layers, ctx, amounts=AUTO_GRID, samples=AUTO_SAMPLES, split="train")
    base_acc, base_loss = measured["baseline"]["accuracy"], measured["baseline"]["loss"]
    rows = measured["layers"]
    sizes = [row["weights"] for row in rows]
    drops = [[100.0 * (base_acc - p["accuracy"]) for p in row["prune"]] for row in rows]
    threshold = allocate(float(spec.amount), sizes, AUTO_GRID, drops)
    k = int(sum(threshold.counts))
    state = be.state(handle)
    weights = [np.asarray(state[f"{name}.weight"], dtype=np.float32) for name in layers]
    probe = probe_context(ctx, AUTO_SAMPLES, "train")
    images = int(len(probe.data.test_y))
    cache: dict[tuple[int, int], np.ndarray] = {}
    bar = ctx.progress(AUTO_BUDGET + 3, f"prune auto: allocations compared on {images} training images")

    def measure(counts: tuple[int, ...]) -> tuple[float, float]:
        trial = dict(state)
        for i, (name, c) in enumerate(zip(layers, counts)):
            if c:
                if (i, c) not in cache:
                    cache[(i, c)] = pruned_weight(weights[i], c / sizes[i])
                trial[f"{name}.weight"] = cache[(i, c)]
        try:
            be.load_state(handle, trial)
            acc, loss = be.evaluate(handle, probe)
        finally:
            be.load_state(handle, state)
        bar.update(1)
        return float(acc), float(loss)

    try:
        starts = [("global", global_counts(weights, k)), ("uniform", uniform_counts(k, sizes)),
                  ("sensitivity", threshold.counts)]
        candidates = [Candidate(name, counts, *measure(counts)) for name, counts in starts]
        first = candidates[0]  # global, unless another answers clearly more probe images right
        for c in candidates[1:]:
            if better(score(c.accuracy, c.loss, images), score(first.accuracy, first.loss, images)):
                first = c
        caps = [max(int(np.floor(AUTO_GRID[-1] * n)), 0) for n in sizes]
        refined = refine(first.counts, caps, measure, images, at_start=(first.accuracy, first.loss))
    finally:
        bar.close()
    counts = refined.counts
    for name, count, n in zip(layers, counts, sizes):  # every layer, a count of 0 too: each selected layer holds a mask
        handle = parts.prune_once(handle, MaskRule("magnitude", count / n if n else 0.0, scope="layer"), [name], False, ctx)
    amounts = [c / n if n else 0.0 for c, n in zip(counts, sizes)]
    ctx.notes["auto_prune"] = {
        "amount": float(spec.amount),
        "of": "weights",
        "rule": "exchange",
        "start": first.name,
        "threshold_points": threshold.threshold,
        "pruned": int(sum(counts)),
        "weights": int(sum(sizes)),
        "probe": {"split": measured["split"], "images": measured["samples"], "seed": measured["seed"],
                  "accuracy": base_acc, "loss": round(base_loss, 4)},
        "grid": list(AUTO_GRID),
        "candidates": [{"name": c.name, "counts": list(c.counts), "accuracy": c.accuracy, "loss": round(c.loss, 4)}
                       for c in candidates],
        "moves": [{"spared": layers[m.spared], "pruned": layers[m.pruned], "weights": m.weights,
                   "accuracy": m.accuracy, "loss": round(m.loss, 4)} for m in refined.moves],
        "evaluated": refined.evaluated,
        "chosen": {"accuracy": refined.accuracy, "loss": round(refined.loss, 4)},
        "layers": [
            {"layer": row["layer"], "weights": row["weights"], "pruned": count, "amount": amount,
             "start": start, "reason": _why(row["layer"], count, start, first.name, refined.moves, layers),
             "accuracy": [p["accuracy"] for p in row["prune"]]}
            for row, count, amount, start in zip(rows, counts, amounts, first.counts)
        ],
    }
    return handle


def _why(layer: str, count: int, start: int, start_name: str, moves: Sequence[Any], layers: Sequence[str]) -> str:
    """One line: where the layer's count came from (the start allocation, then the exchanges)."""
    i = layers.index(layer)
    gave = sum(m.weights for m in moves if m.spared == i)
    took = sum(m.weights for m in moves if m.pruned == i)
    if not gave and not took:
        return f"{start:,} from the {start_name} allocation, no exchange improved on it"
    return f"{start:,} from the {start_name} allocation, then {took:,} more and {gave:,} fewer by the exchanges"


def prune_level(parts: Any, handle: Any, spec: PruneSpec, layers: Sequence[str], ctx: StepContext) -> Any:
    """``prune METHOD amount=auto drop=D`` on ``layers`` (model order); returns the handle."""
    be = ctx.backend
    seed = ctx.step_seed()
    before, masks = be.state(handle), be.masks_of(handle)
    base, _ = be.evaluate(handle, ctx)
    epochs = int(spec.epochs)
    best: dict[str, Any] = {}

    def put_back(state: dict, keep: dict) -> None:  # masks first: loading a state re-applies the masks held
        be.set_masks(handle, keep)
        be.load_state(handle, state)

    def measure(level: float) -> tuple[bool, dict[str, float]]:
        put_back(before, masks)
        at = spec.model_copy(update={"amount": level})
        parts.prune_once(handle, rule_for(at, seed), layers, False, ctx)
        if epochs:
            parts.fit(handle, spec, ctx, label=f"prune amount=auto: level {100 * level:g}% ({epochs} epoch{'s' * (epochs != 1)})")
        acc, loss = be.evaluate(handle, ctx)
        drop = 100.0 * (base - acc)
        within = drop <= float(spec.drop) + 1e-9
        if within and level > best.get("level", -1.0):
            best.update(level=level, state=be.state(handle), masks=be.masks_of(handle))
        return within, {"accuracy": float(acc), "loss": float(loss), "drop_points": drop}

    chosen, tried = level_search(measure)
    if chosen is None:
        put_back(before, masks)
        ctx.warn(f"step {ctx.index + 1} (prune amount=auto): no level was within drop={spec.drop:g} points of "
                 f"{100 * base:.2f}% (the lowest tried, {100 * min(t.level for t in tried):g}%, was not): the model is "
                 "left as it was before the step")
    else:
        put_back(best["state"], best["masks"])
    ctx.notes["level_search"] = {
        "drop_points": float(spec.drop),
        "baseline_accuracy": float(base),
        "epochs_per_level": epochs,
        "epochs": epochs * len(tried),
        "chosen": chosen,
        "trajectory": [{"level": t.level, "within": t.within, "next_step": t.next_step, **t.measured} for t in tried],
    }
    return handle
