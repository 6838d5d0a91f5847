"""Data references: a path to the user's data with its options, as one string.

``PATH`` or ``PATH?name=value&name=value`` (in a recipe: ``target lenet5 on "photos?resize=32"``;
on the command line ``--data photos --resize 32`` adds the same options). The string is what
the report and the lock file name, so a run says exactly what it read. Options:

========== =============================================================== ===================
option     meaning                                                          default
========== =============================================================== ===================
resize     ``S`` (shorter side to S) or ``HxW``                             none
crop       ``S`` or ``HxW``: the centre window                              none
mean, std  one value, or one per channel (comma-separated)                  0.5, 0.5
channels   1 or 3                                                           the first image's
split      test fraction of a source with no test split (0 < f < 1)         0.2
layout     ``.npz`` image axes: ``nhw``, ``nhwc`` or ``nchw``                detected
labels     CIFAR-100: ``fine`` or ``coarse``                                fine
image,     Hugging Face ``datasets``: the image and the label column         detected
label
========== =============================================================== ===================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import UsageError, did_you_mean
from .preprocess import DEFAULT_MEAN, DEFAULT_STD, Preprocess

__all__ = ["DataRef", "parse_ref", "with_options", "OPTIONS", "DEFAULT_SPLIT", "SPLIT_SEED"]

#: Every option a data reference may carry, with what it takes (for errors).
OPTIONS = {
    "resize": "S or HxW (pixels)",
    "crop": "S or HxW (pixels)",
    "mean": "a number, or one per channel: 0.485,0.456,0.406",
    "std": "a number > 0, or one per channel",
    "channels": "1 or 3",
    "split": "the test fraction, 0 < f < 1",
    "layout": "nhw, nhwc or nchw",
    "labels": "fine or coarse",
    "image": "a column name",
    "label": "a column name",
}

#: The test fraction of a source with no test split of its own.
DEFAULT_SPLIT = 0.2
#: The seed of that split: fixed, so every run (whatever its --seed) tests on the same images.
SPLIT_SEED = 0


@dataclass(frozen=True)
class DataRef:
    """A parsed reference: the path, the options as written, and the preprocessing they give."""

    text: str
    path: Path
    options: dict[str, str] = field(default_factory=dict)
    preprocess: Preprocess = field(default_factory=Preprocess)
    split: float = DEFAULT_SPLIT

    def fail(self, what: str, hint: Optional[str] = None) -> UsageError:
        """A UsageError about this data (exit 2), naming it."""
        return UsageError(f"data {self.path}: {what}", hint=hint)

    def only(self, allowed: tuple[str, ...], kind: str) -> None:
        """Refuse an option this kind of source does not read."""
        source_only = ("split", "layout", "labels", "image", "label")
        for name in self.options:
            if name in source_only and name not in allowed:
                raise self.fail(f"option {name}= does not apply to {kind}",
                                hint=f"{kind} takes: {', '.join(a for a in allowed) or 'none of split, layout, labels, image, label'}")


def _size(name: str, value: str) -> tuple[int, int]:
    parts = value.lower().split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) not in (1, 2) or min(dims) < 1 or max(dims) > 65535:
        raise UsageError(f"data option {name}={value}: expected {OPTIONS[name]}, e.g. {name}=32 or {name}=32x48")
    return (dims[0], dims[0]) if len(dims) == 1 else (dims[0], dims[1])


def _numbers(name: str, value: str, positive: bool) -> tuple[float, ...]:
    try:
        nums = tuple(float(p) for p in value.split(","))
    except ValueError:
        nums = ()
    if len(nums) not in (1, 3) or any(n != n or abs(n) == float("inf") for n in nums) or (positive and min(nums) <= 0):
        raise UsageError(f"data option {name}={value}: expected {OPTIONS[name]}")
    return nums


def parse_ref(text: str) -> DataRef:
    """The :class:`DataRef` of ``PATH[?name=value&...]``; a UsageError for an unknown option or
    a bad value (named, with what it takes).

    >>> r = parse_ref("photos?resize=64&crop=56&mean=0")
    >>> r.path.name, r.preprocess.resize, r.preprocess.crop, r.preprocess.mean
    ('photos', ('short', 64), (56, 56), (0.0,))
    """
    path_text, _, query = text.partition("?")
    if not path_text.strip():  # '?resize=64' alone would read the current folder
        raise UsageError(f"data '{text[:120]}' names no path before its options", hint="write PATH?option=value, e.g. photos?resize=64")
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if name not in OPTIONS:
            near = did_you_mean(name, OPTIONS)
            raise UsageError(f"data '{text[:120]}': unknown data option '{name[:40]}' (known: {', '.join(OPTIONS)})",
                             hint=f"did you mean '{near}'?" if near else None)
        if not eq or not value.strip():
            raise UsageError(f"data option {name} in '{text[:120]}' has no value: write {name}=VALUE ({OPTIONS[name]})")
        options[name] = value.strip()
    resize = None
    if "resize" in options:
        v = options["resize"]
        h, w = _size("resize", v)
        resize = ("short", h) if "x" not in v.lower() else ("exact", h, w)
    crop = _size("crop", options["crop"]) if "crop" in options else None
    mean = _numbers("mean", options["mean"], False) if "mean" in options else DEFAULT_MEAN
    std = _numbers("std", options["std"], True) if "std" in options else DEFAULT_STD
    channels = None
    if "channels" in options:
        if options["channels"] not in ("1", "3"):
            raise UsageError(f"data option channels={options['channels']}: expected 1 or 3")
        channels = int(options["channels"])
    for name, vals in (("mean", mean), ("std", std)):
        if len(vals) == 3 and channels == 1:
            raise UsageError(f"data option {name} has 3 values but channels=1", hint=f"give one {name} value")
    split = DEFAULT_SPLIT
    if "split" in options:
        try:
            split = float(options["split"])
        except ValueError:
            split = -1.0
        if not 0.0 < split < 1.0:
            raise UsageError(f"data option split={options['split']}: expected {OPTIONS['split']}, e.g. split=0.2")
    if "layout" in options and options["layout"].lower() not in ("nhw", "nhwc", "nchw"):
        raise UsageError(f"data option layout={options['layout']}: expected {OPTIONS['layout']}")
    if "labels" in options and options["labels"].lower() not in ("fine", "coarse"):
        raise UsageError(f"data option labels={options['labels']}: expected {OPTIONS['labels']}")
    prep = Preprocess(resize=resize, crop=crop, mean=mean, std=std, channels=channels)
    return DataRef(text, Path(path_text).expanduser(), options, prep, split)


def with_options(text: str, options: dict[str, Optional[str]]) -> str:
    """``text`` with ``options`` added (those that are not None replace any of the same name),
    in a fixed order: the reference the run reports.

    >>> with_options("photos?crop=28", {"resize": "32", "mean": None})
    'photos?crop=28&resize=32'
    """
    path_text, _, query = text.partition("?")
    merged: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        merged[name.strip().lower()] = value.strip()
    merged.update({k: str(v) for k, v in options.items() if v is not None})
    order = list(OPTIONS)
    items = sorted(merged.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    return path_text + ("?" + "&".join(f"{k}={v}" for k, v in items) if items else "")
