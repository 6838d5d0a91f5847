"""``prune auto AMOUNT of=macs`` (or ``of=flops``: twice the count, the same share): whole
filters removed, per dependency group, so that the model keeps at most ``1 - AMOUNT`` of its
baseline multiply-accumulates; the numbers are the core's (:mod:`lwdsl.semantics.mac_allocation`).

Flow, once for every backend over its primitives (``groups``, ``positions``, ``state``/
``load_state``, ``evaluate``, and the prune parts' removal): the groups the selection may
shorten (:func:`~lwdsl.semantics.mac_allocation.eligible_groups`); the MAC model from the
canonical weight shapes and output positions of the data's input shape; on
:data:`~lwdsl.semantics.allocation.AUTO_SAMPLES` seeded training images, the greedy search and
the uniform ratio, each measured as the baseline with the removed channels unread; the one
answering more probe images right (ties: the lower loss, then the search) starts the exchanges
between groups (:func:`~lwdsl.semantics.mac_allocation.exchange_removal`); the result is applied, group
after group in reverse model order, by the backend's filter removal (L1 filter norms). Notes:
``auto_channels`` (baseline and kept MACs, target, each group's channels and removed counts
for the search and the uniform ratio, every search step, the choice).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..errors import LwdslError
from ..language.specs import PruneSpec
from ..semantics.allocation import AUTO_SAMPLES, score
from ..semantics.mac_allocation import (MacModel, eligible_groups, exchange_removal, fill_back, removal_state, search_removal,
                                        uniform_removal)
from ..semantics.pruning import MaskRule
from .context import StepContext
from .sensitivity import probe_context

__all__ = ["prune_auto_channels"]


def prune_auto_channels(parts: Any, handle: Any, spec: PruneSpec, layers: Sequence[str], ctx: StepContext) -> Any:
    """``prune auto AMOUNT of=macs|flops`` on ``layers`` (model order); returns the handle."""
    be = ctx.backend
    order = {name: i for i, name in enumerate(layers)}
    groups, left = eligible_groups(be.groups(handle), layers)
    groups.sort(key=lambda g: min(order[p] for p in g.producers))
    if not groups:
        raise LwdslError(f"prune auto of={spec.of}: no selected layer has filters that can be removed"
                         + (f" ({'; '.join(left)})" if left else ""),
                         hint="select convolutions or hidden linear layers (not the model's output)")
    state = be.state(handle)
    shapes = {k[: -len(".weight")]: v.shape for k, v in state.items() if k.endswith(".weight")}
    positions = be.positions(handle, tuple(ctx.data.input_shape))
    macs = MacModel(groups, shapes, positions)
    base = macs.baseline
    target = int(math.floor((1.0 - float(spec.amount)) * base))
    probe = probe_context(ctx, AUTO_SAMPLES, "train")
    images = int(len(probe.data.test_y))

    def measure(removed: tuple[int, ...]) -> tuple[float, float]:
        trial, _ = removal_state(state, groups, removed)
        try:
            be.load_state(handle, trial)
            acc, loss = be.evaluate(handle, probe)
        finally:
            be.load_state(handle, state)
        return float(acc), float(loss)

    unit = "FLOPs" if spec.of == "flops" else "MACs"
    try:
        ratio, uniform = uniform_removal(groups, macs, target)
        searched, steps, measured = search_removal(groups, macs, target, measure)
    except ValueError:
        floor = macs.total(tuple(g.channels - 1 for g in groups))
        raise LwdslError(
            f"prune auto {100 * spec.amount:g}% of={spec.of}: the selection cannot lose that much; with one filter left "
            f"in every group the model keeps {100 * floor / base:.2f}% of its {unit}",
            hint=f"a smaller AMOUNT (at most {100 * (1 - floor / base):.1f}%), or select more layers") from None
    at_uniform, at_search = measure(uniform), measure(searched)
    use_search = score(*at_search, images) <= score(*at_uniform, images)
    start = searched if use_search else uniform
    removed, exchanges, exchanged = exchange_removal(groups, macs, target, start, measure, images,
                                                     at_search if use_search else at_uniform)
    filled = fill_back(removed, macs, target)  # the uniform ratio and the exchanges can leave room under the target
    final = measure(filled) if (exchanges or filled != tuple(start)) else (at_search if use_search else at_uniform)
    removed = filled
    seed = ctx.step_seed()
    for g, r in reversed(list(zip(groups, removed))):  # later groups first: earlier norms stay as measured
        if r:
            rule = MaskRule("structured", r / g.channels, axis=0, method="l1", p=1.0, seed=seed)
            handle = parts.prune_once(handle, rule, g.producers, True, ctx)
    ctx.notes.pop("groups", None)
    scale = 2 if spec.of == "flops" else 1
    kept = macs.total(removed)
    ctx.notes["auto_channels"] = {
        "amount": float(spec.amount),
        "of": spec.of,
        "baseline": scale * base,
        "target": scale * target,
        "kept": scale * kept,
        "share": kept / base if base else 0.0,
        "probe": {"split": "train", "images": images, "seed": int(ctx.seed)},
        "start": "search" if use_search else "uniform",
        "chosen": ("search" if use_search else "uniform") + (" + exchanges" if exchanges else ""),
        "final": {"accuracy": final[0], "loss": round(final[1], 4)},
        "exchanges": [{"more": groups[i].name, "fewer": groups[j].name, "removed": list(r), "accuracy": a,
                       "loss": round(lo, 4)} for i, j, r, a, lo in exchanges],
        "measured": measured + exchanged + 2,
        "search": {"accuracy": at_search[0], "loss": round(at_search[1], 4), "macs": scale * macs.total(searched),
                   "measured": measured},
        "uniform": {"ratio": ratio, "accuracy": at_uniform[0], "loss": round(at_uniform[1], 4),
                    "macs": scale * macs.total(uniform)},
        "groups": [
            {"group": g.name, "producers": list(g.producers), "channels": g.channels, "removed": r, "search": s, "uniform": u}
            for g, r, s, u in zip(groups, removed, searched, uniform)
        ],
        "steps": [{"group": groups[s.group].name, "channels": s.channels, "macs": scale * s.macs, "accuracy": s.accuracy,
                   "loss": round(s.loss, 4)} for s in steps],
        "left_whole": left,
    }
    return handle
