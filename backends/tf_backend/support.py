"""What the tensorflow backend runs, as data: importable without TensorFlow."""

from lwdsl.backend import SupportTable

SUPPORT = SupportTable(
    backend="tensorflow",
    runs={
        "prune": "all forms",
        "regularize": "yes",
        "finetune": "yes",
    },
    exports=("keras", "saved_model", "tflite"),
)
