"""Detector effects: saturation bleeding, noise model and image assembly (numba).

Saturation: a pixel holds at most ``sat_level`` e-/s (full well ≈ 2e5 e- per 2-s frame
→ 1e5 e-/s). The excess charge of a saturated pixel (stars + sky) is split half up,
half down its column and fills neighbours to the level in turn; charge reaching the
top or bottom edge of the science region is lost. Charge is otherwise conserved.

Noise (per pixel, e-/s): variance = signal / texp + n_reads · read_noise² / texp²,
with texp = DEADC · cadence and n_reads = cadence / 2 s. The written frame is
expected + sqrt(variance) · z with z ~ N(0, 1) from ``np.random.default_rng([seed, i])``;
collateral pixels get read noise only, z · sqrt(n_reads · read_noise²) / texp.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def bleed(stars, background, sat_level):
    """Bleed the charge above ``sat_level`` of (stars + background) along columns.

    ``stars`` (float64, S×S) is modified in place so that stars + background ≤ level;
    returns the charge (e-/s) that bled off the top/bottom edges.
    """
    nrow, ncol = stars.shape
    tot = np.empty(nrow)
    lost = 0.0
    hit = np.zeros(ncol, dtype=np.bool_)
    for r in range(nrow):
        for j in range(ncol):
            if stars[r, j] + background[r, j] > sat_level:
                hit[j] = True
    for j in range(ncol):
        if not hit[j]:
            continue
        for r in range(nrow):
            tot[r] = stars[r, j] + background[r, j]
        lo = nrow
        hi = -1
        while True:
            p = 0
            vmax = tot[0]
            for r in range(1, nrow):
                if tot[r] > vmax:
                    vmax = tot[r]
                    p = r
            if vmax <= sat_level:
                break
            excess = vmax - sat_level
            tot[p] = sat_level
            lo = min(lo, p)
            hi = max(hi, p)
            up = 0.5 * excess
            down = excess - up
            k = p - 1
            while up > 0.0:
                if k < 0:
                    lost += up
                    break
                room = sat_level - tot[k]
                if room >= up:
                    tot[k] += up
                    up = 0.0
                else:
                    tot[k] = sat_level
                    up -= room          # room < 0 absorbs that pixel's own excess
                lo = min(lo, k)
                k -= 1
            k = p + 1
            while down > 0.0:
                if k >= nrow:
                    lost += down
                    break
                room = sat_level - tot[k]
                if room >= down:
                    tot[k] += down
                    down = 0.0
                else:
                    tot[k] = sat_level
                    down -= room
                hi = max(hi, k)
                k += 1
        for r in range(lo, hi + 1):
            stars[r, j] = tot[r] - background[r, j]
    return lost


@njit(cache=True, nogil=True)
def _var(expected, inv_texp, rn_var):
    return expected * inv_texp + rn_var


@njit(cache=True, nogil=True)
def variance(expected, inv_texp, rn_var):
    """Noise variance (e-/s)² of a noiseless image (float64 in, float64 out)."""
    out = np.empty_like(expected)
    nrow, ncol = expected.shape
    for r in range(nrow):
        for c in range(ncol):
            out[r, c] = _var(max(expected[r, c], 0.0), inv_texp, rn_var)
    return out


@njit(cache=True, nogil=True)
def compose(background, stars, z, col_offset, inv_texp, rn_var, image, uncert):
    """Fill the float32 ``image``/``uncert`` (written shape) from the noiseless
    components and the standard-normal draws ``z`` (float32, written shape)."""
    nrow, ncol = image.shape
    s_rows, s_cols = background.shape
    rn = math.sqrt(rn_var)
    for r in range(nrow):
        for c in range(ncol):
            sc = c - col_offset
            if r < s_rows and 0 <= sc < s_cols:
                e = background[r, sc] + stars[r, sc]
                sd = math.sqrt(_var(max(e, 0.0), inv_texp, rn_var))
                image[r, c] = np.float32(e + sd * z[r, c])
                uncert[r, c] = np.float32(sd)
            else:
                image[r, c] = np.float32(rn * z[r, c])
                uncert[r, c] = np.float32(rn)
