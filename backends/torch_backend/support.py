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
        "quantize": ("int8/dynamic", "int8/static", "int8/qat", "int8/weights_only")
        + tuple(f"{d}/{m}" for d in ("int4", "int2", "ternary", "binary") for m in ("weights_only", "qat"))
        + ("fp16", "bf16", "auto"),
        "distill": DistillSpec.FORMS,
    },
    notes={
        "quantize": "codes from the core; int8 CPU kernels through ONNX Runtime; int4/int2/ternary/binary "
        "weights packed in the .lwz, float kernels (the gain is size, not speed)"
    },
)
