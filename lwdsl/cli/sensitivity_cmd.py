"""``lwdsl sensitivity``: how much each layer's accuracy suffers from pruning and from fewer bits.

Takes the model as ``lwdsl run`` does (``--model``-like positional name or file, or a recipe
whose ``target MODEL on DATA`` line names them), the same ``--backend``, ``--data``,
``--checkpoint``, ``--seed`` and ``--baseline-epochs``. Every value is checked before any model
is built; a bad one exits 2 with one line and a did-you-mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError, did_you_mean
from ..limits import MAX_EPOCHS, MAX_SEED

Backend = Annotated[str, typer.Option(metavar="NAME", help="torch or tensorflow")]
Seed = Annotated[int, typer.Option(min=0, max=MAX_SEED, metavar="N", help="seed for the baseline and the probe images")]
DataHelp = "mnist, fashion_mnist, synthetic:C,H,W:K, or a path (as lwdsl run --data; default: the recipe's target)"

__all__ = ["sensitivity_command", "parse_amounts", "parse_forms"]


def parse_amounts(text: str) -> tuple[float, ...]:
    """``10,20,50%`` or ``0.1,0.2,0.5`` -> fractions, ascending in (0, 1). A value with ``%``
    or above 1 is a percentage, else a fraction.

    >>> parse_amounts("10,50%,0.9")
    (0.1, 0.5, 0.9)
    """
    out = []
    for raw in [part.strip() for part in text.split(",")]:
        try:
            value = float(raw.rstrip("%"))
        except ValueError:
            raise UsageError(f"--amounts: `{raw}` is not a number", hint="write percentages such as --amounts 10,20,50,90") from None
        value = value / 100 if raw.endswith("%") or value > 1 else value
        if not 0 < value < 1:
            raise UsageError(f"--amounts: `{raw}` is outside (0%, 100%)", hint="each amount prunes part of a layer: 10 to 99")
        out.append(round(value, 10))
    if sorted(set(out)) != out:
        raise UsageError(f"--amounts {text}: the amounts must ascend, each once", hint="e.g. --amounts 10,20,30,50,70,90")
    return tuple(out)


def parse_forms(text: str) -> tuple[str, ...]:
    """``int8,int4`` -> forms of the core's weight quantizer (``none`` for no bit widths)."""
    from ..semantics.forms import FORM_BITS

    if text.strip() == "none":
        return ()
    out = []
    for raw in [part.strip() for part in text.split(",")]:
        if raw not in FORM_BITS:
            near = did_you_mean(raw, FORM_BITS)
            raise UsageError(f"--bits: `{raw}` is not a weight form (known: {', '.join(FORM_BITS)}, or none)",
                             hint=f"did you mean `{near}`?" if near else None)
        if raw in out:
            raise UsageError(f"--bits: `{raw}` is given twice")
        out.append(raw)
    return tuple(out)


def sensitivity_command(
    target: Annotated[str, typer.Argument(metavar="MODEL_OR_RECIPE", show_default=False,
                                          help="a model name or file (lenet5, model.pt), or a recipe whose `target MODEL on "
                                               "DATA` line names them (its steps are not run)")],
    backend: Backend = "torch",
    data: Annotated[Optional[str], typer.Option(metavar="DATA", help=DataHelp)] = None,
    checkpoint: Annotated[
        Optional[Path],
        typer.Option(metavar="FILE", exists=True, dir_okay=False, help="weights to start from (.pt, .keras, .h5, .lwz); never modified"),
    ] = None,
    amounts: Annotated[str, typer.Option(metavar="LIST", help="pruning amounts per layer, in % (10,20,...) or fractions")] =
    "10,20,30,40,50,60,70,80,90",
    bits: Annotated[str, typer.Option(metavar="LIST", help="weight-only forms per layer (int8,int4,int2,ternary,binary; none)")] =
    "int8,int4,int2",
    samples: Annotated[int, typer.Option(min=1, max=1_000_000, metavar="N", help="images evaluated per probe (seeded sample)")] = 1000,
    split: Annotated[str, typer.Option(metavar="SPLIT", help="test or train: where the images are drawn from")] = "test",
    on: Annotated[str, typer.Option(metavar="KINDS", help="layer kinds (conv, linear, all) or quoted globs, comma-separated")] =
    "conv,linear",
    seed: Seed = 0,
    out: Annotated[Optional[str], typer.Option(metavar="DIR", help="folder for sensitivity.json/.md/.png (default: "
                                                                 "runs/sensitivity-<name>)")] = None,
    baseline_epochs: Annotated[
        int, typer.Option(min=1, max=MAX_EPOCHS, metavar="N", help="epochs of the baseline trained when no checkpoint is given")
    ] = 3,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="NAME=VALUE", help="override a recipe variable")] = None,
    root: Annotated[
        Optional[Path], typer.Option(metavar="DIR", file_okay=False, help="the folder `use` may read recipes from")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars or table: only the files written")] = False,
) -> None:
    """Per layer: accuracy and loss against pruning amount and bit width, one layer at a time from one baseline."""
    from .args import check_backend_name, parse_sets
    from ..data.builtin import data_shape
    from ..language.specs import KINDS, Glob
    from ..runner.sensitivity import sensitivity, sensitivity_table, write_outputs

    check_backend_name(backend)
    grid, forms = parse_amounts(amounts), parse_forms(bits)
    if not grid and not forms:
        raise UsageError("nothing to measure: --bits none and no --amounts")
    if split not in ("test", "train"):
        near = did_you_mean(split, ("test", "train"))
        raise UsageError(f"--split {split}: write test or train", hint=f"did you mean `{near}`?" if near else None)
    patterns = []
    for word in [w.strip() for w in on.split(",") if w.strip()]:
        if word.startswith('"') or any(c in word for c in "*?["):
            patterns.append(Glob(glob=word.strip('"')))
        elif word in KINDS:
            patterns.append(word)
        else:
            near = did_you_mean(word, KINDS)
            raise UsageError(f"--on: `{word}` is not a layer kind (known: {', '.join(KINDS)}); quote a glob: --on '\"fc*\"'",
                             hint=f"did you mean `{near}`?" if near else None)
    model = target
    if target.endswith((".lw", ".json")):
        from ..language.compiler import load

        plan = load(target, overrides=parse_sets(set_), root=root)
        if plan.target is None:
            raise UsageError(f"{target} has no `target MODEL on DATA` line", hint="give the model itself: lwdsl sensitivity lenet5 --data mnist")
        model, data = plan.target.model, data or plan.target.data
    elif set_:
        raise UsageError("--set applies to a recipe's variables; MODEL_OR_RECIPE is a model here")
    if data is None:
        raise UsageError("no data set", hint="give --data NAME|PATH (mnist, fashion_mnist, synthetic:C,H,W:K, a folder, a .npz)")
    data_shape(data)  # an unknown or oversized data set fails now, not after the model is built
    folder = Path(out) if out is not None else Path("runs") / f"sensitivity-{Path(str(model)).stem.replace(':', '_')}"
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} is a file, not a folder")
    result = sensitivity(model, backend=backend, data=data, checkpoint=checkpoint, seed=seed, amounts=grid, forms=forms,
                         samples=samples, split=split, on=tuple(patterns), baseline_epochs=baseline_epochs, quiet=quiet,
                         echo=lambda msg: typer.echo(msg, err=True))
    written = write_outputs(result, folder)
    if not quiet:
        typer.echo(sensitivity_table(result))
    typer.echo("wrote " + ", ".join(str(p) for p in written) + ("" if any(p.suffix == ".png" for p in written)
                                                                 else " (no plot: matplotlib is not installed)"))
