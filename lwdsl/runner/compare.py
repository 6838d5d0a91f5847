"""``lwdsl compare RUN_DIR...``: run folders side by side, and one picture of them.

For each run folder (what ``lwdsl run`` wrote: ``report.json``, ``lwdsl.lock.json``,
``recipe.lw``): its backend, model, data, seed, accuracy before and after, non-zero weights,
file size after gzip and latency at batch 1 after the last step; the recipe of every run against
the first one's (``lwdsl diff``'s words); and a warning when the runs do not share a model or
data set (their accuracies then do not compare). The plot has accuracy against gzip size and
against latency, one point per run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import UsageError

__all__ = ["load_run", "compare_runs", "compare_plot"]


def load_run(folder: Path) -> dict[str, Any]:
    """A run folder's report, lock file and recipe text.

    Raises:
        UsageError: the folder is not a run folder lwdsl wrote (what is missing named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder", hint="give run folders that lwdsl run wrote (its --out)")
    found: dict[str, Any] = {"folder": folder}
    for name, key in (("report.json", "report"), ("lwdsl.lock.json", "lock")):
        path = folder / name
        try:
            found[key] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"{folder} is not a run folder: it has no {name}", hint="give folders that lwdsl run wrote (its --out)") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path} cannot be read: {exc}") from None
        if not isinstance(found[key], dict):
            raise UsageError(f"{path} is not an lwdsl {name}")
    report = found["report"]
    if not isinstance(report.get("steps"), list) or not report["steps"] or "summary" not in report:
        raise UsageError(f"{folder / 'report.json'} has no steps: not a finished lwdsl run")
    recipe = folder / "recipe.lw"
    found["recipe"] = recipe.read_text(encoding="utf-8") if recipe.is_file() else None
    return found


def _row(run: dict[str, Any]) -> dict[str, Any]:
    report = run["report"]
    s, last, first = report["summary"], report["steps"][-1]["metrics"], report["steps"][0]["metrics"]
    return {
        "run": run["folder"].name,
        "backend": report.get("backend"),
        "model": report.get("model"),
        "data": report.get("data"),
        "seed": report.get("seed"),
        "steps": len(report["steps"]) - 1,
        "accuracy_before": first.get("accuracy"),
        "accuracy_after": last.get("accuracy"),
        "nonzero_compression": s.get("nonzero_compression"),
        "size_gzip_bytes": last.get("size_gzip_bytes"),
        "size_gzip_ratio": s.get("size_gzip_ratio"),
        "latency_ms_b1": last.get("latency_ms_b1"),
    }


def compare_runs(folders: Sequence[Path]) -> tuple[list[dict[str, Any]], str]:
    """(one row per run, the text a person reads: table, warnings, recipe differences)."""
    if len(folders) < 2:
        raise UsageError("compare needs at least two run folders", hint="lwdsl compare runs/a runs/b [runs/c ...]")
    runs = [load_run(Path(f)) for f in folders]
    rows = [_row(r) for r in runs]
    lines = []
    head = ("run", "backend", "model", "accuracy", "non-zero", "gzip", "latency b1")
    table = [head]
    for r in rows:
        acc = f"{100 * r['accuracy_before']:.2f}% -> {100 * r['accuracy_after']:.2f}%" if r["accuracy_after"] is not None else "-"
        lat = f"{r['latency_ms_b1']:.3f} ms" if r["latency_ms_b1"] is not None else "-"
        table.append((r["run"], str(r["backend"]), str(r["model"]), acc, f"{r['nonzero_compression']:.1f}x",
                      f"{r['size_gzip_bytes']:,} B ({r['size_gzip_ratio']:.1f}x)", lat))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for i, row in enumerate(table):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for what in ("model", "data"):
        seen = sorted({str(r[what]) for r in rows})
        if len(seen) > 1:
            lines.append(f"warning: the runs do not share a {what} ({', '.join(seen)}): their figures do not compare")
    lines += _recipe_differences(runs)
    return rows, "\n".join(lines)


def _recipe_differences(runs: list[dict[str, Any]]) -> list[str]:
    from ..language.compiler import parse
    from ..language.diff import diff_recipes, render_diff

    first = runs[0]
    if first["recipe"] is None:
        return [f"({first['folder'].name} has no recipe.lw: recipes not compared)"]
    out = []
    base = parse(first["recipe"], file=str(first["folder"] / "recipe.lw"))
    for run in runs[1:]:
        if run["recipe"] is None:
            out.append(f"({run['folder'].name} has no recipe.lw)")
            continue
        changes = diff_recipes(base, parse(run["recipe"], file=str(run["folder"] / "recipe.lw")))
        out.append(f"\nrecipe of {run['folder'].name} against {first['folder'].name}:")
        out.append(render_diff(changes) if changes else "  the same steps")
    return out


def compare_plot(rows: list[dict[str, Any]], path: Path) -> Optional[Path]:
    """Accuracy against gzip size and against latency at batch 1, one point per run (None
    without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from ..backend.weights import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "size_gzip_bytes", "model size, gzip (KiB)"), (axes[1], "latency_ms_b1", "latency at batch 1 (ms)")):
        pts = [(r[key] / (1024 if key == "size_gzip_bytes" else 1), 100 * r["accuracy_after"], r["run"]) for r in rows
               if r.get(key) is not None and r.get("accuracy_after") is not None]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts])
        for x, y, name in pts:
            ax.annotate(name, (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy after (%)")
        if not pts:
            ax.set_title("(not measured)")
    fig.suptitle("lwdsl compare: one point per run")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)
