"""The deployable file of a quantized model, measured in its own runtime: written once.

A backend gives an :class:`Engine`: its deployable file format and the runtime that runs it
(torch: the ONNX file in ONNX Runtime; tensorflow: the ``.tflite`` file in LiteRT). This module
decides everything a report says of such a file, the same way on every backend:

- :func:`int8_artifact`, after ``quantize int8`` (every form whose layers are all int8): the
  step writes the int8 file into the run folder (``model-int8-step<N>.<format>``: the bytes
  ``export`` writes for the same model) and notes ``int8_artifact``: the file's name, what the
  runtime runs (ops, int8 and float counts, each weighted layer it runs in float and why), how
  many of its int8 weights equal lwdsl's codes, top-1 accuracy on the test set, latency at batch
  1 and 32, and the same model as a float32 file *in the same runtime* at the same batches, so a
  reader sees what int8 itself bought (``int8_speedup_b1``/``_b32``) apart from what the runtime
  gives over PyTorch eager or Keras; for a language model (``task`` lm, an engine with
  ``tokens``) next-token accuracy and ``perplexity`` on the test sequences instead of top-1, and
  token ids (:func:`~lwdsl.backend.timing.fixed_tokens`) as the timing input;
- :func:`describe`, the same measurement of any file an ``export`` writes (float, half or int8);
- :func:`file_latency_ms`, the latency a run prints for an int8 model: that of its int8 file in
  the runtime, never of an in-memory model no file holds;
- :func:`export_file`, an ``export`` of an engine's file; :func:`fingerprint` and
  :func:`last_built`, the one cache rule of every engine's files.

Every latency here is measured with the one protocol (:mod:`lwdsl.backend.timing`), on one
thread, on :func:`~lwdsl.backend.timing.fixed_input`; accuracy is on the step's test images.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np

from ..errors import LwdslError
from ..semantics.codes import agreement, int8_only
from .weights import atomic_path
from .context import StepContext
from .timing import PROTOCOL, Protocol, median_ms, timing_input

__all__ = ["Engine", "EngineFile", "Inventory", "Bind", "int8_artifact", "describe", "file_latency_ms", "latency_ms", "codes_agreement",
           "accuracy", "lm_quality", "latencies", "describe_export", "codes_warning", "export_file", "fingerprint",
           "last_built", "FILE_NAME", "BATCHES", "NOT_QUANTIZED"]

#: A runtime session of a file: ``bind(x)`` feeds the NCHW float32 batch ``x`` once and returns
#: a call that runs the file on it and returns its outputs (timed as it is).
Bind = Callable[[np.ndarray], Callable[[], np.ndarray]]

#: The int8 file a ``quantize`` step writes into the run folder (``step``: 1-based).
FILE_NAME = "model-int8-step{step}.{format}"

#: The batch sizes every file is timed at.
BATCHES = (1, 32)

#: Images per call while measuring accuracy.
EVAL_BATCH = 500

#: Why a weighted layer no ``quantize`` step selected runs in float, on every backend.
NOT_QUANTIZED = "not quantized: no quantize step selected it"


def fingerprint(tensors: Iterable[tuple[Any, Any]], qstate: Any) -> str:
    """What a model's files depend on: each (name, array) of its weights and its quantization
    record (:meth:`~lwdsl.backend.handle.QuantState.digest`: the calibration images too);
    hashing is far cheaper than converting again."""
    h = hashlib.sha1()
    for name, array in tensors:
        h.update(str(name).encode())
        h.update(np.ascontiguousarray(array).tobytes())
    h.update(qstate.digest().encode())
    return h.hexdigest()


def last_built(cache: dict, key: str, make: Callable[[], Any]) -> Any:
    """``cache[key]``, else ``make()`` kept there in place of the last file (or model) an engine built:
    a run asks for it several times per step (the quantize report, the latency at two batch sizes, export)."""
    if key not in cache:
        cache.clear()
        cache[key] = make()
    return cache[key]


@dataclass(frozen=True)
class EngineFile:
    """A file an engine built: its bytes, the int8 codes it holds (quantized layer -> codes in
    the canonical layout, for the layers the file stores as int8) and each weighted layer the
    runtime runs in float, with why."""

    data: bytes
    codes: Mapping[str, np.ndarray] = field(default_factory=dict)
    runs_float: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Inventory:
    """What the runtime runs of a file: ``ops`` ("op (dtypes)" -> count), how many weighted ops
    compute in int8 and how many in float."""

    ops: dict[str, int]
    int8_ops: int
    float_ops: int


class Engine(ABC):
    """A backend's deployable file and its runtime (torch: ONNX / ONNX Runtime; tensorflow:
    TFLite / LiteRT).

    The core asks :meth:`build` for the file of the model as it is now (the bytes
    ``export`` writes; a backend keeps the last one built while the model is unchanged, since a
    run asks for it at each batch size), :meth:`float_file` for the same model in float32 in the
    same runtime, :meth:`load` for a session and :meth:`inventory` for what the runtime runs;
    it decides everything else (what is written, measured, compared and noted)."""

    #: the export format and the file's suffix ("onnx", "tflite")
    format: str = ""
    #: the runtime that runs it ("onnxruntime", "litert")
    runtime: str = ""

    @abstractmethod
    def build(self, handle: Any) -> EngineFile:
        """The file of ``handle``'s model as it is (int8 where it is quantized), with its codes
        and float layers.

        Raises:
            LwdslError: the model has no such file (the runtime cannot hold a form it has).
        """

    @abstractmethod
    def float_file(self, handle: Any) -> bytes:
        """The same model (its weights as they are, ``codes * scale`` for quantized layers) as a
        float32 file of the same format: the runtime's own fp32."""

    @abstractmethod
    def load(self, data: bytes, threads: int = 1) -> Bind:
        """A session of ``data`` with ``threads`` threads (see :data:`Bind`)."""

    @abstractmethod
    def inventory(self, data: bytes, handle: Any) -> Inventory:
        """The ops the runtime runs of ``data`` (after its own graph optimizations)."""

    #: what the backend's converter is known to do to codes, said when a file's codes differ
    codes_note: str = ""

    #: whether the engine writes a model of token ids (a language model) too
    tokens: bool = False


