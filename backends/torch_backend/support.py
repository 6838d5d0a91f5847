"""What the torch backend runs, as data: importable without torch (``lwdsl check``, ``ops``)."""

from lwdsl.backend import SupportTable

SUPPORT = SupportTable(
    backend="torch",
    runs={
        "prune": "all forms",
        "regularize": "yes",
        "finetune": "yes",
    },
    exports=("torch",),
)
