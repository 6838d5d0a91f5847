"""What a report shows of the automatic prune steps: ``prune auto``'s allocation (each layer's
amount and why) and ``amount=auto``'s level search (every level tried, its accuracy, the level
kept), as Markdown sections and plots (``prune-auto*.png``, ``level-search*.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["prune_markdown", "prune_plots"]


def _steps(report: dict[str, Any], key: str) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    return [(i, s, s[key]) for i, s in enumerate(report["steps"]) if isinstance(s.get(key), dict)]


def _name(stem: str, index: int, count: int) -> str:
    return f"{stem}.png" if count == 1 else f"{stem}-step{index}.png"


def prune_markdown(report: dict[str, Any], plots: list[str]) -> list[str]:
    """The "Per-layer amounts" and "Level search" sections."""
    lines: list[str] = []
    autos = _steps(report, "auto_prune")
    for i, step, n in autos:
        probe = n["probe"]
        cands = ", ".join(f"{c['name']} {100 * c['accuracy']:.2f}% (loss {c['loss']:.4f})" for c in n.get("candidates", []))
        lines += [
            "",
            f"## Per-layer amounts: `{step['text']}`",
            "",
            f"{n['pruned']:,} of {n['weights']:,} weights pruned ({100 * n['pruned'] / max(1, n['weights']):.2f}%, asked "
            f"{100 * n['amount']:g}%). Each layer alone pruned to {', '.join(f'{100 * a:g}%' for a in n['grid'])} on "
            f"{probe['images']} {probe['split']} images (seed {probe['seed']}, accuracy {100 * probe['accuracy']:.2f}% as it "
            f"was). Three allocations of the same count compared on those images: {cands}; the start is "
            f"{n.get('start', 'global')} (global unless another answers at least 5 more images right at a loss no higher). "
            f"Then {len(n.get('moves', []))} exchange(s) of weights between layers, each kept only when it answers at least "
            f"5 more images right at a loss no higher ({n.get('evaluated', 0)} allocations measured); final "
            f"{100 * n['chosen']['accuracy']:.2f}% (loss {n['chosen']['loss']:.4f}).",
            "",
            "| layer | weights | pruned | amount | why |",
            "|---|---:|---:|---:|---|",
        ]
        lines += [f"| {r['layer']} | {r['weights']:,} | {r['pruned']:,} | {100 * r['amount']:.2f}% | {r['reason']} |"
                  for r in n["layers"]]
        name = _name("prune-auto", i, len(autos))
        if name in plots:
            lines += ["", f"![per-layer sensitivity and amounts]({name})"]
    for i, step, n in _steps(report, "auto_channels"):
        unit = "FLOPs" if n["of"] == "flops" else "MACs"
        lines += [
            "",
            f"## Filters removed for {unit}: `{step['text']}`",
            "",
            f"{unit}: {n['baseline']:,} -> {n['kept']:,} ({100 * n['share']:.2f}% kept; target at most {n['target']:,}). "
            f"Greedy search on {n['probe']['images']} {n['probe']['split']} images ({n['search']['measured']} models measured): "
            f"{100 * n['search']['accuracy']:.2f}%; one uniform ratio {n['uniform']['ratio']:.4f}: "
            f"{100 * n['uniform']['accuracy']:.2f}%; the better one started {len(n.get('exchanges', []))} exchange(s) of "
            f"channels between groups (each kept only when at least 5 more images are right at a loss no higher): "
            f"{n['chosen']}, {100 * n['final']['accuracy']:.2f}%.",
            "",
            "| group | channels | removed | search | uniform |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [f"| {g['group']} | {g['channels']} | {g['removed']} | {g['search']} | {g['uniform']} |" for g in n["groups"]]
        lines += [f"- left whole: {why}" for why in n["left_whole"]]
    levels = _steps(report, "level_search")
    for i, step, n in levels:
        chosen = "none (the model is as it was before the step)" if n["chosen"] is None else f"{100 * n['chosen']:g}%"
        lines += [
            "",
            f"## Level search: `{step['text']}`",
            "",
            f"Accuracy before the step {100 * n['baseline_accuracy']:.2f}% (test set); allowed drop {n['drop_points']:g} "
            f"points; {n['epochs_per_level']} fine-tuning epoch(s) per level, {n['epochs']} in all. Step search: start 50%, "
            f"step 10%, halved on each change of direction, stopped under 2.5%. Level kept: {chosen}.",
            "",
            "| # | level | accuracy | drop (points) | within | next step |",
            "|---:|---:|---:|---:|---|---:|",
        ]
        lines += [f"| {k + 1} | {100 * t['level']:g}% | {100 * t['accuracy']:.2f}% | {t['drop_points']:+.2f} | "
                  f"{'yes' if t['within'] else 'no'} | {_step_text(t['next_step'])} |" for k, t in enumerate(n["trajectory"])]
        name = _name("level-search", i, len(levels))
        if name in plots:
            lines += ["", f"![level search]({name})"]
    return lines


def _step_text(step: float) -> str:
    return "-" if not step else f"{100 * step:g}%"


def prune_plots(report: dict[str, Any], folder: Path, plt: Any) -> list[str]:
    """The plots of the automatic prune steps, written into ``folder`` with ``plt``
    (matplotlib.pyplot); returns their names."""
    names = []
    autos = _steps(report, "auto_prune")
    for i, step, n in autos:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        grid = [0.0] + [100 * a for a in n["grid"]]
        for r in n["layers"]:
            left.plot(grid, [100 * n["probe"]["accuracy"]] + [100 * a for a in r["accuracy"]], "o-", markersize=3,
                      label=f"{r['layer']} ({r['weights']:,})")
        left.set_xlabel("amount of the layer pruned alone (%)")
        left.set_ylabel(f"accuracy on {n['probe']['images']} {n['probe']['split']} images (%)")
        left.set_title("measured sensitivity")
        left.legend(fontsize=7)
        xs = range(len(n["layers"]))
        right.bar(list(xs), [100 * r["amount"] for r in n["layers"]], 0.6)
        right.axhline(100 * n["amount"], color="gray", linestyle="--", label=f"asked overall {100 * n['amount']:g}%")
        right.set_xticks(list(xs), [r["layer"] for r in n["layers"]], rotation=45, ha="right", fontsize=8)
        right.set_ylabel("amount pruned (%)")
        right.set_title("chosen amounts")
        right.legend(fontsize=8)
        fig.suptitle(step["text"], fontsize=10)
        fig.tight_layout()
        name = _name("prune-auto", i, len(autos))
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        names.append(name)
    levels = _steps(report, "level_search")
    for i, step, n in levels:
        fig, ax = plt.subplots(figsize=(6, 4))
        traj = n["trajectory"]
        xs, ys = [100 * t["level"] for t in traj], [100 * t["accuracy"] for t in traj]
        ax.plot(xs, ys, "-", color="lightgray", zorder=1)
        for k, t in enumerate(traj):
            ax.scatter([xs[k]], [ys[k]], color="C2" if t["within"] else "C3", zorder=2)
            ax.annotate(str(k + 1), (xs[k], ys[k]), fontsize=8, xytext=(4, 4), textcoords="offset points")
        floor = 100 * n["baseline_accuracy"] - n["drop_points"]
        ax.axhline(100 * n["baseline_accuracy"], color="gray", linestyle="--", linewidth=0.8, label="before the step")
        ax.axhline(floor, color="C3", linestyle=":", label=f"allowed drop {n['drop_points']:g} points")
        if n["chosen"] is not None:
            ax.axvline(100 * n["chosen"], color="C2", linestyle=":", label=f"kept {100 * n['chosen']:g}%")
        ax.set_xlabel("level: amount pruned (%)")
        ax.set_ylabel("test accuracy after fine-tuning (%)")
        ax.set_title(f"{step['text']}\nlevels numbered in the order tried", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = _name("level-search", i, len(levels))
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        names.append(name)
    return names