def accuracy(bind: Bind, x: np.ndarray, y: np.ndarray, progress: Optional[Callable[[int, str], Any]] = None,
             what: str = "evaluate") -> Optional[float]:
    """Top-1 accuracy of a session on NCHW ``x`` with labels ``y`` (None without images)."""
    if not len(x):
        return None
    from ..data.stream import chunks, eval_batch

    batch = eval_batch(tuple(x.shape[1:]), EVAL_BATCH)
    bar = progress(-(-len(x) // batch), what) if progress else None
    correct = 0
    try:
        for start, xb in chunks(x, batch):  # decoded batch by batch when the images come from files
            logits = np.asarray(bind(np.ascontiguousarray(xb, dtype=np.float32))())
            correct += int(np.count_nonzero(np.argmax(logits, axis=1) == y[start : start + len(xb)]))
            if bar:
                bar.update(1)
    finally:
        if bar:
            bar.close()
    return correct / len(x)


def lm_quality(bind: Bind, x: np.ndarray, y: np.ndarray, vocab: int,
               progress: Optional[Callable[[int, str], Any]] = None, what: str = "evaluate") -> tuple[float, float]:
    """(next-token accuracy, perplexity) of a session of a language model on token sequences
    ``x`` with targets ``y`` (``[N, L]``): over every target token, perplexity = ``exp`` of the
    mean cross-entropy (natural log; log-softmax of the float32 logits in float64)."""
    from ..data.stream import chunks, eval_batch_tokens

    batch = eval_batch_tokens(tuple(x.shape[1:]), vocab)
    bar = progress(-(-len(x) // batch), what) if progress else None
    correct, nll, count = 0, 0.0, 0
    try:
        for start, xb in chunks(x, batch):
            logits = np.asarray(bind(np.ascontiguousarray(xb))(), dtype=np.float64)
            yb = np.asarray(y[start : start + len(xb)])
            top = logits.max(axis=-1, keepdims=True)
            lse = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
            nll += float((lse - np.take_along_axis(logits, yb[..., None], axis=-1)[..., 0]).sum())
            correct += int(np.count_nonzero(logits.argmax(axis=-1) == yb))
            count += yb.size
            if bar:
                bar.update(1)
    finally:
        if bar:
            bar.close()
    return correct / max(count, 1), float(np.exp(nll / max(count, 1)))


def latencies(bind: Bind, input_shape: tuple[int, ...], prefix: str = "", protocol: Protocol = PROTOCOL,
              vocab: Optional[int] = None) -> dict[str, float]:
    """``{prefix}latency_ms_b1`` and ``_b32``: a session's median ms at each of :data:`BATCHES`
    (on :func:`~lwdsl.backend.timing.timing_input`: token ids over ``vocab`` for a model of them)."""
    return {f"{prefix}latency_ms_b{b}": round(median_ms(bind(timing_input(b, input_shape, vocab)), protocol), 4) for b in BATCHES}


def codes_agreement(codes: Mapping[str, np.ndarray], quant: Mapping[str, Any]) -> tuple[int, int, dict[str, list[int]]]:
    """(weights equal, weights compared, layer -> [equal, compared]): the int8 codes a file holds
    against lwdsl's (``quant``: layer -> WeightQuant), over the layers the file holds as int8."""
    equal = total = 0
    per_layer: dict[str, list[int]] = {}
    for layer, q in quant.items():
        got = codes.get(layer)
        if got is None or np.shape(got) != np.shape(q.codes):
            continue
        e, t = agreement(np.asarray(got), q.codes)
        per_layer[layer] = [e, t]
        equal, total = equal + e, total + t
    return equal, total, per_layer


def describe(engine: Engine, built: EngineFile, handle: Any, ctx: StepContext, *, fp32: Optional[bytes] = None) -> dict[str, Any]:
    """What a file is, measured by its own runtime (1 thread): format, runtime, size, the ops the
    runtime runs (int8 and float weighted ops counted), top-1 accuracy on the test set, latency
    at batch 1 and 32. For a quantized model, how many of its int8 weights equal lwdsl's codes
    and the weighted layers it runs in float (``runs_float``: layer -> why; ``float_layers``:
    the same as "layer (why)"); with ``fp32`` (the same model's float32 file), that file's
    latency in the same runtime and int8's own speed-up over it."""
    shape = tuple(ctx.data.input_shape)
    inv = engine.inventory(built.data, handle)
    bind = engine.load(built.data, 1)
    lm = getattr(ctx.data, "task", "classify") == "lm"
    vocab = int(ctx.data.num_classes) if lm else None
    out: dict[str, Any] = {
        "format": engine.format,
        "runtime": engine.runtime,
        "size_bytes": len(built.data),
        "ops": dict(inv.ops),
        "int8_ops": int(inv.int8_ops),
        "float_ops": int(inv.float_ops),
    }
    if lm:  # next-token accuracy and perplexity, as the run measures the model
        acc, ppl = lm_quality(bind, ctx.data.test_x, ctx.data.test_y, vocab, ctx.progress, f"evaluate {engine.runtime}")
        out.update(accuracy=acc, perplexity=round(ppl, 4))
    else:
        out["accuracy"] = accuracy(bind, ctx.data.test_x, ctx.data.test_y, ctx.progress, f"evaluate {engine.runtime}")
    out.update(latencies(bind, shape, vocab=vocab))
    quant = getattr(handle, "quant", None) or {}
    if quant:
        out["codes_equal"], out["codes_total"], _ = codes_agreement(built.codes, quant)
        out["runs_float"] = dict(built.runs_float)
        out["float_layers"] = [f"{layer} ({why})" for layer, why in built.runs_float.items()]
    if fp32 is not None:
        out.update(latencies(engine.load(fp32, 1), shape, prefix="fp32_", vocab=vocab))
        for b in BATCHES:
            out[f"int8_speedup_b{b}"] = round(out[f"fp32_latency_ms_b{b}"] / max(out[f"latency_ms_b{b}"], 1e-9), 3)
    return out


def codes_warning(where: str, engine: Engine, built: EngineFile, quant: Mapping[str, Any]) -> Optional[str]:
    """What is said when a file's int8 weights differ from lwdsl's codes (None when all equal)."""
    equal, total, per_layer = codes_agreement(built.codes, quant)
    if equal == total:
        return None
    off = [layer for layer, (e, t) in per_layer.items() if e != t]
    return (f"{where}: {total - equal:,} of {total:,} int8 weights in the {engine.format} file differ from lwdsl's codes "
            f"(layers {', '.join(off)})" + (f": {engine.codes_note}" if engine.codes_note else ""))


def describe_export(engine: Engine, built: EngineFile, handle: Any, ctx: StepContext) -> dict[str, Any]:
    """The ``artifacts`` entry of an ``export`` step's file: :func:`describe`, with the runtime's
    fp32 beside an int8 file, and a warning when its int8 weights differ from lwdsl's codes."""
    quant = getattr(handle, "quant", None) or {}
    said = codes_warning(f"export {engine.format}", engine, built, quant) if quant else None
    if said:
        ctx.warn(said)
    fp32 = engine.float_file(handle) if quant and int8_only(quant) else None
    return describe(engine, built, handle, ctx, fp32=fp32)


def export_file(engine: Engine, built: EngineFile, path: Path, handle: Any, ctx: StepContext) -> dict[str, Any]:
    """What an ``export`` of an engine's file does on every backend: ``built`` written to ``path``
    atomically, then :func:`describe_export` of the file on disk (read back, as a user loads it)."""
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_bytes(built.data)
    return describe_export(engine, EngineFile(Path(path).read_bytes(), built.codes, built.runs_float), handle, ctx)


def int8_artifact(engine: Engine, handle: Any, ctx: StepContext, where: str) -> Optional[dict[str, Any]]:
    """The ``int8_artifact`` note of a quantize step (``where``: the step's label in warnings):
    the int8 file written into the run folder (:data:`FILE_NAME`; ``file`` is None when the run
    has no folder) and :func:`describe` of it, with the runtime's fp32 beside it. None when the
    model's quantized layers are not all int8 (low-bit layers: no runtime has their kernels).
    A model the engine cannot write (its runtime has no form for it) is said in a warning."""
    quant = getattr(handle, "quant", None) or {}
    if not quant or not int8_only(quant):
        return None
    try:
        built = engine.build(handle)
    except LwdslError as exc:
        ctx.warn(f"{where}: no int8 {engine.format} file: {exc.message}")
        return None
    name = None
    if ctx.run_dir is not None:
        name = FILE_NAME.format(step=ctx.index + 1, format=engine.format)
        with atomic_path(Path(ctx.run_dir) / name) as tmp:
            Path(tmp).write_bytes(built.data)
    said = codes_warning(where, engine, built, quant)
    if said:
        ctx.warn(said)
    return {"file": name, **describe(engine, built, handle, ctx, fp32=engine.float_file(handle))}


def file_latency_ms(engine: Engine, handle: Any, batch: int, input_shape: tuple[int, ...], threads: int,
                    protocol: Protocol = PROTOCOL, vocab: Optional[int] = None) -> float:
    """Median ms of the model's int8 file (the one a quantize step writes and ``export`` writes)
    in its runtime at ``batch``, with ``threads`` threads (on token ids over ``vocab`` for a
    language model)."""
    bind = engine.load(engine.build(handle).data, threads)
    return median_ms(bind(timing_input(batch, input_shape, vocab)), protocol)


def latency_ms(handle: Any, batch: int, input_shape: tuple[int, ...], threads: int, *, vocab: Optional[int],
               engine: Engine, forward: Callable[[np.ndarray], float], protocol: Protocol = PROTOCOL) -> float:
    """A model's latency, the one rule of every backend: an int8 model is timed as its deployable
    int8 file in its runtime (:func:`file_latency_ms`; a language model (``vocab``: it takes
    token ids over it) only where the engine writes models of token ids and its inputs were
    calibrated: W8A8); anything else as it runs, ``forward`` timing it on :func:`timing_input`
    with ``threads`` threads (low-bit, cluster, an int8-weights-only language model: float
    kernels, no file of their own)."""
    if int8_only(handle.quant) and (vocab is None or (engine.tokens and bool(handle.act))):
        return file_latency_ms(engine, handle, batch, input_shape, threads, protocol, vocab=vocab)
    return forward(timing_input(batch, input_shape, vocab))
