"""Checks that look at several steps at once, or at the recipe and a backend together.

Each op spec checks itself; what only shows across steps is checked here:

- ``export`` steps end the recipe (several exports may follow each other), and no two write
  the same path (or one inside the other);
- a layer is quantized once: two ``quantize`` steps must have disjoint selectors (that is
  how mixed precision is written: ``quantize int8 on conv | quantize int4 on linear``);
- ``prune`` does not follow a ``quantize`` that is not ``mode=qat`` (it would change codes the
  quantize has fixed); a step that trains (:meth:`~lwdsl.language.specs.StepSpec.trains`, a fact of each
  spec: ``finetune``, ``regularize``, ``distill``, gradual ``prune``) may follow an integer
  ``quantize``: it trains through the quantizer (straight-through estimator), so the model
  stays on its integer grid; it does not follow an ``fp16``/``bf16`` cast;
- no step does nothing (:meth:`~lwdsl.language.specs.StepSpec.no_op`: ``epochs=0`` on a step that trains);
- ``smoothquant`` comes before a ``quantize int8`` that quantizes activations (``mode=static``,
  the default, or ``mode=qat``; not ``weights_only``), and after no ``quantize`` (it rescales
  weights a quantize would have fixed);
- ``export tflite io=int8`` needs a ``quantize int8`` with ``mode=static`` or ``mode=qat``
  before it (a fully integer model);
- ``export onnx`` and ``export tflite`` (int8, 16-bit or float32 files) do not follow a
  quantize to a form they cannot hold (int4, int2, ternary, binary; bf16 to TFLite:
  :data:`lwdsl.language.specs.quantize.EXPORT_HOLDS`), and a ``.tflite`` is float16 or integer, not
  both (``quantize fp16`` beside an integer ``quantize``).

Selectors are compared by kind and by identical glob, without a model; ``all`` overlaps
everything. :func:`check_backend` adds what one backend cannot do, before anything runs.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Optional, Union

from ..errors import Location, LwdslError, RecipeError
from .fields import join_words
from .specs import ExportSpec, Glob, QuantizeSpec, Selector, SmoothQuantSpec, StepSpec

if TYPE_CHECKING:
    from ..backend import Backend, SupportTable
    from .plan import Recipe

__all__ = ["validate_recipe", "check_backend", "step_label", "overlap", "no_steps"]


#: Every kind a layer can have (``all`` covers these and layers of no portable kind).
_EVERY_KIND = frozenset({"conv", "linear", "embedding", "norm", "other"})


def step_text(recipe: "Recipe", index: int) -> str:
    """Step ``index`` as written in the recipe, each ``$NAME`` replaced by the value used
    (canonical text when it came from JSON/Python)."""
    text = recipe.text_of(index)
    if text:
        return text
    loc = recipe.location(index)
    if loc is not None and loc.source_line:
        return " ".join(loc.source_line[loc.col - 1 : loc.col - 1 + loc.width].split())
    from .formatter import step_to_text

    return step_to_text(recipe.steps[index])


def step_label(recipe: "Recipe", index: int) -> str:
    """How errors name step ``index``: ``step 2 `quantize int8``` (as written, when known)."""
    return f"step {index + 1} `{step_text(recipe, index)}`"


def _coverage(selector: Selector) -> tuple[frozenset[str], frozenset[str], bool]:
    """(kinds, globs, covers all) of a selector."""
    kinds: set[str] = set()
    for pattern in selector.on:
        if not isinstance(pattern, Glob):
            kinds |= _EVERY_KIND if pattern == "all" else {pattern}
    kinds -= {p for p in selector.except_ if not isinstance(p, Glob)}
    globs = frozenset(p.glob for p in selector.on if isinstance(p, Glob))
    return frozenset(kinds), globs, "all" in selector.on


def overlap(a: StepSpec, b: StepSpec) -> bool:
    """Whether two steps' selectors may cover a common layer (judged without a model)."""
    kinds_a, globs_a, all_a = _coverage(a.effective_selector())
    kinds_b, globs_b, all_b = _coverage(b.effective_selector())
    return bool(kinds_a & kinds_b or globs_a & globs_b or (all_a and globs_b) or (all_b and globs_a))


