"""The lock file a run writes: enough to reproduce it and to notice when anything changed."""

from __future__ import annotations

import hashlib
import platform
import sys
from pathlib import Path
from typing import Any, Optional

from ..language.plan import Recipe

__all__ = ["lock_data", "file_sha256"]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def lock_data(
    recipe: Recipe,
    *,
    backend: str,
    framework_versions: dict[str, str],
    model: str,
    data: str,
    data_sha256: str,
    seed: int,
    checkpoint: Optional[Path],
    baseline: dict[str, Any],
    other_data: Optional[dict[str, str]] = None,
    threads: Optional[dict[str, Any]] = None,
    model_sha256: Optional[str] = None,
    device: Optional[dict[str, str]] = None,
    world: Optional[dict[str, Any]] = None,
    tokenizer_sha256: Optional[str] = None,
) -> dict[str, Any]:
    """The lock file's content: recipe hash, resolved plan, seed, data hash (with, for text, the
    sha256 of the tokenizer file: ``tokenizer_sha256``; and those of the other data sets steps
    read, e.g. a distillation transfer set), versions; on several ranks the world size and
    ``world`` (:func:`lwdsl.runner.ranks.world_record`)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        lwdsl_version = version("lwdsl")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        lwdsl_version = "unknown"
    import numpy
    import pydantic

    text = recipe.source or recipe.to_text()
    tokens = {"tokenizer_sha256": tokenizer_sha256} if tokenizer_sha256 else {}  # text data: the tokenizer file used
    return {
        "lock_version": 1,
        "recipe_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "plan": recipe.model_dump(mode="json", by_alias=True),
        "seed": seed,
        "backend": backend,
        "model": model,
        "model_sha256": model_sha256,  # the file of --model file.py:NAME
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": file_sha256(checkpoint) if checkpoint else None,
        "baseline": baseline,
        "data": data,
        "data_sha256": data_sha256,
        **tokens,
        "other_data_sha256": dict(sorted((other_data or {}).items())),
        "versions": {
            "lwdsl": lwdsl_version,
            "python": sys.version.split()[0],
            "numpy": numpy.__version__,
            "pydantic": pydantic.__version__,
            **framework_versions,
        },
        "platform": platform.platform(),
        "threads": dict(threads or {}),
        "device": dict(device or {}),
        "world_size": int((world or {}).get("size", 1)),
        # several ranks: launcher, collectives, the shard rule, each rank's host and device
        **({"world": dict(world)} if world else {}),
    }
