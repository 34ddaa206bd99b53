"""The K2P2 significance cut on a sum image (TASOC ``k2p2FixFromSum``; DESIGN §4):
mode of a Gaussian kernel density estimate of the pixel values (Scott's bandwidth,
brightest 15 % trimmed, values ≥ 7e4 e-/s removed) plus ``thresh`` × 1.4826 × the
MAD measured below the mode. numba kernels: numpy in, numpy out."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from kernels.stats import (IQR_TO_SIGMA, binned_kde_peak, median_inplace, quartiles_inplace,
                           select_inplace)

MAD_TO_SIGMA = 1.482602218505602     # 1 / Φ⁻¹(3/4)
SCOTT_FACTOR = 1.059                 # statsmodels' bw_scott


# ================================================================== threshold
@njit(nogil=True, cache=True)
def _values(image, positive_only):
    flat = image.ravel()
    out = np.empty(flat.size, np.float64)
    n = 0
    for i in range(flat.size):
        v = np.float64(flat[i])
        if math.isfinite(v) and (v > 0.0 or not positive_only):
            out[n] = v
            n += 1
    return out[:n]


@njit(nogil=True, cache=True)
def scott_bandwidth(x, q25, q75):
    """statsmodels' Scott bandwidth: 1.059 · min(std(ddof=1), IQR/1.349) · n^(−1/5)."""
    n = x.size
    if n < 2:
        return 0.0
    std = np.std(x) * math.sqrt(n / (n - 1.0))
    iqr = (q75 - q25) / IQR_TO_SIGMA
    a = min(std, iqr) if iqr > 0.0 else std
    return SCOTT_FACTOR * a * n ** -0.2


@njit(nogil=True, cache=True)
def kde_mode(x, h, q25, q75, oversample=8, max_grid=1 << 20):
    """Maximum of the Gaussian KDE (bandwidth h) of x, from a linearly binned KDE on a
    grid of step h/oversample refined by a parabola through the top three points.
    The grid spans the bulk of the data, [q25 − 3 IQR, q75 + 3 IQR] widened by 4h
    (and cut to the data range ± 4h): far outliers only add tails. q25/q75: the
    quartiles of x."""
    n = x.size
    if n == 0:
        return np.nan
    if not h > 0.0:
        return median_inplace(x.copy())
    iqr = q75 - q25
    a = max(np.min(x), q25 - 3.0 * iqr) - 4.0 * h
    b = min(np.max(x), q75 + 3.0 * iqr) + 4.0 * h
    step = h / oversample
    m = int(math.ceil((b - a) / step)) + 1
    if m > max_grid:
        m = max_grid
        step = (b - a) / (m - 1)
    return binned_kde_peak(x, n, a, step, m, h / step, 5.0, np.zeros(m), np.zeros(m))


def threshold(image, thresh=0.8, trim=0.15, flux_limit=7.0e4, positive_only=False):
    """K2P2 significance cut of a sum image (any shape; NaN ignored).

    Returns (cut, mode, sigma, bandwidth) with sigma = 1.4826 · MAD below the mode and
    cut = mode + thresh · sigma. NaNs when the image holds no usable value."""
    image = np.ascontiguousarray(image, dtype=np.float64)
    return _threshold(image, float(thresh), float(trim), float(flux_limit), bool(positive_only))


@njit(nogil=True, cache=True)
def _threshold(image, thresh, trim, flux_limit, positive_only):
    f = _values(image, positive_only)
    n = f.size
    if n == 0:
        return np.nan, np.nan, np.nan, np.nan
    keep = n - int(trim * n)                         # scipy.stats.trim1(..., 0.15)
    work = f.copy()
    if keep < n:
        select_inplace(work, 0, n - 1, keep)
    m = 0
    for i in range(keep):                            # and values ≥ 7e4 e-/s cut
        if work[i] < flux_limit:
            work[m] = work[i]
            m += 1
    kept = work[:m]
    if m == 0:
        return np.nan, np.nan, np.nan, np.nan
    q25, q75 = quartiles_inplace(kept)
    h = scott_bandwidth(kept, q25, q75)
    mode = kde_mode(kept, h, q25, q75)
    k = 0
    for i in range(n):                               # |F − mode| for F below the mode
        if f[i] < mode:
            work[k] = mode - f[i]
            k += 1
    sigma = MAD_TO_SIGMA * median_inplace(work[:k]) if k else 0.0
    return mode + thresh * sigma, mode, sigma, h