class _Quantized:
    """The quantize steps so far, indexed by what their selectors cover, so that finding the
    first one a new step overlaps (as :func:`overlap` judges) costs the size of the new step's
    selector, not the number of earlier steps: n quantize steps are checked in O(n), not O(n²)."""

    def __init__(self) -> None:
        self.by_kind: dict[str, int] = {}
        self.by_glob: dict[str, int] = {}
        self.first_all: Optional[int] = None  # the first that covers `all`
        self.first_glob: Optional[int] = None  # the first with a glob
        self.first_frozen: Optional[tuple[int, QuantizeSpec]] = None  # the first not mode=qat
        self.first_cast: Optional[tuple[int, QuantizeSpec]] = None  # the first fp16/bf16 cast
        self.first_full_int8: Optional[int] = None  # the first int8 static or qat

    def first_overlap(self, step: StepSpec) -> Optional[int]:
        kinds, globs, covers_all = _coverage(step.effective_selector())
        hits = [self.by_kind[k] for k in kinds if k in self.by_kind]
        hits += [self.by_glob[g] for g in globs if g in self.by_glob]
        if covers_all and self.first_glob is not None:
            hits.append(self.first_glob)
        if globs and self.first_all is not None:
            hits.append(self.first_all)
        return min(hits, default=None)

    def add(self, index: int, step: QuantizeSpec) -> None:
        kinds, globs, covers_all = _coverage(step.effective_selector())
        for kind in kinds:
            self.by_kind.setdefault(kind, index)
        for glob in globs:
            self.by_glob.setdefault(glob, index)
        if covers_all and self.first_all is None:
            self.first_all = index
        if globs and self.first_glob is None:
            self.first_glob = index
        if step.mode != "qat" and self.first_frozen is None:
            self.first_frozen = (index, step)
        if step.is_cast() and self.first_cast is None:
            self.first_cast = (index, step)
        if step.dtype == "int8" and step.mode in ("static", "qat") and not step.weights_only and self.first_full_int8 is None:
            self.first_full_int8 = index


def _artifact_parts(step: ExportSpec) -> tuple[str, ...]:
    """The path an export writes, as folder names, compared case-insensitively."""
    name = step.artifact_name()
    if step.format == "keras" and "/" not in name and not name.endswith(".keras"):
        name = str(PurePosixPath(name).with_suffix(".keras"))  # what the keras writer does
    return tuple(part.casefold() for part in name.split("/"))


def no_steps(file: str, text: str) -> RecipeError:
    """The error for a recipe with no step (an empty file, only comments or header lines): it
    would do nothing, and a run of it would only copy the model."""
    from .syntax import location_in

    first = next((i for i, line in enumerate(text.split("\n"), 1) if line.strip()), 0)
    where = location_in(text, file, first, 1, len(text.split("\n")[first - 1].rstrip())) if first else Location(file)
    return RecipeError(
        "the recipe has no steps, so it would change nothing",
        where,
        found="no step" + (" (only header lines and comments)" if first else " (an empty file)"),
        expected="at least one step, e.g. prune l1 0.2 (a file of `let` lines is read with `use` from a recipe)",
    )


