"""Forward latency on torch: eval mode, ``torch.inference_mode()``, ``threads`` threads (the
caller's restored), a fixed input (token ids for a transformer), timed by the core's protocol
(:mod:`lwdsl.backend.timing`); after an int8 ``quantize`` the int8 ONNX file is timed instead,
a language model's W8A8 too, on token ids (docs/semantics.md: "Measurements", "Quantization:
batch-norm folding, artifacts, latency")."""

from __future__ import annotations

import torch

from lwdsl.backend.engines import file_latency_ms
from lwdsl.backend.timing import Protocol, fixed_input, fixed_tokens, median_ms
from lwdsl.semantics.codes import int8_only

from .handle import TorchModel
from .hf import takes_tokens

__all__ = ["latency_ms"]


def latency_ms(
    handle: TorchModel,
    batch: int,
    input_shape: tuple[int, ...],
    threads: int,
    *,
    warmup: int = 3,
    min_runs: int = 10,
    max_runs: int = 200,
    budget_s: float = 1.0,
) -> float:
    """Median milliseconds of one forward pass of ``batch`` inputs of ``input_shape``: the int8
    ONNX file of an int8 model (int8_engine.py; a language model's W8A8 too); low-bit, cluster
    and a language model with int8 weights only (no file with kernels of their own) as they run,
    on float kernels."""
    protocol = Protocol(warmup, min_runs, max_runs, budget_s)
    vocab = (handle.num_classes if not hasattr(handle.module, "config") else handle.module.config.vocab_size) \
        if takes_tokens(handle.module) else None
    if int8_only(handle.quant) and (vocab is None or handle.act):  # a language model's W8A8: its int8 ONNX file
        from .int8_engine import ONNX

        return file_latency_ms(ONNX, handle, batch, input_shape, threads, protocol, vocab=vocab)
    x = torch.from_numpy(fixed_tokens(batch, input_shape, vocab) if vocab is not None else fixed_input(batch, input_shape))
    model = handle.module
    was_training = model.training
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    model.eval()
    try:
        with torch.inference_mode():
            return median_ms(lambda: model(x), protocol)
    finally:
        torch.set_num_threads(before)
        model.train(was_training)
