"""What the tensorflow backend runs, per op and form, as data: importable without TensorFlow."""

from lwdsl.backend.support import SupportTable
from lwdsl.specs import DistillSpec, PruneSpec

SUPPORT = SupportTable(
    backend="tensorflow",
    runs={
        "prune": PruneSpec.FORMS,
        "regularize": (),
        "finetune": (),
        "quantize": ("int8/dynamic", "int8/static", "int8/qat", "int8/weights_only"),
        "export": ("keras", "saved_model", "tflite"),
        "distill": DistillSpec.FORMS,
    },
    notes={"quantize": "codes from lwdsl.semantics.quant; TFLite int8 via the TF converter, checked in LiteRT"},
)
