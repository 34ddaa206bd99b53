"""Time smoothing of the background (numba): each pixel's background is replaced by
its mean over a window of N frames centred on the frame (TASOC ``prepare``: nanmean
over frames k−N//2 … k+N//2, the window cut at the ends of the series; frames
without a background — NaN, e.g. fully masked — are left out).

N covers 5400 s: 3 frames at 1800 s, 9 at 600 s, 27 at 200 s (``window_frames``).
The window is also cut at gaps in the series (``segments``): a 5400-s window does not
reach across a data downlink. And a good frame's window holds good frames only
(``smooth_good``): a frame with bad quality bits (scattered light, momentum dump, …)
is processed and smoothed over its own window, but never leaks into a good
neighbour's background. Without this, the first and last good frame around a
scattered-light episode took a third of its sudden glow (at 1800 s), and every light
curve showed two 20–40 % outliers there. The stage smooths the compact per-frame models (tile
grids and radial tables, which enter the image linearly), so one kernel serves models
and images: any (time, …) array, flattened to (time, M).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

WINDOW_SECONDS = 5400.0
GAP_FACTOR = 1.5           # a step longer than 1.5 cadences starts a new segment


def window_frames(cadence_seconds: float, window_seconds: float = WINDOW_SECONDS) -> int:
    """Odd number of frames spanning ``window_seconds`` (≥ 1)."""
    if not cadence_seconds > 0:
        return 1
    n = max(1, int(round(window_seconds / cadence_seconds)))
    return n if n % 2 else n + 1


def cadence_seconds(time_btjd) -> float:
    """The cadence of a series (median step, s); 0 for fewer than 2 frames."""
    t = np.asarray(time_btjd, dtype=float)
    t = t[np.isfinite(t)]
    return float(np.median(np.diff(t)) * 86400.0) if len(t) > 1 else 0.0


def segments(time_btjd, cadence_s=None, gap_factor=GAP_FACTOR):
    """Segment number of each frame: it increases after every step longer than
    ``gap_factor`` cadences (or a non-finite time)."""
    t = np.asarray(time_btjd, dtype=float)
    cad = cadence_seconds(t) if cadence_s is None else cadence_s
    if len(t) < 2 or not cad > 0:
        return np.zeros(len(t), dtype=np.int64)
    step = np.diff(t) * 86400.0
    brk = ~(step <= gap_factor * cad)
    return np.concatenate([[0], np.cumsum(brk)]).astype(np.int64)


@njit(nogil=True, cache=True)
def smooth_time(x, seg, w, lo, hi, out):
    """out[k − lo] = nanmean of x[j] over frames j with |j − k| ≤ w in the same
    segment as k (seg[j] == seg[k]), for lo ≤ k < hi; per column of x (T, M).
    Running sums: O(T·M) whatever the window."""
    t, m = x.shape
    # window bounds per output frame (contiguous: segments are runs of frames)
    a = np.empty(hi - lo, dtype=np.int64)
    b = np.empty(hi - lo, dtype=np.int64)
    for k in range(lo, hi):
        j = k
        while j > 0 and j > k - w and seg[j - 1] == seg[k]:
            j -= 1
        a[k - lo] = j
        j = k + 1
        while j < t and j <= k + w and seg[j] == seg[k]:
            j += 1
        b[k - lo] = j
    for col in range(m):
        s = 0.0
        n = 0
        ca = a[0]
        cb = a[0]
        for k in range(lo, hi):
            na = a[k - lo]
            nb = b[k - lo]
            if na >= cb or nb < ca:        # disjoint from the current window: restart
                s = 0.0
                n = 0
                ca = na
                cb = na
            while ca < na:
                v = x[ca, col]
                if not math.isnan(v):
                    s -= v
                    n -= 1
                ca += 1
            while cb < nb:
                v = x[cb, col]
                if not math.isnan(v):
                    s += v
                    n += 1
                cb += 1
            while cb > nb:                 # a segment end shrank the window
                cb -= 1
                v = x[cb, col]
                if not math.isnan(v):
                    s -= v
                    n -= 1
            out[k - lo, col] = s / n if n > 0 else np.nan


def smooth(x, w, seg=None, lo=0, hi=None):
    """Window-mean of ``x`` (time first, any trailing shape) over ±w frames within
    segments, for frames lo..hi−1; float64 out."""
    x = np.asarray(x)
    t = x.shape[0]
    hi = t if hi is None else hi
    seg = np.zeros(t, dtype=np.int64) if seg is None else np.asarray(seg, dtype=np.int64)
    flat = np.ascontiguousarray(x.reshape(t, -1), dtype=np.float64)
    out = np.empty((hi - lo, flat.shape[1]))
    smooth_time(flat, seg, int(w), int(lo), int(hi), out)
    return out.reshape((hi - lo,) + x.shape[1:])


def smooth_good(x, w, good, seg=None, lo=0, hi=None):
    """``smooth`` in which good frames (``good``, bool per frame of ``x``) average good
    frames only and the other frames every frame of their window."""
    good = np.asarray(good, dtype=bool)
    hi = x.shape[0] if hi is None else hi
    out = smooth(x, w, seg, lo, hi)
    keep = good[lo:hi]
    if keep.any() and not good.all():
        only = np.array(x, dtype=np.float64)
        only[~good] = np.nan
        out[keep] = smooth(only, w, seg, lo, hi)[keep]
    return out
