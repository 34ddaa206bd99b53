"""Pixel-integrated PRF and star rendering (numba kernels, numpy in, numpy out).

The PRF is a sum of two concentric circular Gaussians, a core (σ_core, weight
1 − wing_frac) and a faint broad wing (σ_wing, weight wing_frac), integrated exactly
over each pixel with error-function differences, so it sums to 1 over the infinite
plane. Being separable, a star's stamp is the outer product of 1-D pixel fractions.
Pixel (r, c) spans r−0.5..r+0.5, c−0.5..c+0.5 (0-based science coordinates).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_SQRT2 = math.sqrt(2.0)

# Defaults (recorded in the truth file): core FWHM ≈ 1.4 px, 8 % of the light in a
# σ = 2.5 px wing; a centred star fills its brightest pixel to 33 % of its flux, so
# stars brighter than Tmag ≈ 6.1–6.7 (corner- to centre-placed) saturate.
SIGMA_CORE = 0.6
SIGMA_WING = 2.5
WING_FRAC = 0.08
STAMP_EPS = 1e-4     # e-/s: the stamp is large enough that the wing's edge is below this


def stamp_radius(flux, sigma_wing=SIGMA_WING, wing_frac=WING_FRAC, sigma_core=SIGMA_CORE,
                 eps=STAMP_EPS):
    """Half-width (pixels) of the square stamp a star of ``flux`` e-/s is rendered in:
    where both PRF components' per-pixel value has fallen below ``eps``. Grows with
    brightness (10 px at Tmag 16, 15 px at Tmag 6)."""
    flux = np.maximum(np.asarray(flux, dtype=float), 1e-30)
    out = np.full(flux.shape, 4.0)
    for sig, frac in ((sigma_wing, wing_frac), (sigma_core, 1.0 - wing_frac)):
        peak = flux * frac / (2.0 * math.pi * sig * sig)
        r = sig * np.sqrt(2.0 * np.log(np.maximum(peak / eps, 1.0)))
        out = np.maximum(out, r)
    return np.ceil(out).astype(np.int32)


@njit(cache=True, nogil=True)
def _half_tail(e):
    """0.5·erfc(|e|/√2): Φ(e) for e < 0, 1 − Φ(e) for e ≥ 0 (accurate in both tails)."""
    return 0.5 * math.erfc(abs(e) / _SQRT2)


@njit(cache=True, nogil=True)
def _interval(a, b):
    """Standard-normal probability between a < b."""
    ta = _half_tail(a)
    tb = _half_tail(b)
    if a >= 0.0:
        return ta - tb
    if b <= 0.0:
        return tb - ta
    return 1.0 - ta - tb


@njit(cache=True, nogil=True)
def _profile(center, lo, n, sigma, out):
    """out[k] = share of a 1-D Gaussian (centre, σ) in pixel lo+k."""
    for k in range(n):
        x = lo + k - center
        out[k] = _interval((x - 0.5) / sigma, (x + 0.5) / sigma)


@njit(cache=True, nogil=True)
def render_stars(rows, cols, fluxes, radii, sigma_core, sigma_wing, wing_frac, out):
    """Add every star's pixel-integrated PRF (flux e-/s) to ``out`` (float64, S×S).

    rows/cols: star centres in science coordinates (jitter included); radii: stamp
    half-widths. Stamps are clipped at the edges: light falling outside is lost.
    """
    nrow, ncol = out.shape
    rmax = 1
    for k in range(radii.shape[0]):
        rmax = max(rmax, radii[k])
    m = 2 * rmax + 1
    yc = np.empty(m)
    yw = np.empty(m)
    xc = np.empty(m)
    xw = np.empty(m)
    for k in range(rows.shape[0]):
        f = fluxes[k]
        if not f > 0.0:
            continue
        rad = radii[k]
        ir = int(math.floor(rows[k] + 0.5))
        ic = int(math.floor(cols[k] + 0.5))
        r0 = max(ir - rad, 0)
        r1 = min(ir + rad, nrow - 1)
        c0 = max(ic - rad, 0)
        c1 = min(ic + rad, ncol - 1)
        if r0 > r1 or c0 > c1:
            continue
        nr = r1 - r0 + 1
        nc = c1 - c0 + 1
        _profile(rows[k], r0, nr, sigma_core, yc)
        _profile(rows[k], r0, nr, sigma_wing, yw)
        _profile(cols[k], c0, nc, sigma_core, xc)
        _profile(cols[k], c0, nc, sigma_wing, xw)
        a = f * (1.0 - wing_frac)
        b = f * wing_frac
        for i in range(nr):
            ya = a * yc[i]
            yb = b * yw[i]
            for j in range(nc):
                out[r0 + i, c0 + j] += ya * xc[j] + yb * xw[j]


@njit(cache=True, nogil=True)
def _fraction_pixels(row, col, prow, pcol, sigma_core, sigma_wing, wing_frac):
    total = 0.0
    for k in range(prow.shape[0]):
        dy = prow[k] - row
        dx = pcol[k] - col
        fc = (_interval((dy - 0.5) / sigma_core, (dy + 0.5) / sigma_core)
              * _interval((dx - 0.5) / sigma_core, (dx + 0.5) / sigma_core))
        fw = (_interval((dy - 0.5) / sigma_wing, (dy + 0.5) / sigma_wing)
              * _interval((dx - 0.5) / sigma_wing, (dx + 0.5) / sigma_wing))
        total += (1.0 - wing_frac) * fc + wing_frac * fw
    return total


def prf_fraction(row, col, pixels, sigma_core=SIGMA_CORE, sigma_wing=SIGMA_WING,
                 wing_frac=WING_FRAC):
    """Share of the PRF of a star centred at (row, col) that falls in ``pixels``.

    ``pixels``: a boolean mask (S×S, science coordinates), an (N, 2) integer array of
    (row, col), or a (rows, cols) pair of index arrays. Each pixel is counted once.
    The full (untruncated) PRF is used; saturation bleeding is not included.
    """
    if isinstance(pixels, np.ndarray) and pixels.dtype == bool:
        prow, pcol = np.nonzero(pixels)
    elif isinstance(pixels, tuple) and len(pixels) == 2:
        prow, pcol = np.asarray(pixels[0]), np.asarray(pixels[1])
    else:
        p = np.asarray(pixels).reshape(-1, 2)
        prow, pcol = p[:, 0], p[:, 1]
    uniq = np.unique(np.stack([np.ravel(prow), np.ravel(pcol)], axis=1).astype(np.int64), axis=0)
    return float(_fraction_pixels(float(row), float(col), uniq[:, 0].astype(np.float64),
                                  uniq[:, 1].astype(np.float64), sigma_core, sigma_wing, wing_frac))


def prf_fraction_box(row, col, r_lo, r_hi, c_lo, c_hi, sigma_core=SIGMA_CORE,
                     sigma_wing=SIGMA_WING, wing_frac=WING_FRAC):
    """Share of the PRF (vectorised over stars) inside pixel rows r_lo..r_hi−1 and cols
    c_lo..c_hi−1, e.g. (0, S, 0, S) for the whole science region."""
    from scipy.special import ndtr

    row = np.asarray(row, dtype=float)
    col = np.asarray(col, dtype=float)

    def one(sig):
        fy = ndtr((r_hi - 0.5 - row) / sig) - ndtr((r_lo - 0.5 - row) / sig)
        fx = ndtr((c_hi - 0.5 - col) / sig) - ndtr((c_lo - 0.5 - col) / sig)
        return fy * fx

    return (1.0 - wing_frac) * one(sigma_core) + wing_frac * one(sigma_wing)