def validate_recipe(recipe: "Recipe") -> None:
    """Raise a RecipeError, naming and locating the later step, if the steps do not fit together.

    Linear in the number of steps (a recipe of a megabyte is checked in seconds)."""
    quantized = _Quantized()
    first_export: Optional[int] = None
    artifacts: dict[tuple[str, ...], int] = {}  # path an export writes -> its step
    folders: dict[tuple[str, ...], int] = {}  # folder an export writes into -> its step
    dtypes: dict[str, int] = {}  # quantize dtype -> its first step (what an export must hold)
    smoothing: Optional[int] = None  # a smoothquant step still waiting for its int8 activations
    for i, step in enumerate(recipe.steps):
        nothing = step.no_op()
        if nothing is not None:  # text recipes are refused earlier, at the argument (binding)
            raise RecipeError(
                f"{step_label(recipe, i)}: {nothing}",
                recipe.location(i),
                found=f"{nothing.field}={getattr(step, nothing.field)}",
                expected=nothing.expected,
            )
        if first_export is not None and not isinstance(step, ExportSpec):
            raise RecipeError(
                f"{step_label(recipe, i)}: comes after an export",
                recipe.location(i),
                found=step_label(recipe, first_export),
                expected="export steps at the end of the recipe (several exports may end it)",
                hint="move the export to the end",
            )
        if isinstance(step, ExportSpec):
            first_export = i if first_export is None else first_export
            parts = _artifact_parts(step)
            clash = next((artifacts[parts[:n]] for n in range(1, len(parts) + 1) if parts[:n] in artifacts), folders.get(parts))
            if clash is not None:
                raise RecipeError(
                    f"{step_label(recipe, i)}: writes {step.artifact_name()}, which collides with what {step_label(recipe, clash)} writes",
                    recipe.location(i),
                    found=step.artifact_name(),
                    expected="a PATH of its own for each export",
                    hint=f'give it another name, e.g. export {step.format} "2-{PurePosixPath(step.artifact_name()).name}"',
                )
            artifacts[parts] = i
            if step.io == "int8" and quantized.first_full_int8 is None:
                raise RecipeError(
                    f"{step_label(recipe, i)}: io=int8 needs a fully integer model",
                    recipe.location(i),
                    found=(f"{step_label(recipe, dtypes['int8'])}: its activations stay float" if "int8" in dtypes
                           else "no quantize step before it"),
                    expected="quantize int8 mode=static (activations calibrated) before export tflite io=int8",
                    hint="add `quantize int8 mode=static` before the export, or drop io=int8",
                )
            for n in range(1, len(parts)):
                folders.setdefault(parts[:n], i)
            mixed = sorted(set(dtypes) - {"fp16"}) if step.format == "tflite" and "fp16" in dtypes else []
            if mixed:
                raise RecipeError(
                    f"{step_label(recipe, i)}: a .tflite file is float16 or integer, not both: "
                    f"{step_label(recipe, dtypes['fp16'])} casts to fp16 and {step_label(recipe, dtypes[mixed[0]])} "
                    f"quantizes to {mixed[0]}",
                    recipe.location(i),
                    found=f"export tflite after quantize fp16 and quantize {mixed[0]}",
                    expected="export tflite after quantize fp16 alone (a float16 file) or after integer quantize steps",
                    hint="quantize every layer fp16, or int8 (a fully int8 file); or export keras and keep model.lwz",
                )
            for j in dtypes.values():
                why = recipe.steps[j].export_refusal(step.format)
                if why:
                    raise RecipeError(
                        f"{step_label(recipe, i)}: {why} (from {step_label(recipe, j)})",
                        recipe.location(i),
                        found=f"export {step.format} after quantize {recipe.steps[j].dtype}",
                        expected="export torch, keras or saved_model (float weights codes * scale; model.lwz "
                        "holds the packed codes), or quantize int8 for an int8 file",
                        hint=f"replace export {step.format} by export torch (torch backend) or export keras (tensorflow "
                        "backend); the run folder's model.lwz keeps the packed codes",
                    )
        elif isinstance(step, QuantizeSpec):
            j = quantized.first_overlap(step)
            if j is not None:
                raise RecipeError(
                    f"{step_label(recipe, i)}: quantizes layers that {step_label(recipe, j)} already quantized",
                    recipe.location(i),
                    found=step_label(recipe, j),
                    expected="one quantize per layer: disjoint selectors for mixed precision",
                    hint="e.g. quantize int8 on conv | quantize int4 on linear",
                )
            quantized.add(i, step)
            dtypes.setdefault(step.dtype, i)
            if quantized.first_full_int8 is not None:
                smoothing = None
        elif isinstance(step, SmoothQuantSpec):
            earlier = next(iter(sorted(dtypes.values())), None)
            if earlier is not None:
                raise RecipeError(
                    f"{step_label(recipe, i)}: comes after {step_label(recipe, earlier)}: it would rescale weights "
                    "that quantize already fixed",
                    recipe.location(i),
                    found=step_label(recipe, earlier),
                    expected="smoothquant before the quantize int8 it prepares",
                    hint="move smoothquant before the quantize: smoothquant alpha=0.5 | quantize int8",
                )
            smoothing = i if smoothing is None else smoothing
        elif step.trains() and quantized.first_cast is not None:  # the spec says whether it trains
            j, earlier = quantized.first_cast
            raise RecipeError(
                f"{step_label(recipe, i)}: `{step.op}` cannot train a model that {step_label(recipe, j)} cast to {earlier.dtype}",
                recipe.location(i),
                found=step_label(recipe, j),
                expected=f"`{step.op}` before the cast, or an integer quantize (it trains through the quantizer)",
            )
        elif step.op == "prune" and quantized.first_frozen is not None:
            j, earlier = quantized.first_frozen
            raise RecipeError(
                f"{step_label(recipe, i)}: `{step.op}` changes weights that {step_label(recipe, j)} "
                f"already quantized ({'weights_only' if earlier.weights_only else f'mode={earlier.mode}'})",
                recipe.location(i),
                found=step_label(recipe, j),
                expected=f"`{step.op}` before the quantize, or quantize with mode=qat",
            )
    if smoothing is not None:
        raise RecipeError(
            f"{step_label(recipe, smoothing)}: no quantize int8 of activations follows it: smoothquant only moves "
            "activation outliers into the weights, which changes nothing unless activations are quantized after it",
            recipe.location(smoothing),
            found="no `quantize int8` (mode=static or mode=qat) after it"
            + (f"; {step_label(recipe, dtypes['int8'])} keeps float activations" if "int8" in dtypes else ""),
            expected="smoothquant ... | quantize int8 (the default mode=static calibrates the activations)",
            hint="add `quantize int8` after it, or drop the smoothquant step",
        )


