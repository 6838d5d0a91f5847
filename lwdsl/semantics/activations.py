"""Activation quantization: scale and zero point of a range, fake quantization, range observers.

**Activations** (:func:`act_qparams`, static mode): affine; the range is widened to contain 0,
``scale = (hi - lo) / (qmax - qmin)`` in float32 (1 when ``hi == lo``), ``zero_point =
clip(qmin - rint(lo / scale), qmin, qmax)``; uint8 ``[0, 255]`` by default, int8 ``[-128, 127]``
with ``signed``. :class:`RangeObserver` finds ``lo, hi`` from calibration batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import RunError

__all__ = ["ActQuant", "act_qparams", "fake_quantize", "RangeObserver"]

_TINY = np.float32(2.0**-126)  # smallest normal float32: no scale is below it


@dataclass(frozen=True)
class ActQuant:
    """Affine activation quantization: ``q = clip(rint(x / scale) + zero_point, qmin, qmax)``;
    ``scale`` is a float32 value."""

    scale: float
    zero_point: int
    qmin: int = 0
    qmax: int = 255


def act_qparams(lo: float, hi: float, bits: int = 8, signed: bool = False) -> ActQuant:
    """Scale and zero point for the activation range ``[lo, hi]`` (module rules).

    ``lo, hi`` are rounded to float32 and widened to contain 0; ``scale = (hi - lo) / (qmax -
    qmin)`` in float32 (1 when ``hi == lo``, floored at 2^-126); ``zero_point = clip(qmin -
    rint(lo / scale), qmin, qmax)`` (float32 division, half to even), so 0 is exactly
    representable.

    Raises:
        RunError: if ``lo`` or ``hi`` is NaN or infinite, or ``hi - lo`` overflows float32.
        ValueError: if ``lo > hi`` or bits is outside 2..16.

    >>> act_qparams(-1.0, 3.0)
    ActQuant(scale=0.01568627543747425, zero_point=64, qmin=0, qmax=255)
    """
    if not 2 <= bits <= 16:
        raise ValueError(f"activation bits must be in 2..16, got {bits}")
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if not (np.isfinite(lo32) and np.isfinite(hi32)):
        raise RunError(f"activation range [{lo}, {hi}] is not finite: calibration saw NaN or inf")
    if lo32 > hi32:
        raise ValueError(f"activation range has lo {lo} > hi {hi}")
    lo32, hi32 = min(lo32, np.float32(0)), max(hi32, np.float32(0))
    with np.errstate(over="ignore"):
        width = hi32 - lo32
    if not np.isfinite(width):
        raise RunError(f"activation range [{lo}, {hi}] is too wide for float32")
    scale = np.float32(1) if width == 0 else max(width / np.float32(qmax - qmin), _TINY)
    zp = int(np.clip(qmin - np.rint(lo32 / scale), qmin, qmax))
    return ActQuant(float(scale), zp, qmin, qmax)


def fake_quantize(x: np.ndarray, aq: ActQuant) -> np.ndarray:
    """Quantize and dequantize in float32: ``(clip(rint(x/scale) + zp, qmin, qmax) - zp) * scale``.

    inf saturates to the end of the range, NaN stays NaN.

    >>> fake_quantize(np.array([-2.0, 0.0, 0.01, 5.0], np.float32), act_qparams(-1.0, 3.0)).tolist()
    [-1.003921627998352, 0.0, 0.01568627543747425, 2.9960784912109375]
    """
    s, zp = np.float32(aq.scale), np.float32(aq.zero_point)
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.clip(np.rint(np.asarray(x, dtype=np.float32) / s) + zp, np.float32(aq.qmin), np.float32(aq.qmax))
    return ((q - zp) * s).astype(np.float32)


class RangeObserver:
    """Streams calibration batches and returns the activation range ``(lo, hi)`` to quantize.

    The exact min, max, how often each occurs, and the count of exact zeros are kept always.

    - ``minmax``: the exact running min and max.
    - ``percentile``: the values below which ``100 - p`` and ``p`` percent of the data lie, read
      off the histogram (linear within a bin); a rank among the copies of the min (max) gives
      exactly the min (max), so ReLU outputs keep ``lo = 0``.
    - ``mse``: the ``[l, h]`` minimising a modelled ``bits``-bit error over the candidates ``l, h``
      in the histogram edges clipped to ``[min, max]``, widened to contain 0 as
      :func:`act_qparams` does. Error model, per bin of center ``c`` and count ``n`` (exact
      zeros excluded: 0 is on the grid): ``n * (c - h)^2`` if ``c > h``, ``n * (l - c)^2`` if
      ``c < l``, else ``n * s^2 / 12`` (uniform rounding) with ``s = (h - l) / (2^bits - 1)``.
      Ties: lowest ``l``, then lowest ``h``. The model overrates rounding error when most data
      sits in a bin far narrower than ``s`` (Cauchy-like outliers), and then clips too much.

    Both return values inside the exact ``[min, max]``. The histogram has ``bins`` equal bins
    (fixed memory). It starts on the range of the first data with two distinct values; a batch
    outside it grows the bin width by the smallest power of two ``2^k`` for which a grid
    aligned on the old edges (``j`` new bins below the old low edge, ``j`` the fewest that reach
    the new minimum) covers the new data, and the old bin ``i`` is added to new bin
    ``j + i // 2^k``: re-binning merges whole bins, exactly.

    >>> ob = RangeObserver(); ob.update(np.array([0.5, -2.0, 1.0])); ob.update(np.array([3.0])); ob.range()
    (-2.0, 3.0)
    """

    def __init__(self, method: str = "minmax", bins: int = 2048, percentile: float = 99.99, bits: int = 8) -> None:
        if method not in ("minmax", "percentile", "mse"):
            raise ValueError(f"method must be minmax, percentile or mse, got {method!r}")
        if int(bins) < 2 or not 50.0 < percentile <= 100.0 or not 2 <= bits <= 16:
            raise ValueError(f"need bins >= 2, 50 < percentile <= 100, bits in 2..16; got {bins}, {percentile}, {bits}")
        self.method, self.bins, self.percentile, self.bits = method, int(bins), float(percentile), int(bits)
        self._min, self._max, self._n, self._nmin, self._nmax, self._nzero = np.inf, -np.inf, 0, 0, 0, 0
        self._counts: Optional[np.ndarray] = None  # the non-zero values; zeros are only counted
        self._lo = self._width = 0.0

    def update(self, x: np.ndarray) -> None:
        """Add a batch (any shape). Raises RunError if it holds NaN or inf."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if not x.size:
            return
        if not np.isfinite(x).all():
            raise RunError("calibration saw a NaN or infinite activation: the model or the data is broken")
        bmin, bmax = float(x.min()), float(x.max())
        old_min, old_n = self._min, self._n - self._nzero
        nmin, nmax = int(np.count_nonzero(x == bmin)), int(np.count_nonzero(x == bmax))
        if bmin <= self._min:
            self._nmin = nmin + (self._nmin if bmin == self._min else 0)
            self._min = bmin
        if bmax >= self._max:
            self._nmax = nmax + (self._nmax if bmax == self._max else 0)
            self._max = bmax
        self._n += x.size
        self._nzero += int(np.count_nonzero(x == 0))
        if self.method == "minmax" or self._min == self._max:
            return
        if self._counts is None:
            self._lo, self._width = self._min, (self._max - self._min) / self.bins
            while self._lo + self.bins * self._width < self._max:  # cover max despite rounding
                self._width = float(np.nextafter(self._width, np.inf))
            self._counts = np.zeros(self.bins, dtype=np.int64)
            if old_n:  # what came before was one non-zero value, old_n times
                self._counts[self._index(np.array([old_min]))] += old_n
        else:
            self._grow(bmin, bmax)
        self._counts += np.bincount(self._index(x[x != 0]), minlength=self.bins)

    def _index(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.floor((x - self._lo) / self._width), 0, self.bins - 1).astype(np.int64)

    def _grow(self, xmin: float, xmax: float) -> None:
        lo, w, b = self._lo, self._width, self.bins
        if xmin >= lo and xmax <= lo + b * w:
            return
        k = 0
        while True:
            k += 1
            w2 = w * 2.0**k
            j = int(np.ceil((lo - min(xmin, lo)) / w2))
            j += lo - j * w2 > xmin  # rounding
            if j + ((b - 1) >> k) < b and lo - j * w2 + b * w2 >= xmax:
                break
        new = np.zeros(b, dtype=np.int64)
        np.add.at(new, j + (np.arange(b) >> min(k, 62)), self._counts)
        self._counts, self._lo, self._width = new, lo - j * w2, w2

    def histogram(self) -> tuple[np.ndarray, float, float]:
        """``(counts, lo, hi)`` of all the data (percentile and mse only), zeros in the bin of 0;
        all data in bin 0 and ``lo == hi`` while a single value has been seen."""
        if self.method == "minmax":
            raise ValueError("a minmax observer keeps no histogram")
        if self._counts is None:
            counts = np.zeros(self.bins, dtype=np.int64)
            counts[0] = self._n
            return counts, self._min, self._max
        counts = self._counts.copy()
        if self._nzero:
            counts[self._index(np.zeros(1))] += self._nzero
        return counts, self._lo, self._lo + self.bins * self._width

    def range(self) -> tuple[float, float]:
        """``(lo, hi)`` by the observer's method, never outside the exact ``[min, max]``.

        Raises:
            RunError: if no data was observed.
        """
        if not self._n:
            raise RunError("calibration observed no data: give at least one batch")
        if self.method == "minmax" or self._counts is None:
            return float(self._min), float(self._max)
        lo, hi = self._search() if self.method == "mse" else self._percentiles()
        return float(min(max(lo, self._min), self._max)), float(max(min(hi, self._max), self._min))

    def _percentiles(self) -> tuple[float, float]:
        counts = self.histogram()[0].astype(np.float64)
        cum = np.cumsum(counts)

        def at(target: float) -> float:
            i = min(int(np.searchsorted(cum, target, side="left")), self.bins - 1)
            before = cum[i - 1] if i else 0.0
            frac = (target - before) / counts[i] if counts[i] else 0.0
            return self._lo + (i + min(max(frac, 0.0), 1.0)) * self._width

        low, high = self._n * (1.0 - self.percentile / 100.0), self._n * self.percentile / 100.0
        lo = self._min if low <= self._nmin else at(low)
        hi = self._max if high > self._n - self._nmax else at(high)
        return lo, hi

    def _search(self) -> tuple[float, float]:
        n = self._counts.astype(np.float64)
        ctr = self._lo + (np.arange(self.bins) + 0.5) * self._width
        cands = np.clip(self._lo + np.arange(self.bins + 1) * self._width, self._min, self._max)
        lows, highs = np.unique(np.minimum(cands, 0.0)), np.unique(np.maximum(cands, 0.0))
        s0, s1, s2 = (np.concatenate([[0.0], np.cumsum(v)]) for v in (n, n * ctr, n * ctr * ctr))
        a = np.searchsorted(ctr, lows, side="left")  # bins [0, a) lie below l
        b = np.searchsorted(ctr, highs, side="right")  # bins [b, B) lie above h
        err_lo = lows**2 * s0[a] - 2 * lows * s1[a] + s2[a]
        err_hi = highs**2 * (s0[-1] - s0[b]) - 2 * highs * (s1[-1] - s1[b]) + (s2[-1] - s2[b])
        levels = float(2**self.bits - 1)
        best, arg = np.inf, (self._min, self._max)
        for start in range(0, lows.size, 256):  # rows in chunks: bounded temporary memory
            sl = slice(start, start + 256)
            inside = np.maximum(s0[b][None, :] - s0[a[sl]][:, None], 0.0)
            step = (highs[None, :] - lows[sl, None]) / levels
            err = err_lo[sl, None] + err_hi[None, :] + inside * step**2 / 12.0
            err[step <= 0] = np.inf  # l == h == 0 is no range
            i = int(np.argmin(err))
            if err.flat[i] < best:
                best, arg = float(err.flat[i]), (lows[start + i // highs.size], highs[i % highs.size])
        return arg


