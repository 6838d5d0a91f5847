"""Every limit lwdsl puts on the size of what it reads, in one place.

Each input is refused, with a one-line error naming it, as soon as it is known to pass its
limit: before it is read in full and before any model work. The limits are far above anything
a real recipe, checkpoint or data set needs, and low enough that a damaged or hostile input
cannot exhaust memory, recurse too deeply or keep a command busy for minutes.
"""

from __future__ import annotations

__all__ = [
    "MAX_RECIPE_BYTES",
    "MAX_RECIPE_TOKENS",
    "MAX_NESTING",
    "MAX_USE_DEPTH",
    "MAX_VALUE_ITEMS",
    "MAX_IDX_BYTES",
    "MAX_TEXT_BYTES",
    "MAX_WEIGHTS_BYTES",
    "MAX_SYNTHETIC_BYTES",
    "MAX_SYNTHETIC_CLASSES",
    "MAX_IMAGE_PIXELS",
    "MAX_DATA_FILES",
    "MAX_SEED",
    "MAX_THREADS",
    "MAX_WORKERS",
    "MAX_RESTARTS",
    "MAX_RDZV_TIMEOUT_S",
    "MAX_EPOCHS",
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "size_words",
]

#: Bytes of one recipe, and of a recipe with every file it uses (``use``) together.
MAX_RECIPE_BYTES = 1 << 20
#: Words, numbers, strings and signs of one recipe file (comments and blank lines not counted):
#: checking stays linear and bounded (a recipe at this limit, 10,000 steps, is checked in about
#: 2 s on a loaded 2-core machine: bench/check_bench.py); real recipes have hundreds.
MAX_RECIPE_TOKENS = 50_000
#: Lists inside lists in one value, as written or as built from variables.
MAX_NESTING = 16
#: Files using files using files (``use``), counting the top recipe.
MAX_USE_DEPTH = 16
#: Scalars in one variable's value, counting a variable used twice twice.
MAX_VALUE_ITEMS = 10_000
#: Bytes of one idx data file once decompressed (MNIST's largest is 47 MB).
MAX_IDX_BYTES = 1 << 31
#: Bytes of a user's text data (one file or a folder's files together): the text, its tokens and
#: windows are held in memory (about 20 bytes a character at the peak).
MAX_TEXT_BYTES = 1 << 28
#: Pixels of one image file (Pillow's own limit for a decompression bomb is 179 million).
MAX_IMAGE_PIXELS = 1 << 27
#: Image files of one data folder (ImageNet's training set has 1.28 million).
MAX_DATA_FILES = 20_000_000
#: Bytes of all the tensors of one ``.lwz`` file once decompressed (4 billion float32 weights).
MAX_WEIGHTS_BYTES = 1 << 34
#: Bytes of float32 a ``synthetic:C,H,W:K`` data set may take (its images and its labelling).
MAX_SYNTHETIC_BYTES = 1 << 31
#: Classes of a ``synthetic:`` data set.
MAX_SYNTHETIC_CLASSES = 10_000
#: ``--seed`` (numpy and the frameworks take unsigned 32-bit seeds).
MAX_SEED = 2**32 - 1
#: ``--threads`` (far more than any machine's cores; 100,000 made the framework crash).
MAX_THREADS = 256
#: ``lwdsl run --workers`` (processes on one machine; more machines: torchrun starts them).
MAX_WORKERS = 256
#: ``lwdsl run --max-restarts`` (each restart resumes from the last point).
MAX_RESTARTS = 100
#: ``lwdsl run --rdzv-timeout`` seconds (one day).
MAX_RDZV_TIMEOUT_S = 86_400
#: ``--epochs``, ``--baseline-epochs``.
MAX_EPOCHS = 10_000
#: Bytes of one file name (the limit of common file systems).
MAX_NAME_BYTES = 255
#: Bytes of a path written in a recipe (``export ... PATH``).
MAX_PATH_BYTES = 1024


def size_words(n: int) -> str:
    """``n`` bytes in words: ``1 MiB``, ``888 PiB``, ``512 bytes``."""
    for unit, shift in (("EiB", 60), ("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"
    return f"{n} byte{'s' if n != 1 else ''}"