def check_backend(recipe: "Recipe", backend: Union[str, "Backend"], *, load: bool = True) -> None:
    """Raise a RecipeError for the first step that ``backend`` cannot run, then for a ``target``
    model it cannot build (its support table's ``no_models``).

    Built-in backends are asked through their static support table
    (:func:`lwdsl.backend.support_table`, per op and per form), without importing any
    framework; a backend object, or a third-party backend name (with ``load``), is asked itself.
    The same table is what the backend's ``apply`` obeys, so a check never promises what a run
    refuses.

    Args:
        recipe: a compiled recipe.
        backend: a backend name (``torch``, ``tensorflow``, an alias, a plugin) or object.
        load: whether a backend given by name may be imported to ask it.

    Raises:
        RecipeError: a step the backend cannot run, named and located.
        LwdslError: an unknown backend name.

    Example:
        >>> from lwdsl import parse
        >>> check_backend(parse("prune l1 0.2 | export torch"), "torch", load=False)
    """
    from ..backend import ALIASES, BACKENDS, SupportTable, get_backend, support_table
    from ..backend.registry import unsupported

    name = backend if isinstance(backend, str) else backend.name
    key = ALIASES.get(name, name)
    instance = backend if not isinstance(backend, str) else (support_table(key) if key in BACKENDS else None)
    if instance is None and (load or key not in BACKENDS):
        try:
            instance = get_backend(key)
        except LwdslError:
            if key not in BACKENDS:
                raise
    table = instance if isinstance(instance, SupportTable) else getattr(instance, "support", None)
    for i, step in enumerate(recipe.steps if instance else ()):
        why = unsupported(instance, step) if isinstance(instance, SupportTable) else instance.unsupported(step)
        if not why:
            continue
        if not why.startswith(f"the {key} backend"):
            why = f"the {key} backend cannot run this step: {why}"
        runs = table.runs.get(step.op) if table is not None else None
        if runs:
            expected = f"{join_words(list(runs))} (what the {key} backend runs of `{step.op}`)"
        else:
            expected = f"steps the {key} backend supports (see `lwdsl ops`)"
        others = [b for b in BACKENDS if b != key and _runs(support_table(b), step)]
        raise RecipeError(
            f"{step_label(recipe, i)}: {why}",
            recipe.location(i),
            found=next((f for f in step.forms() if runs is not None and f not in runs), step.op),
            expected=expected,
            hint=f"run it with --backend {others[0]}" if others else None,
        )
    model = recipe.target.model if recipe.target is not None else None
    why = table.model_refusal(model) if isinstance(table, SupportTable) and model else None
    if why:
        others = [b for b in BACKENDS if b != key and support_table(b) is not None and not support_table(b).model_refusal(model)]
        raise RecipeError(f"target {model}: the {key} backend cannot build it: {why}", found=model,
                          expected=f"a model the {key} backend builds", hint=f"run it with --backend {others[0]}" if others else None)


def _runs(table: Optional["SupportTable"], step: StepSpec) -> bool:
    return table is not None and table.unsupported(step) is None
