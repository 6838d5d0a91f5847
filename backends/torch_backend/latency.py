"""Forward latency on torch: which artifact and which input are the core's
(:func:`lwdsl.backend.engines.latency_ms`: an int8 model's ONNX file, a language model's W8A8
too; else the model as it runs on token ids or seeded images); torch's part is timing a forward
in eval mode under ``torch.inference_mode()`` with ``threads`` threads (the caller's restored),
by the core's protocol (:mod:`lwdsl.backend.timing`; docs/semantics.md: "Measurements")."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lwdsl.backend import engines
from lwdsl.backend.timing import Protocol, median_ms

from .handle import TorchModel
from .hf import takes_tokens
from .int8_engine import ONNX

__all__ = ["latency_ms"]


def latency_ms(handle: TorchModel, batch: int, input_shape: tuple[int, ...], threads: int, **protocol: Any) -> float:
    """Median milliseconds of one forward pass of ``batch`` inputs of ``input_shape``
    (``protocol``: :class:`~lwdsl.backend.timing.Protocol`'s fields, its defaults otherwise)."""
    how = Protocol(**protocol)
    model = handle.module
    vocab = (model.config.vocab_size if hasattr(model, "config") else handle.num_classes) if takes_tokens(model) else None

    def forward(x: np.ndarray) -> float:
        t, was_training, before = torch.from_numpy(x), model.training, torch.get_num_threads()
        torch.set_num_threads(max(1, int(threads)))
        model.eval()
        try:
            with torch.inference_mode():
                return median_ms(lambda: model(t), how)
        finally:
            torch.set_num_threads(before)
            model.train(was_training)

    return engines.latency_ms(handle, batch, input_shape, threads, vocab=vocab, engine=ONNX, forward=forward, protocol=how)
