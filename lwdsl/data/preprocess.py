"""How an image on disk becomes the float32 CHW array every backend trains on: one definition,
numpy and Pillow, so both backends get the same numbers from the same file.

In order (docs/semantics.md, "Data from files"):

1. channels: ``channels=1`` converts colour to grey with Pillow's ``convert("L")`` luma
   ``(19595 R + 38470 G + 7471 B + 32768) >> 16`` (the same integer formula in numpy for
   arrays); ``channels=3`` repeats a grey image three times; an alpha channel is dropped.
   By default an image keeps the channels of the data set's first image (grey -> 1, colour -> 3).
2. ``resize=S``: the shorter side becomes S, the longer ``floor(long * S / short)`` (as
   torchvision's ``Resize(S)``); ``resize=HxW``: exactly H x W. Pillow's bilinear filter
   (antialiased when shrinking), on 8-bit images in their own mode and on float images one
   channel at a time in mode ``F``.
3. ``crop=S`` or ``crop=HxW``: the centre H x W window, its top-left corner at
   ``((height - H) // 2, (width - W) // 2)``.
4. scale to [0, 1] (8-bit: ``x / 255`` in float32; float arrays are taken as [0, 1] already),
   then ``(x - mean[c]) / std[c]`` per channel in float32. Default ``mean=0.5 std=0.5`` (images
   in [-1, 1]); ``mean=0 std=1`` leaves them in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

__all__ = ["Preprocess", "luma", "to_channels", "pillow"]

#: The default normalisation: [0, 1] -> [-1, 1] on every channel.
DEFAULT_MEAN = (0.5,)
DEFAULT_STD = (0.5,)


def pillow() -> Any:
    """Pillow's ``PIL.Image``, or a UsageError saying how to install it."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with both backends' extras
        from ..errors import UsageError

        raise UsageError("reading image files needs Pillow", hint="pip install pillow (or pip install 'lwdsl[images]')") from None
    return Image


