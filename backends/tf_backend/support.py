"""What the tensorflow backend runs, per op and form, as data: importable without TensorFlow."""

from lwdsl.backend.support import SupportTable
from lwdsl.specs import DistillSpec, PruneSpec

SUPPORT = SupportTable(
    backend="tensorflow",
    runs={
        "prune": PruneSpec.FORMS,
        "regularize": (),
        "finetune": (),
        "quantize": ("int8/dynamic", "int8/static", "int8/qat", "int8/weights_only")
        + tuple(f"{d}/{m}" for d in ("int4", "int2", "ternary", "binary", "cluster") for m in ("weights_only", "qat"))
        + ("fp16", "bf16", "auto"),
        "export": ("keras", "saved_model", "tflite"),
        "distill": DistillSpec.FORMS,
    },
    notes={
        "quantize": "codes from lwdsl.semantics.quant; TFLite int8 via the TF converter, checked in LiteRT; "
        "int4/int2/ternary/binary/cluster weights packed in the .lwz, float kernels (the gain is size, not speed); fp16/bf16 weights stored in 16 bits (.lwz)",
        "export": "tflite: float32, int8 (full integer or dynamic range) after int8 quantize, float16 after fp16 alone; "
        "keras/saved_model: float32 kernels (quantized and cast layers' values in float32, said with a warning)",
    },
)
