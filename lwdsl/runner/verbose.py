"""What ``--verbose`` adds to a run's lines (stderr, beside the usual ones): the model and where
it came from, the data and where it was read from, each step's arguments as resolved (every
default written out) and the layers it matched, and how long each phase took.

A run without ``--verbose`` says none of this; ``--quiet`` says nothing but the final line
and errors. The lines are plain text, one fact a line, meant for logs:

    model: lenet300 (torch backend, cpu), 74,004 parameters in 3 layers, built in 0.05 s
    data: synthetic:1,12,12:4: 2,048 train and 512 test images of 1x12x12, 4 classes, sha256 d90e3193e066; read in 0.01 s
    step 1/2 `prune l1 0.5`: prune method=l1 amount=0.5 scope=layer ...; on 3 layers: fc1, fc2, fc3
    step 1/2 `prune l1 0.5`: applied in 0.01 s, measured in 0.12 s
    time: 4.5 s in all: prepare 0.1 s, baseline 3.2 s, steps 0.9 s, measuring 0.3 s, write 0.1 s
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

__all__ = ["Phases", "model_line", "data_line", "step_args_line", "quiet_say"]


def quiet_say(*_args: Any) -> None:
    """Says nothing: the ``say`` of what is not shown."""


def _count(n: int, word: str, plural: str = "") -> str:
    return f"{n:,} {word if n == 1 else plural or word + 's'}"


def model_line(shown: str, backend: Any, stats: Any, checkpoint: Any, seconds: float) -> str:
    """The model, its size, where it runs and where its weights come from."""
    source = f"; weights from {checkpoint}" if checkpoint is not None else ""
    return (f"model: {shown} ({backend.name} backend, {backend.device}), {_count(stats.params, 'parameter')} in "
            f"{_count(len(stats.layers), 'layer')}, built in {seconds:.2f} s{source}")


def data_line(data: Any, seconds: Optional[float]) -> str:
    """The data set: where it was read from, its sizes, classes, digest and preprocessing."""
    d = data.describe()
    where = ", ".join(str(d[k]) for k in ("source", "path") if d.get(k))
    prep = d.get("preprocess")
    if "vocabulary" in d:  # token sequences (a language model's data)
        sizes = (f"{d['train_sequences']:,} train and {d['test_sequences']:,} test sequences of "
                 f"{_count(int(data.input_shape[0]), 'token')}, a vocabulary of {d['vocabulary']:,}")
    elif "train_sequences" in d:  # labelled token sequences (lwdsl.data.pycode)
        sizes = (f"{d['train_sequences']:,} train and {d['test_sequences']:,} test sequences of "
                 f"{_count(int(data.input_shape[0]), 'token')}, {_count(len(d['classes']), 'class', 'classes')}")
    else:
        shape = "x".join(str(n) for n in d["image_shape"])
        sizes = (f"{d['train_images']:,} train and {d['test_images']:,} test images of {shape}, "
                 f"{_count(len(d['classes']), 'class', 'classes')}")
    parts = [f"data: {d['name']}" + (f" ({where})" if where else ""), sizes]
    if data.sha256:
        parts.append(f"sha256 {data.sha256[:12]}")
    if prep:
        parts.append("preprocessed " + " ".join(f"{k}={v}" for k, v in prep.items()))
    line = ": ".join(parts[:2]) + "".join(f", {p}" for p in parts[2:])
    return line + (f"; read in {seconds:.2f} s" if seconds is not None else "")


def step_args_line(label: str, step: Any, names: list[str]) -> str:
    """A step's arguments as resolved: every option that matters for it (as ``lwdsl explain``
    shows them), defaults included, and the layers it matched."""
    from ..language.fields import applies, options
    from ..language.formatter import value_to_text

    spec = type(step)
    order = list(spec.positional) + [n for n in options(spec) if n not in spec.positional]
    args = " ".join(f"{name}={value_to_text(getattr(step, name))}" for name in order if applies(step, name))
    shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
    return f"{label}: {step.op} {args}; on {_count(len(names), 'layer')}" + (f": {shown}" if names else "")


class Phases:
    """Seconds spent in each phase of a run, in the order they ran, and the line that sums them."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._start = clock()
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def line(self) -> str:
        parts = ", ".join(f"{name} {s:.2f} s" for name, s in self.seconds.items())
        return f"time: {self._clock() - self._start:.2f} s in all" + (f": {parts}" if parts else "")
