"""Robust statistics of samples (numba): exact sorting, sigma-clipped SExtractor mode,
Gaussian-KDE mode, medians.

Everything works on a *sorted* sample, so sigma clipping never re-sorts: the kept set
of a symmetric clip around the median is always a contiguous run ``s[lo:hi]`` of the
sorted values, its median is the middle of the run and its mean/std come from running
sums that lose the clipped ends. One O(n) radix sort per sample replaces the five
nanmedian/nanstd passes per clip iteration of astropy's ``SigmaClip``.

The estimators reproduce, on the same input:
* ``sextractor_sorted``: astropy ``SigmaClip(sigma, maxiters)`` (median centre, ddof-0
  std, clip ``x < med − σ·std`` or ``x > med + σ·std``, repeat until nothing changes)
  followed by photutils ``SExtractorBackground``: 2.5·median − 1.5·mean, the mean when
  std = 0, the median when |mean − median|/std ≥ 0.3 (the skewed case).
* ``kde_mode_sorted``: the argmax of a Gaussian KDE with statsmodels'
  ``normal_reference`` bandwidth (1.0592·min(std, IQR/1.349)·n^−1/5) — TASOC's
  ``_reduce_mode`` (statsmodels ``KDEUnivariate.fit(gridsize=2000)``) — evaluated on a
  grid that spans the bulk of the sample instead of its full range, so a few outliers
  do not coarsen the grid, and refined between grid points by a parabola.

Samples that are cut once and never clipped need no sort: ``select_inplace``
(quickselect), ``median_inplace`` and ``quartiles_inplace`` reorder an unsorted array
in place and give np.median's and np.percentile's (linear) values in O(n).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

NORMAL_REFERENCE = 1.0592238410488122   # statsmodels' Gaussian-kernel constant
IQR_TO_SIGMA = 1.349

_SIGN = np.uint32(0x80000000)
_ALL = np.uint32(0xFFFFFFFF)


@njit(nogil=True, cache=True)
def sort_f32(values, n, keys, tmp):
    """Sort ``values[:n]`` (float32, finite) in place; exact and O(n).

    LSD radix sort on the order-preserving unsigned image of the IEEE bits, 8 bits
    per pass; a pass whose digit is equal for every value is skipped. ``keys`` and
    ``tmp`` are uint32 scratch arrays of at least n elements.
    """
    if n < 2:
        return
    if n <= 32:                                    # tiny samples: insertion sort
        for i in range(1, n):
            v = values[i]
            j = i - 1
            while j >= 0 and values[j] > v:
                values[j + 1] = values[j]
                j -= 1
            values[j + 1] = v
        return
    bits = values.view(np.uint32)
    hist = np.zeros((4, 256), dtype=np.int64)
    for i in range(n):
        u = bits[i]
        if u & _SIGN:
            u = u ^ _ALL
        else:
            u = u | _SIGN
        keys[i] = u
        hist[0, u & 0xFF] += 1
        hist[1, (u >> 8) & 0xFF] += 1
        hist[2, (u >> 16) & 0xFF] += 1
        hist[3, (u >> 24) & 0xFF] += 1
    src = keys
    dst = tmp
    for p in range(4):
        shift = 8 * p
        skip = False
        for b in range(256):
            if hist[p, b] == n:
                skip = True
                break
            if hist[p, b] != 0:
                break
        if skip:
            continue
        total = 0
        for b in range(256):
            c = hist[p, b]
            hist[p, b] = total
            total += c
        for i in range(n):
            u = src[i]
            d = (u >> shift) & 0xFF
            dst[hist[p, d]] = u
            hist[p, d] += 1
        src, dst = dst, src
    for i in range(n):
        u = src[i]
        if u & _SIGN:
            u = u ^ _SIGN
        else:
            u = u ^ _ALL
        bits[i] = u


@njit(nogil=True, cache=True)
def median_sorted(s, lo, hi):
    """Median of the sorted run s[lo:hi] (mean of the two middle values if even)."""
    cnt = hi - lo
    if cnt <= 0:
        return np.nan
    a = lo + (cnt - 1) // 2
    b = lo + cnt // 2
    return 0.5 * (np.float64(s[a]) + np.float64(s[b]))


@njit(nogil=True, cache=True)
def quantile_sorted(s, n, q):
    """Linear-interpolation quantile (numpy's default) of the sorted s[:n], q in 0..1."""
    if n == 0:
        return np.nan
    pos = q * (n - 1)
    i = int(math.floor(pos))
    if i >= n - 1:
        return np.float64(s[n - 1])
    f = pos - i
    return np.float64(s[i]) + f * (np.float64(s[i + 1]) - np.float64(s[i]))


@njit(nogil=True, cache=True)
def select_inplace(a, lo, hi, k):
    """Quickselect in place on a[lo:hi+1]: afterwards a[k] holds the value of rank k
    and a[lo:k] ≤ a[k] ≤ a[k+1:hi+1]. Returns a[k]."""
    while hi > lo:
        mid = (lo + hi) >> 1
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@njit(nogil=True, cache=True)
def quartiles_inplace(x):
    """np.percentile(x, [25, 75]) (linear interpolation); x is reordered."""
    n = x.size
    out = np.empty(2)
    lo = 0
    for j, q in enumerate((0.25, 0.75)):
        pos = (n - 1) * q
        k = int(math.floor(pos))
        v0 = select_inplace(x, lo, n - 1, k)
        v1 = v0
        if k + 1 < n:
            v1 = x[k + 1]
            for i in range(k + 2, n):
                if x[i] < v1:
                    v1 = x[i]
        out[j] = v0 + (pos - k) * (v1 - v0)
        lo = k
    return out[0], out[1]


@njit(nogil=True, cache=True)
def median_inplace(a):
    """Median of a (reordered), as np.median."""
    n = a.size
    if n == 0:
        return np.nan
    hi = select_inplace(a, 0, n - 1, n // 2)
    if n % 2:
        return hi
    lo = a[0]
    for i in range(1, n // 2):
        if a[i] > lo:
            lo = a[i]
    return 0.5 * (hi + lo)


@njit(nogil=True, cache=True)
def sigma_clip_sorted(s, n, sigma, maxiters):
    """Sigma-clip the sorted s[:n] around its median (astropy semantics).

    Returns (lo, hi, median, mean, std) of the kept run s[lo:hi]; std has ddof 0.
    """
    if n == 0:
        return 0, 0, np.nan, np.nan, np.nan
    shift = np.float64(s[(n - 1) // 2])
    acc = 0.0
    acc2 = 0.0
    for i in range(n):
        d = np.float64(s[i]) - shift
        acc += d
        acc2 += d * d
    lo = 0
    hi = n
    for _ in range(maxiters):
        cnt = hi - lo
        med = median_sorted(s, lo, hi)
        m = acc / cnt
        std = math.sqrt(max(acc2 / cnt - m * m, 0.0))
        lower = med - sigma * std
        upper = med + sigma * std
        nlo = lo
        while nlo < hi and s[nlo] < lower:
            d = np.float64(s[nlo]) - shift
            acc -= d
            acc2 -= d * d
            nlo += 1
        nhi = hi
        while nhi > nlo and s[nhi - 1] > upper:
            d = np.float64(s[nhi - 1]) - shift
            acc -= d
            acc2 -= d * d
            nhi -= 1
        changed = nlo != lo or nhi != hi
        lo = nlo
        hi = nhi
        if not changed or hi == lo:
            break
    cnt = hi - lo
    if cnt == 0:
        return lo, hi, np.nan, np.nan, np.nan
    m = acc / cnt
    return lo, hi, median_sorted(s, lo, hi), m + shift, math.sqrt(max(acc2 / cnt - m * m, 0.0))


@njit(nogil=True, cache=True)
def sextractor_from_stats(median, mean, std):
    """SExtractor's mode estimate from clipped median/mean/std (photutils' rules)."""
    if std == 0.0:
        return mean
    if abs(mean - median) / std >= 0.3:
        return median
    return 2.5 * median - 1.5 * mean


@njit(nogil=True, cache=True)
def sextractor_sorted(s, n, sigma, maxiters):
    """Sigma-clipped SExtractor background of the sorted s[:n].

    Returns (background, number of values kept after clipping)."""
    lo, hi, med, mean, std = sigma_clip_sorted(s, n, sigma, maxiters)
    if hi <= lo:
        return np.nan, 0
    return sextractor_from_stats(med, mean, std), hi - lo


@njit(nogil=True, cache=True)
def normal_reference_bandwidth(s, n):
    """statsmodels' ``normal_reference`` bandwidth of the sorted s[:n]:
    1.0592·min(std(ddof=1), IQR/1.349)·n^(−1/5); 0 when it cannot be formed."""
    if n < 2:
        return 0.0
    mean = 0.0
    for i in range(n):
        mean += s[i]
    mean /= n
    var = 0.0
    for i in range(n):
        d = s[i] - mean
        var += d * d
    std = math.sqrt(var / (n - 1))
    iqr = (quantile_sorted(s, n, 0.75) - quantile_sorted(s, n, 0.25)) / IQR_TO_SIGMA
    a = min(std, iqr) if iqr > 0 else std
    return NORMAL_REFERENCE * a * n ** -0.2


@njit(nogil=True, cache=True)
def kde_mode_sorted(s, n, grid, dens, oversample):
    """Mode of the sorted sample s[:n]: argmax of its Gaussian KDE (normal-reference
    bandwidth h) evaluated on a grid of spacing h/oversample, refined by a parabola.

    The grid covers [q25 − 3·IQR − 4h, q75 + 3·IQR + 4h] ∩ [min − 3h, max + 3h] with
    at most len(grid) points; ``grid`` and ``dens`` are float64 scratch of equal
    length. Values outside the grid only add far tails and are left out. Returns NaN
    for an empty sample and the median when h = 0 (a degenerate sample).
    """
    if n == 0:
        return np.nan
    h = normal_reference_bandwidth(s, n)
    if not h > 0.0:
        return median_sorted(s, 0, n)
    q25 = quantile_sorted(s, n, 0.25)
    q75 = quantile_sorted(s, n, 0.75)
    iqr = q75 - q25
    a = max(np.float64(s[0]) - 3.0 * h, q25 - 3.0 * iqr - 4.0 * h)
    b = min(np.float64(s[n - 1]) + 3.0 * h, q75 + 3.0 * iqr + 4.0 * h)
    size = len(grid)
    step = h / oversample
    m = int(math.ceil((b - a) / step)) + 1
    if m > size:
        m = size
        step = (b - a) / (m - 1)
    if m < 3:
        return median_sorted(s, 0, n)
    return binned_kde_peak(s, n, a, step, m, h / step, 4.0, grid, dens)


@njit(nogil=True, cache=True)
def binned_kde_peak(values, n, a, step, m, sig, truncate, grid, dens):
    """Argmax of a Gaussian KDE of values[:n] on the grid a + i·step (i < m): linear
    binning, smoothing by a Gaussian of ``sig`` grid steps truncated at ±truncate·sig,
    then a parabola through the top three points. ``grid``/``dens``: float64 scratch
    of length ≥ m. Values outside the grid are left out (they only add far tails)."""
    for i in range(m):
        grid[i] = 0.0
    inv = 1.0 / step
    for i in range(n):                      # linear binning
        t = (np.float64(values[i]) - a) * inv
        if t < 0.0 or t > m - 1:
            continue
        k = int(t)
        if k >= m - 1:
            grid[m - 1] += 1.0
            continue
        f = t - k
        grid[k] += 1.0 - f
        grid[k + 1] += f
    half = int(math.ceil(truncate * sig))
    w = np.empty(2 * half + 1)
    for j in range(-half, half + 1):
        w[j + half] = math.exp(-0.5 * (j / sig) ** 2)
    ibest = 0
    for i in range(m):
        d = 0.0
        for j in range(max(0, i - half), min(m - 1, i + half) + 1):
            d += grid[j] * w[j - i + half]
        dens[i] = d
        if d > dens[ibest]:
            ibest = i
    x = a + ibest * step
    if 0 < ibest < m - 1:
        den = dens[ibest - 1] - 2.0 * dens[ibest] + dens[ibest + 1]
        if den < 0.0:
            off = 0.5 * (dens[ibest - 1] - dens[ibest + 1]) / den
            if -1.0 < off < 1.0:
                x += off * step
    return x


@njit(nogil=True, cache=True)
def nanmedian_small(buf, n):
    """Median of the first n values of a small float64 buffer (sorted in place)."""
    if n == 0:
        return np.nan
    for i in range(1, n):
        v = buf[i]
        j = i - 1
        while j >= 0 and buf[j] > v:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = v
    return 0.5 * (buf[(n - 1) // 2] + buf[n // 2])


@njit(nogil=True, cache=True)
def reflect_index(k, n):
    """Index k folded into 0..n−1 by scipy.ndimage's "reflect" boundary
    (d c b a | a b c d | d c b a)."""
    while k < 0 or k >= n:
        if k < 0:
            k = -k - 1
        else:
            k = 2 * n - k - 1
    return k
