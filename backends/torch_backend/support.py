"""What the torch backend runs, per op and form, as data: importable without torch
(``lwdsl check --backend``, ``lwdsl ops``)."""

from lwdsl.backend.support import SupportTable
from lwdsl.specs import DistillSpec, PruneSpec

SUPPORT = SupportTable(
    backend="torch",
    runs={
        "prune": PruneSpec.FORMS,
        "regularize": (),
        "finetune": (),
        "export": ("torch", "onnx"),
        "quantize": ("int8/dynamic", "int8/static", "int8/qat", "int8/weights_only"),
        "distill": DistillSpec.FORMS,
    },
    notes={"quantize": "int8 codes from the core; int8 CPU kernels through ONNX Runtime"},
)
