"""Pixel flags (numba), TASOC ``PixelQualityFlags`` bits:

* 1 ``NOT_USED``: not used for the background — non-finite, above the flux cut-off
  (8e4 e-/s: saturated cores and bleed columns), negative, or manually excluded;
* 2 ``MANUAL_EXCLUDE``: inside a manual-exclude region (the stage turns the
  configured (camera, ccd, rows, columns, times) list into rectangles per frame);
* 4 ``SHENANIGANS``: background "shenanigans" — the 15×15 median of (corrected frame
  − sum image) deviates by more than 40 e-/s from that pixel's typical value.

The 15×15 median filter (``median_filter_q``) is a sliding-histogram (Huang) filter
on values quantised to 1/8 e-/s and clamped to ±2048 e-/s, so a frame costs a few
operations per pixel instead of a sort of 225 values; the median is exact up to the
quantum (±1/16 e-/s), irrelevant against a 40 e-/s threshold. Borders follow scipy's
``median_filter`` default (mode "reflect": the image mirrored about its edges);
non-finite values are left out of the window.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from kernels.stats import reflect_index

NOT_USED = 1
MANUAL_EXCLUDE = 2
SHENANIGANS = 4

SHENANIGANS_SIZE = 15
SHENANIGANS_LIMIT = 40.0
QUANTUM = 1.0 / 8.0            # e-/s per histogram bin
Q_RANGE = 2048.0               # values clamp to ±Q_RANGE
Q_BINS = int(2 * Q_RANGE / QUANTUM)          # 32768
Q_OFFSET = Q_BINS // 2         # stored int16 code = bin − Q_OFFSET
Q_NONE = np.int16(-32768)      # "no value" in a quantised median image (no bin maps to it)


@njit(nogil=True, cache=True)
def mask_flags(img, cutoff, rects, out):
    """Bits 1 (and 1|2 inside the manual-exclude rectangles ``rects``: (k, 4) int64
    rows [r0, r1) × cols [c0, c1) in array coordinates) into ``out`` (uint8)."""
    h, w = img.shape
    for r in range(h):
        for c in range(w):
            v = img[r, c]
            out[r, c] = NOT_USED if not (v >= 0.0 and v <= cutoff) else 0
    for k in range(rects.shape[0]):
        r0 = max(rects[k, 0], 0)
        r1 = min(rects[k, 1], h)
        c0 = max(rects[k, 2], 0)
        c1 = min(rects[k, 3], w)
        for r in range(r0, r1):
            for c in range(c0, c1):
                out[r, c] |= NOT_USED | MANUAL_EXCLUDE


_NO_RECTS = np.zeros((0, 4), dtype=np.int64)


def mask(img, cutoff=8e4, rects=None, out=None):
    """The background mask of a frame as flags (uint8, bits 1 and 2)."""
    img = np.asarray(img)
    out = np.empty(img.shape, dtype=np.uint8) if out is None else out
    rects = _NO_RECTS if rects is None or len(rects) == 0 else np.asarray(rects, dtype=np.int64)
    mask_flags(img, float(cutoff), rects, out)
    return out


# -- 15×15 median filter on quantised values ----------------------------------------------
@njit(nogil=True, cache=True)
def _quantise(v):
    """Histogram bin 1..Q_BINS−1 of a value (−1: not finite)."""
    if not math.isfinite(v):
        return -1
    q = int(math.floor((v + Q_RANGE) / QUANTUM + 0.5))
    if q < 1:
        return 1
    if q >= Q_BINS:
        return Q_BINS - 1
    return q


@njit(nogil=True, cache=True)
def median_filter_q(img, size, out):
    """size×size median of ``img`` into ``out`` (int16 quantised: value = (code +
    Q_OFFSET)·QUANTUM − Q_RANGE, see ``dequantise``; Q_NONE where the window holds no finite
    value).

    Huang's running histogram along each row (one window column leaves, one enters),
    with a coarse histogram of 256-bin blocks so the median bin is found in few steps;
    ``below`` counts the values in bins under the current median bin m.
    """
    h, w = img.shape
    half = size // 2
    qimg = np.empty((h + 2 * half, w + 2 * half), dtype=np.int32)
    for r in range(-half, h + half):
        rr = reflect_index(r, h)
        for c in range(-half, w + half):
            qimg[r + half, c + half] = _quantise(img[rr, reflect_index(c, w)])
    hist = np.zeros(Q_BINS, dtype=np.int32)
    coarse = np.zeros(Q_BINS >> 8, dtype=np.int32)
    m = Q_BINS // 2
    below = 0
    total = 0
    for r in range(h):
        for c in range(w):
            if c == 0:
                for a in range(size):
                    for b in range(size):
                        q = qimg[r + a, b]
                        if q >= 0:
                            hist[q] += 1
                            coarse[q >> 8] += 1
                            total += 1
                            if q < m:
                                below += 1
            else:
                for a in range(size):
                    q = qimg[r + a, c - 1]
                    if q >= 0:
                        hist[q] -= 1
                        coarse[q >> 8] -= 1
                        total -= 1
                        if q < m:
                            below -= 1
                    q = qimg[r + a, c + size - 1]
                    if q >= 0:
                        hist[q] += 1
                        coarse[q >> 8] += 1
                        total += 1
                        if q < m:
                            below += 1
            if total == 0:
                out[r, c] = Q_NONE
                continue
            k = (total - 1) // 2          # rank of the lower median
            while below > k:
                if (m & 255) == 0 and below - coarse[(m >> 8) - 1] > k:
                    below -= coarse[(m >> 8) - 1]
                    m -= 256
                else:
                    m -= 1
                    below -= hist[m]
            while below + hist[m] <= k:
                if (m & 255) == 0 and below + coarse[m >> 8] <= k:
                    below += coarse[m >> 8]
                    m += 256
                else:
                    below += hist[m]
                    m += 1
            if total % 2 == 0 and below + hist[m] <= k + 1:
                nb = m + 1                # the upper median is in a later bin
                while hist[nb] == 0:
                    if (nb & 255) == 0 and coarse[nb >> 8] == 0:
                        nb += 256
                    else:
                        nb += 1
                out[r, c] = np.int16((m + nb) // 2 - Q_OFFSET)
            else:
                out[r, c] = np.int16(m - Q_OFFSET)
        for a in range(size):             # empty the histogram for the next row
            for b in range(w - 1, w - 1 + size):
                q = qimg[r + a, b]
                if q >= 0:
                    hist[q] -= 1
                    coarse[q >> 8] -= 1
                    total -= 1
                    if q < m:
                        below -= 1


def dequantise(q):
    """e-/s values of a quantised median image (NaN where Q_NONE)."""
    q = np.asarray(q)
    v = (q.astype(np.float32) + Q_OFFSET) * np.float32(QUANTUM) - np.float32(Q_RANGE)
    return np.where(q == Q_NONE, np.float32(np.nan), v)


def median_filter(img, size=SHENANIGANS_SIZE, out=None):
    """Quantised size×size median filter (int16; ``dequantise`` for e-/s)."""
    out = np.empty(np.shape(img), dtype=np.int16) if out is None else out
    median_filter_q(np.ascontiguousarray(img, dtype=np.float32), int(size), out)
    return out


@njit(nogil=True, cache=True)
def block_median_q(stack, out):
    """Per-pixel median over the frames of a quantised stack (T, H, W) int16, in
    e-/s (float32), ignoring Q_NONE; NaN where no frame has a value. The "block
    median" of TASOC's typical-shenanigans estimate."""
    t, h, w = stack.shape
    buf = np.empty(t, dtype=np.int32)
    for r in range(h):
        for c in range(w):
            n = 0
            for k in range(t):
                q = stack[k, r, c]
                if q != Q_NONE:
                    v = np.int32(q)
                    j = n - 1
                    while j >= 0 and buf[j] > v:
                        buf[j + 1] = buf[j]
                        j -= 1
                    buf[j + 1] = v
                    n += 1
            if n == 0:
                out[r, c] = np.nan
            else:
                med = 0.5 * (buf[(n - 1) // 2] + buf[n // 2])
                out[r, c] = (med + Q_OFFSET) * QUANTUM - Q_RANGE


@njit(nogil=True, cache=True)
def shenanigans_flags(indicator, typical, limit, flags):
    """Set bit 4 where |indicator − typical| > limit (indicator quantised int16,
    typical float e-/s); clears it elsewhere. ``flags`` uint8 (H, W), in place."""
    h, w = flags.shape
    for r in range(h):
        for c in range(w):
            q = indicator[r, c]
            f = flags[r, c] & ~SHENANIGANS
            if q != Q_NONE:
                v = (np.float64(q) + Q_OFFSET) * QUANTUM - Q_RANGE
                t = typical[r, c]
                if math.isfinite(t) and abs(v - t) > limit:
                    f |= SHENANIGANS
            flags[r, c] = f
