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
        + tuple(f"{d}/{m}" for d in ("int4", "int2", "ternary", "binary", "cluster") for m in ("weights_only", "qat"))
        + ("fp16", "bf16", "auto"),
        "distill": DistillSpec.FORMS,
    },
    notes={
        "quantize": "codes from the core; int8 CPU kernels through ONNX Runtime, and PyTorch's x86 int8 kernels on "
        "a VNNI/AMX CPU; int4/int2/ternary/binary/cluster weights packed in the .lwz, float kernels (the gain is size, not speed); fp16/bf16 weights stored in 16 bits (.lwz, model.pt)",
        "export": "onnx: int8 QDQ after int8 quantize, float16/bfloat16 initializers after fp16/bf16; torch: state dict "
        "(cast layers in half; quantized layers as float32 weights holding codes * scale, said with a warning)",
    },
)
