"""``lwdsl sensitivity``: per-layer accuracy against pruning amount and bit width, written out.

The model is loaded (and its baseline trained or taken from the cache) as ``lwdsl run`` does;
the numbers come from :func:`lwdsl.backend.sensitivity.measure_sensitivity`, one layer at a time
from one baseline, on ``samples`` seeded images of a split
(:func:`lwdsl.semantics.allocation.probe_indices`). Written into the output folder:
``sensitivity.json`` (every number), ``sensitivity.md`` (the tables, 80 columns, also printed)
and ``sensitivity.png`` (accuracy against amount and against bits, a line per layer; only when
matplotlib is installed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from ..backend import StepContext, get_backend
from ..backend.sensitivity import measure_sensitivity
from ..backend.threads import usable_cpus
from ..errors import UsageError

__all__ = ["sensitivity", "DEFAULT_AMOUNTS", "DEFAULT_FORMS", "sensitivity_table", "write_outputs"]

#: The amounts ``lwdsl sensitivity`` prunes each layer to by default: 10% to 90%.
DEFAULT_AMOUNTS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: The weight-only forms each layer is rounded to by default.
DEFAULT_FORMS: tuple[str, ...] = ("int8", "int4", "int2")
WIDTH = 80


def sensitivity(
    model: Any,
    *,
    backend: str = "torch",
    data: Optional[str] = None,
    checkpoint: Optional[Union[str, Path]] = None,
    seed: int = 0,
    amounts: Sequence[float] = DEFAULT_AMOUNTS,
    forms: Sequence[str] = DEFAULT_FORMS,
    samples: int = 1000,
    split: str = "test",
    on: Sequence[Any] = ("conv", "linear"),
    baseline_epochs: int = 3,
    quiet: bool = False,
    echo: Optional[Callable[[str], None]] = None,
) -> dict[str, Any]:
    """Measure every selected layer's sensitivity (see the module doc); returns the JSON data.

    Args:
        model: a model name or file (as ``lwdsl run --model``).
        data: the data set (a name or a path).
        checkpoint: weights to start from; without one, the cached baseline (trained once).
        amounts: the pruning amounts, ascending in (0, 1).
        forms: weight-only forms (``int8``, ``int4``, ``int2``, ``ternary``, ``binary``).
        samples, split: how many images, of ``test`` or ``train``, drawn with ``seed``.
        on: layer kinds or globs (:class:`lwdsl.language.specs.Selector` patterns).

    Raises:
        UsageError: no model or data, an unknown layer pattern; RunError from the run's loading.
    """
    from ..language.plan import Recipe
    from ..language.selectors import match_layers
    from ..language.specs import Selector
    from .pipeline import _baseline, _prepare
    from .progress import progress_factory
    from .usermodel import code_digest, is_code_ref

    say = (echo or print) if not quiet else (lambda *_: None)
    be = get_backend(backend)
    before = be.get_threads()
    be.set_threads(usable_cpus())
    progress = progress_factory(quiet)
    try:
        prep = _prepare(Recipe(), None, model, be, data, None, None, checkpoint, seed)
        ctx = StepContext(data=prep.dataset, seed=seed, index=-1, progress=progress, warn=lambda m: say(f"warning: {m}"))
        info: dict[str, Any] = {"source": "checkpoint" if prep.checkpoint else "given"}
        ref = prep.model_ref
        if prep.checkpoint is None and isinstance(ref, str) and not Path(ref).exists():
            digest = code_digest(ref) if is_code_ref(ref) else None
            info = _baseline(be, prep.handle, ref + (f"-{digest[:12]}" if digest else ""), ctx, baseline_epochs, say)
        names = match_layers(Selector(on=tuple(on)), be.layers(prep.handle), step_label="lwdsl sensitivity --on",
                             location=None)
        measured = measure_sensitivity(be, prep.handle, names, ctx, amounts=amounts, forms=forms, samples=samples, split=split)
    finally:
        progress.stop()
        be.set_threads(before)
    return {"model": str(ref), "data": prep.dataset.name, "backend": be.name, "baseline_weights": info, **measured}


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _blocks(headers: list[str], fixed: int, cell: int) -> list[list[int]]:
    """Column indices in groups that fit :data:`WIDTH` beside ``fixed`` characters."""
    per = max(1, (WIDTH - fixed) // cell)
    return [list(range(i, min(i + per, len(headers)))) for i in range(0, len(headers), per)]


def sensitivity_table(result: dict[str, Any]) -> str:
    """The tables of a :func:`sensitivity` result, at most 80 columns wide."""
    rows = result["layers"]
    base = result["baseline"]
    name_w = min(18, max([5] + [len(r["layer"]) for r in rows]))
    fixed, cell = name_w + 10, 7
    lines = [
        f"{result['model']} on {result['data']} ({result['backend']}): {result['samples']} {result['split']} images "
        f"(seed {result['seed']})",
        f"baseline: accuracy {_pct(base['accuracy'])}%, loss {base['loss']:.4f}; one layer at a time, from the baseline",
    ]

    def section(title: str, headers: list[str], values: Callable[[dict[str, Any], int], str]) -> None:
        for block in _blocks(headers, fixed, cell):
            lines.extend(["", title])
            lines.append(f"{'layer':<{name_w}} {'weights':>9}" + "".join(f"{headers[j]:>{cell}}" for j in block))
            for r in rows:
                name = r["layer"] if len(r["layer"]) <= name_w else r["layer"][: name_w - 1] + "~"
                lines.append(f"{name:<{name_w}} {r['weights']:>9,}" + "".join(f"{values(r, j):>{cell}}" for j in block))

    if result.get("amounts"):
        section("accuracy (%) with the layer pruned (magnitude) to", [f"{100 * a:g}%" for a in result["amounts"]],
                lambda r, j: _pct(r["prune"][j]["accuracy"]))
        section("loss with the layer pruned to", [f"{100 * a:g}%" for a in result["amounts"]],
                lambda r, j: f"{r['prune'][j]['loss']:.3f}")
    if result.get("forms"):
        forms = list(result["forms"])
        section("accuracy (%) and loss with the layer's weights rounded to (weights only)",
                [f"{f}" for f in forms] + [f"L {f}" for f in forms],
                lambda r, j: _pct(r["bits"][j]["accuracy"]) if j < len(forms) else f"{r['bits'][j - len(forms)]['loss']:.3f}")
    return "\n".join(lines) + "\n"


def _plot(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional: matplotlib comes with the framework extras
        return False
    panels = [k for k in ("amounts", "forms") if result.get(k)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    base = 100 * result["baseline"]["accuracy"]
    for ax, kind in zip(axes[0], panels):
        for r in result["layers"]:
            if kind == "amounts":
                xs = [0.0] + [100 * p["amount"] for p in r["prune"]]
                ys = [base] + [100 * p["accuracy"] for p in r["prune"]]
            else:
                xs = [32] + [b["bits"] for b in r["bits"]]
                ys = [base] + [100 * b["accuracy"] for b in r["bits"]]
            ax.plot(xs, ys, "o-", markersize=3, label=f"{r['layer']} ({r['weights']:,})")
        ax.axhline(base, color="gray", linestyle="--", linewidth=0.8)
        if kind == "amounts":
            ax.set_xlabel("amount pruned of the layer (%)")
            ax.set_title("pruning one layer (magnitude)")
        else:
            ax.set_xscale("log", base=2)
            ticks = sorted({32} | {b["bits"] for r in result["layers"] for b in r["bits"]}, reverse=True)
            ax.set_xticks(ticks, ["float" if t == 32 else f"{t}" for t in ticks])
            ax.invert_xaxis()
            ax.set_xlabel("bits per weight (weights only)")
            ax.set_title("rounding one layer's weights")
        ax.set_ylabel(f"accuracy on {result['samples']} {result['split']} images (%)")
        ax.legend(fontsize=7)
    fig.suptitle(f"{result['model']} on {result['data']} ({result['backend']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_outputs(result: dict[str, Any], folder: Path) -> list[Path]:
    """``sensitivity.json``, ``sensitivity.md`` and (with matplotlib) ``sensitivity.png`` in
    ``folder`` (created); returns the files written."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} is a file, not a folder", hint="give a folder, e.g. --out runs/sensitivity")
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "sensitivity.json", folder / "sensitivity.md"]
    written[0].write_text(json.dumps(result, indent=2))
    written[1].write_text("# Sensitivity\n\n```\n" + sensitivity_table(result) + "```\n")
    if _plot(result, folder / "sensitivity.png"):
        written.append(folder / "sensitivity.png")
    return written
