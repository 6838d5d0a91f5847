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
from ..semantics.allocation import AUTO_GRID, AUTO_SAMPLES, allocate, level_search
from ..semantics.pruning import MaskRule, rule_for
from .context import StepContext
from .sensitivity import measure_sensitivity

__all__ = ["prune_auto", "prune_level"]


def prune_auto(parts: Any, handle: Any, spec: PruneSpec, layers: Sequence[str], ctx: StepContext) -> Any:
    """``prune auto AMOUNT`` on ``layers`` (model order); returns the handle."""
    be = ctx.backend
    measured = measure_sensitivity(be, handle, layers, ctx, amounts=AUTO_GRID, samples=AUTO_SAMPLES, split="train")
    base = measured["baseline"]["accuracy"]
    rows = measured["layers"]
    drops = [[100.0 * (base - p["accuracy"]) for p in row["prune"]] for row in rows]
    choice = allocate(float(spec.amount), [row["weights"] for row in rows], AUTO_GRID, drops)
    for name, amount in zip(layers, choice.amounts):
        if amount > 0:
            handle = parts.prune_once(handle, MaskRule("magnitude", amount, scope="layer"), [name], False, ctx)
    ctx.notes["auto_prune"] = {
        "amount": float(spec.amount),
        "threshold_points": choice.threshold,
        "pruned": int(sum(choice.counts)),
        "weights": int(sum(row["weights"] for row in rows)),
        "probe": {"split": measured["split"], "images": measured["samples"], "seed": measured["seed"],
                  "accuracy": base},
        "grid": list(AUTO_GRID),
        "layers": [
            {"layer": row["layer"], "weights": row["weights"], "pruned": count, "amount": amount, "reason": reason,
             "accuracy": [p["accuracy"] for p in row["prune"]]}
            for row, count, amount, reason in zip(rows, choice.counts, choice.amounts, choice.reasons)
        ],
    }
    return handle


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