@dataclass(frozen=True)
class Preprocess:
    """The preprocessing of a data set read from files (see the module docstring).

    Args:
        resize: None, ``("short", S)`` or ``("exact", H, W)``.
        crop: None or (H, W).
        mean, std: one value for every channel, or one per channel.
        channels: 1, 3, or None (the channels of the data set's first image).
    """

    resize: Optional[tuple] = None
    crop: Optional[tuple[int, int]] = None
    mean: tuple[float, ...] = DEFAULT_MEAN
    std: tuple[float, ...] = DEFAULT_STD
    channels: Optional[int] = None

    def resized(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) after ``resize`` of an H x W image."""
        if self.resize is None:
            return h, w
        if self.resize[0] == "exact":
            return int(self.resize[1]), int(self.resize[2])
        s = int(self.resize[1])
        if h <= w:
            return s, max(1, int(s * w / h))
        return max(1, int(s * h / w)), s

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) of the output of an H x W image; a ValueError when the crop does not fit."""
        rh, rw = self.resized(h, w)
        if self.crop is None:
            return rh, rw
        ch, cw = self.crop
        if ch > rh or cw > rw:
            after = f" (after resize: {rh}x{rw})" if self.resize is not None else ""
            raise ValueError(f"is {h}x{w}{after}, smaller than crop={ch}x{cw}")
        return ch, cw

    def norm(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 (C, 1, 1) mean and std for ``c`` channels."""
        mean = np.asarray(self.mean * c if len(self.mean) == 1 else self.mean, dtype=np.float32)
        std = np.asarray(self.std * c if len(self.std) == 1 else self.std, dtype=np.float32)
        return mean.reshape(c, 1, 1), std.reshape(c, 1, 1)

    def describe(self) -> dict[str, Any]:
        """The settings in effect, for the report."""
        resize = None
        if self.resize is not None:
            resize = f"short side {self.resize[1]}" if self.resize[0] == "short" else f"{self.resize[1]}x{self.resize[2]}"
        return {
            "resize": resize,
            "crop": f"{self.crop[0]}x{self.crop[1]}" if self.crop else None,
            "mean": list(self.mean),
            "std": list(self.std),
            "channels": self.channels,
        }

    # --- one image ------------------------------------------------------------------------------

    def from_pil(self, img: Any, channels: int) -> np.ndarray:
        """A decoded Pillow image -> float32 (C, H, W)."""
        img = img.convert("L" if channels == 1 else "RGB")
        if self.resize is not None:
            h, w = self.resized(img.height, img.width)
            if (h, w) != (img.height, img.width):
                img = img.resize((w, h), pillow().BILINEAR)
        a = np.asarray(img, dtype=np.uint8)
        return self._finish(a.reshape(a.shape[0], a.shape[1], channels), scale=True)

    def from_array(self, a: np.ndarray, channels: int) -> np.ndarray:
        """One image as an H x W x C array (uint8, or float in [0, 1]) -> float32 (C, H, W)."""
        a = to_channels(a, channels)
        if self.resize is not None:
            h, w = self.resized(a.shape[0], a.shape[1])
            if (h, w) != a.shape[:2]:
                a = _resize_array(a, h, w)
        return self._finish(a, scale=a.dtype == np.uint8)

    def batch_from_arrays(self, a: np.ndarray, channels: int) -> np.ndarray:
        """N x H x W x C arrays -> float32 N x C x H x W (vectorised when there is no resize)."""
        if self.resize is not None:
            out = [self.from_array(one, channels) for one in a]
            return np.stack(out) if out else np.zeros((0, channels, 1, 1), np.float32)
        a = to_channels(a, channels)
        a = self._crop(a, axis=1)
        x = np.moveaxis(a, -1, 1).astype(np.float32)
        if a.dtype == np.uint8:
            x /= np.float32(255)
        mean, std = self.norm(channels)
        x -= mean
        x /= std
        return x

    def _crop(self, a: np.ndarray, axis: int = 0) -> np.ndarray:
        if self.crop is None:
            return a
        h, w = a.shape[axis], a.shape[axis + 1]
        ch, cw = self.crop
        top, left = (h - ch) // 2, (w - cw) // 2
        index = [slice(None)] * a.ndim
        index[axis], index[axis + 1] = slice(top, top + ch), slice(left, left + cw)
        return a[tuple(index)]

    def _finish(self, a: np.ndarray, scale: bool) -> np.ndarray:
        a = self._crop(a)
        x = np.moveaxis(a, -1, 0).astype(np.float32)
        if scale:
            x /= np.float32(255)
        mean, std = self.norm(x.shape[0])
        x -= mean
        x /= std
        return x


def luma(rgb: np.ndarray) -> np.ndarray:
    """Grey values of ``... x 3`` pixels: Pillow's ``convert("L")`` for uint8 (bit for bit),
    the same weights for floats."""
    if rgb.dtype == np.uint8:
        r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
        return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]
    w = np.asarray([19595, 38470, 7471], dtype=np.float32) / np.float32(65536)
    return (rgb.astype(np.float32) @ w)[..., None]


def to_channels(a: np.ndarray, channels: int) -> np.ndarray:
    """``... x H x W x C`` with C in {1, 3} -> the same with ``channels`` channels."""
    c = a.shape[-1]
    if c == channels:
        return a
    if channels == 1:
        return luma(a)
    return np.repeat(a, 3, axis=-1)


def _resize_array(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of an H x W x C array with Pillow (8-bit in mode L/RGB, float per channel in F)."""
    Image = pillow()
    if a.dtype == np.uint8:
        img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a, "L" if a.shape[-1] == 1 else "RGB")
        out = np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.uint8)
        return out.reshape(h, w, a.shape[-1])
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c], dtype=np.float32), "F").resize((w, h), Image.BILINEAR))
              for c in range(a.shape[-1])]
    return np.stack(planes, axis=-1).astype(np.float32)
