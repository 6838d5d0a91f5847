"""Image files: the cheap check every file gets before training, and the decode.

The check reads the header (Pillow opens a file without decoding its pixels: format, size,
mode) and the last bytes: a JPEG must hold its end-of-image marker ``FF D9`` in its last KiB, a
PNG its ``IEND`` chunk in its last 64 bytes, a WebP file the size its RIFF header declares, a
BMP at least the size its header declares. So a truncated or unreadable file is refused, named,
before any training; a file damaged inside its pixel data is found when it is decoded, and
refused then, named, with exit code 2 like the others.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import UsageError
from ..limits import MAX_IMAGE_PIXELS
from .preprocess import Preprocess, pillow

__all__ = ["IMAGE_SUFFIXES", "Header", "check_image", "decode_image", "GREY_MODES"]

#: The file name endings a class folder's images may have (any case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_FORMATS = {"PNG", "JPEG", "BMP", "WEBP", "MPO"}  # MPO: a JPEG with more frames (phones)
#: Modes read as grey (one channel); every other 8-bit mode is colour (three).
GREY_MODES = {"1", "L", "LA", "La"}
_DEEP_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}

Source = Union[Path, bytes]


@dataclass(frozen=True)
class Header:
    """What the header of an image says: width, height, grey or colour."""

    width: int
    height: int
    grey: bool


def _name(src: Source, label: str) -> str:
    return label or (str(src) if isinstance(src, Path) else "an image")


def _bad(label: str, what: str) -> UsageError:
    return UsageError(f"image {label} {what}", hint="replace or delete the file (or fix it: re-save it with an image editor)")


def check_image(src: Source, label: str = "") -> Header:
    """The header of one image file (a path, or its bytes), after the checks above; a
    UsageError naming it when it is unreadable, truncated, too large or 16-bit."""
    label = _name(src, label)
    Image = pillow()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as img:
                fmt, (w, h), mode = img.format, img.size, img.mode
    except (Image.UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bad(label, f"cannot be read as an image ({type(exc).__name__}: {str(exc)[:120]})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise _bad(label, f"cannot be read ({str(exc)[:160] or type(exc).__name__})") from None
    if fmt not in _FORMATS:
        raise _bad(label, f"is a {fmt} image; lwdsl reads PNG, JPEG, BMP and WebP")
    if w * h > MAX_IMAGE_PIXELS:
        raise _bad(label, f"is {w:,}x{h:,} pixels, more than {MAX_IMAGE_PIXELS:,}")
    if mode in _DEEP_MODES:
        raise _bad(label, f"has {mode} pixels (16-bit or float); lwdsl reads 8-bit grey and colour images")
    why = _trailer(src, fmt)
    if why:
        raise _bad(label, why)
    return Header(w, h, mode in GREY_MODES)


def _tail(src: Source, n: int) -> tuple[bytes, int]:
    if isinstance(src, bytes):
        return src[-n:], len(src)
    size = os.path.getsize(src)
    with open(src, "rb") as f:
        f.seek(max(0, size - n))
        return f.read(), size


def _trailer(src: Source, fmt: str) -> str:
    """Why the end of the file says it is truncated ("" when it looks whole)."""
    if fmt in ("JPEG", "MPO"):
        tail, _ = _tail(src, 1024)
        return "" if b"\xff\xd9" in tail else "is truncated (no JPEG end-of-image marker FF D9 in its last KiB)"
    if fmt == "PNG":
        tail, _ = _tail(src, 64)
        return "" if b"IEND" in tail else "is truncated (no PNG IEND chunk at its end)"
    head = _head(src, 12)
    if fmt == "WEBP" and head[:4] == b"RIFF":
        declared, size = int.from_bytes(head[4:8], "little") + 8, _tail(src, 0)[1]
        return "" if size >= declared else f"is truncated ({size:,} bytes, its header says {declared:,})"
    if fmt == "BMP" and head[:2] == b"BM":
        declared, size = int.from_bytes(head[2:6], "little"), _tail(src, 0)[1]
        return "" if declared == 0 or size >= declared else f"is truncated ({size:,} bytes, its header says {declared:,})"
    return ""


def _head(src: Source, n: int) -> bytes:
    if isinstance(src, bytes):
        return src[:n]
    with open(src, "rb") as f:
        return f.read(n)


def decode_image(src: Source, prep: Preprocess, channels: int, label: str = "") -> np.ndarray:
    """One image file -> float32 (C, H, W) by :class:`~lwdsl.data.preprocess.Preprocess`; a
    UsageError naming the file when its pixel data cannot be decoded."""
    Image = pillow()
    try:
        with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as img:
            img.load()
            return prep.from_pil(img, channels)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise _bad(_name(src, label), f"cannot be decoded ({str(exc)[:160] or type(exc).__name__})") from None


def decoded_size(header: Header, prep: Preprocess, label: str) -> tuple[int, int]:
    """(H, W) an image of ``header`` has after ``prep``; a UsageError when the crop does not fit."""
    try:
        return prep.out_hw(header.height, header.width)
    except ValueError as exc:
        raise UsageError(f"image {label} {exc}", hint="give a smaller crop=, or resize= first") from None
