"""``TorchBackend``: the :class:`lwdsl.backend.Backend` protocol on PyTorch, delegating to the
modules of this package (one concept each)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from lwdsl.backend import Backend, LayerInfo, ModelStats, StepContext
from lwdsl.backend.hf_folder import warn_untied
from lwdsl.backend.load import load_checkpoint
from lwdsl.backend.steps import handler_table
from lwdsl.data.dataset import Dataset
from lwdsl.errors import LwdslError, UsageError
from lwdsl.language.specs import TrainingOptions

from . import io
from .data import adopt_data
from .handle import TorchModel
from .hf import is_hf_folder, read_hf_folder, untie_heads
from .latency import latency_ms
from .layers import canonical_state, list_layers, model_stats, output_positions
from .models import build_model
from .support import SUPPORT
from .train import evaluate, fit

__all__ = ["TorchBackend"]


class TorchBackend(Backend):
    """PyTorch (CPU) implementation of every supported op. The model handle is a
    :class:`~lwdsl.backends.torch_backend.handle.TorchModel`."""

    name = "torch"
    extra = "torch"
    native_suffix = ".pt"
    support = SUPPORT
    handlers = handler_table(__package__, SUPPORT.runs)
    precisions = ("fp32", "bf16", "fp16")
    packages = ("torch", "torchvision")
    load_parts = io.LOAD

    def unsupported(self, step: Any) -> Optional[str]:
        """The support table's answer; and ``export pt2e`` needs torchao (the ``pt2e`` extra),
        refused before anything runs where it does not import."""
        why = super().unsupported(step)
        if why is None and getattr(step, "op", None) == "export" and getattr(step, "format", None) == "pt2e":
            from .pt2e_engine import torchao_missing

            missing = torchao_missing()
            if missing:
                return f"the torch backend cannot export pt2e here: {missing}: pip install 'lwdsl[pt2e]'"
        return why

    def is_model(self, obj: Any) -> bool:
        return isinstance(obj, torch.nn.Module)

    def set_threads(self, threads: int) -> int:
        """torch's intra-op threads (``torch.set_num_threads``), for training and evaluation."""
        torch.set_num_threads(max(1, int(threads)))
        return torch.get_num_threads()

    def get_threads(self) -> int:
        return torch.get_num_threads()

    def join_ranks(self, rank: int, world: int, timeout_s: float, join_s: Optional[float] = None) -> Any:
        """torch.distributed from the launcher's environment: gloo on the CPU, NCCL on CUDA."""
        from .ranks import TorchRanks

        return TorchRanks(rank, world, self.device, timeout_s, join_s)

    def launch(self, workers: int, entry: Any, args: tuple[Any, ...], timeout_s: float, max_restarts: int = 0,
               join_s: Optional[float] = None) -> dict[int, int]:
        """``workers`` processes through torch's elastic agent (what ``torchrun`` runs)."""
        from .ranks import launch

        return launch(workers, entry, args, timeout_s, max_restarts, join_s)

    def set_device(self, device: str) -> dict[str, str]:
        """``auto``: CUDA when torch sees a GPU, else Apple's MPS, else the CPU. Training,
        evaluation and calibration run there (the model moves there for them and back: masks,
        codes, exports and engines work on CPU tensors)."""
        from lwdsl.backend.threads import cpu_model

        mps = getattr(torch.backends, "mps", None)
        has_mps = bool(mps is not None and mps.is_available())
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise UsageError(f"--device {device}: torch sees no CUDA GPU on this machine (torch.cuda.is_available() is False)",
                                 hint="use --device cpu (or auto)")
            index = int(device.partition(":")[2] or torch.cuda.current_device())
            if index >= torch.cuda.device_count():
                raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
            self.device = f"cuda:{index}"
            return {"device": self.device, "model": torch.cuda.get_device_name(index)}
        if device == "mps":
            if not has_mps:
                raise UsageError("--device mps: torch has no MPS device here", hint="use --device cpu (or auto)")
            self.device = "mps"
            return {"device": "mps", "model": "Apple GPU (MPS)"}
        self.device = "cpu"
        return {"device": "cpu", "model": cpu_model()}

    def set_seed(self, seed: int) -> None:
        """Seeds torch's global generator: built-in models initialise from it."""
        torch.manual_seed(seed)

    def adopt_data(self, train: Any, test: Any, name: str = "user") -> Dataset:
        return adopt_data(train, test, name)

    def load_model(
        self, ref: Any, input_shape: tuple[int, ...], num_classes: int, checkpoint: Optional[Path] = None
    ) -> TorchModel:
        """A handle for a built-in name, ``torchvision:NAME`` or a user's ``nn.Module`` (deep
        copied: the caller's model is never modified), with weights from ``checkpoint`` (a
        torch state dict file or ``.lwz``; read only, see io.py)."""
        quant: dict = {}
        keeps: dict = {}
        if isinstance(ref, torch.nn.Module):
            module, name = copy.deepcopy(ref), type(ref).__name__
            warn_untied(f"your {name}", untie_heads(module))  # a head sharing the embeddings' Parameter, as a folder's
        elif not isinstance(ref, (str, Path)):
            raise UsageError(f"the torch backend cannot use a {type(ref).__module__}.{type(ref).__name__} as a model",
                             hint="give an nn.Module, a model name, or --model path/to/file.py:NAME")
        elif is_hf_folder(ref):
            module, quant, keeps = read_hf_folder(Path(ref))
            name = str(ref)
        elif Path(ref).suffix in (".pt", ".pth", ".lwz", ".bin") or "/" in str(ref):
            raise LwdslError(
                f"'{ref}' looks like a file: a torch weights file holds no architecture",
                hint="name the architecture (lenet5, torchvision:resnet18) and give the file as its checkpoint",
            )
        else:
            module, name = build_model(ref, input_shape, num_classes), ref
        handle = TorchModel(module, name, tuple(input_shape), num_classes, device=self.device)
        handle.qstate.weight_only(quant)  # a compressed-tensors folder's codes
        handle.masks.update(keeps)
        if checkpoint is not None:
            load_checkpoint(io.LOAD, handle, Path(checkpoint))
        handle.module.eval()
        return handle

    def wrap_model(self, obj: Any, input_shape: tuple[int, ...], num_classes: int) -> TorchModel:
        if not isinstance(obj, torch.nn.Module):
            raise UsageError(f"attach needs an nn.Module, not a {type(obj).__module__}.{type(obj).__name__}")
        where = {t.device for t in (*obj.parameters(), *obj.buffers())}
        if len(where) > 1:
            raise UsageError(f"attach: the model's parameters are on several devices ({', '.join(sorted(map(str, where)))})",
                             hint="attach a model that lives on one device (model.to(device) before attach)")
        device = next(iter(where), torch.device("cpu"))
        if device.type == "cpu":
            return TorchModel(obj, type(obj).__name__, tuple(input_shape), num_classes)
        # On a GPU: trained and measured there, the way `lwdsl run --device` trains (your steps run
        # inside those passes), on the CPU in between, where masks, codes and exports are read
        # (your loop is waiting then), and back on its device when the session ends (release).
        obj.to("cpu")
        return TorchModel(obj, type(obj).__name__, tuple(input_shape), num_classes, device=str(device), home=str(device))

    def release(self, model: TorchModel) -> None:
        if model.home is not None:
            model.module.to(model.home)

    def user_optimizer(self, optimizer: Any) -> tuple[Any, Any]:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise UsageError(f"attach needs a torch.optim.Optimizer, not a {type(optimizer).__module__}.{type(optimizer).__name__}")

        def set_lr(lr: float) -> None:
            for group in optimizer.param_groups:
                group["lr"] = lr

        return set_lr, optimizer.state.clear

    def native(self, model: TorchModel) -> torch.nn.Module:
        return model.module

    def layers(self, model: TorchModel) -> list[LayerInfo]:
        return list_layers(model)

    def groups(self, model: TorchModel) -> list:
        from .graph import find_groups

        return find_groups(model)

    def fit(self, model: TorchModel, options: TrainingOptions, ctx: StepContext, **kwargs: Any) -> list[float]:
        return fit(model, options, ctx, **kwargs)

    def evaluate(self, model: TorchModel, ctx: StepContext) -> tuple[float, float]:
        return evaluate(model, ctx)

    def stats(self, model: TorchModel) -> ModelStats:
        return model_stats(model)

    def positions(self, model: TorchModel, input_shape: tuple[int, ...]) -> dict[str, int]:
        return output_positions(model, input_shape)

    def latency_ms(self, model: TorchModel, batch: int, input_shape: tuple[int, ...], threads: int) -> float:
        return latency_ms(model, batch, input_shape, threads)

    def state(self, model: TorchModel) -> dict[str, np.ndarray]:
        return canonical_state(model)

    def save_native(self, model: TorchModel, path: Path) -> None:
        io.save_native(model, path)
