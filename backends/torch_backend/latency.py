"""Forward latency: the median of repeated timed runs after warm-up.

The input is a fixed pseudo-random batch (token ids for a transformer that takes them); the model runs in eval mode under
``torch.inference_mode()`` with ``torch.set_num_threads(threads)`` (the caller's thread count is
restored afterwards); after ``quantize`` the int8 ONNX file (the one the step writes) is timed
instead, in ONNX Runtime with ``threads`` intra-op threads
(:func:`lwdsl.backend.engines.file_latency_ms`; a language model's on token ids). Timed by the core's protocol
(:mod:`lwdsl.backend.timing`).
"""

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
    """Median milliseconds of one forward pass of ``batch`` inputs of ``input_shape``; an int8
    model is timed as its int8 ONNX file (int8_engine.py); a model with low-bit or cluster
    layers has no artifact with kernels of its own (no CPU int4/int2 kernels; ``export onnx``
    refuses it), so it is timed as it runs, in torch on float kernels, like the fp32 model; so is a
    language model with int8 weights only (``method=gptq``: no int8 file is written for it)."""
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
