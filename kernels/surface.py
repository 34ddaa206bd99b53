"""Rebuilding a frame's background from its model, and the per-frame arithmetic
fused with it (numba): the cubic B-spline tile surface plus the radial table at
every pixel; subtraction; the sum-image accumulation.

The surface is evaluated row by row: the coefficients are interpolated along y once
per row (``spline_row``), then each run of columns between two tile centres shares
four coefficients and needs only contiguous weights, so the inner loop vectorises.
Only pixels beyond the radial table's start pay for a square root.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from kernels.tiles import LINEAR, PAD, bspline_coefficients, spline_row

@njit(nogil=True, cache=True, fastmath=True)
def _row_surface(v, runs, w4, out):
    """One image row of the tile surface: out[c] = Σ_a w4[a, c]·v[k + a] over each run
    [runs[i, 0], runs[i, 1]) of columns sharing the first coefficient index k =
    runs[i, 2] (contiguous, vectorisable)."""
    for i in range(runs.shape[0]):
        c0, c1, k = runs[i, 0], runs[i, 1], runs[i, 2]
        a, b, c, d = v[k], v[k + 1], v[k + 2], v[k + 3]
        for col in range(c0, c1):
            out[col] = w4[0, col] * a + w4[1, col] * b + w4[2, col] * c + w4[3, col] * d


def _runs(idx):
    """Runs of output pixels with the same first coefficient index: (start, stop, k)."""
    first = idx[:, 0]
    cut = np.flatnonzero(np.diff(first)) + 1
    starts = np.concatenate([[0], cut])
    stops = np.concatenate([cut, [len(first)]])
    return np.ascontiguousarray(np.stack([starts, stops, first[starts]], axis=1), dtype=np.int64)


@njit(nogil=True, cache=True)
def evaluate(coef, iy, wy, runs, w4, table, t0, dt, y0, x0, bore_y, bore_x, lo, hi,
             flux, sub, mode, out):
    """Rebuild a background (mode 0: out = S + R) or subtract it in the same pass
    (mode 1: out = flux − (S + R) − sub, ``sub`` an image such as the sum image, or a
    1×1 dummy for none). S is the B-spline surface of the extended coefficients
    ``coef`` (rows via iy/wy, columns via ``runs``/``w4`` from ``_runs``) clipped to
    [lo, hi] (±inf: no clipping), R the radial table at each pixel's r. ``out``
    float32."""
    h, w = out.shape
    v = np.empty(coef.shape[1])
    row = np.empty(w)
    inv_dt = 1.0 / dt
    last = len(table) - 1
    const = table[0]
    flat_table = True
    for i in range(1, len(table)):
        if table[i] != const:
            flat_table = False
            break
    use_sub = sub.shape[0] == h and sub.shape[1] == w
    clip = lo > -np.inf or hi < np.inf
    for r in range(h):
        spline_row(coef, iy, wy, r, v)
        _row_surface(v, runs, w4, row)
        if clip:
            for c in range(w):
                row[c] = min(max(row[c], lo), hi)
        # columns whose r exceeds t0: x < bore_x − d or x > bore_x + d, d² = t0² − dy²
        dy = y0 + r - bore_y
        c_lo, c_hi = w, -1                      # radial term varies outside [c_lo, c_hi]
        if not flat_table:
            d2 = t0 * t0 - dy * dy
            if d2 <= 0.0:                       # every pixel of the row is beyond t0
                c_lo, c_hi = 0, -1
            else:
                d = math.sqrt(d2)
                c_lo = max(0, min(w, int(math.floor(bore_x - d - x0)) + 1))
                c_hi = max(-1, min(w - 1, int(math.ceil(bore_x + d - x0)) - 1))
        for c in range(w):
            s = row[c]
            if c_lo <= c <= c_hi or flat_table:
                s += const
            else:
                dx = x0 + c - bore_x
                t = (math.sqrt(dx * dx + dy * dy) - t0) * inv_dt
                if t <= 0.0:
                    s += const
                elif t >= last:
                    s += table[last]
                else:
                    k = int(t)
                    f = t - k
                    s += (1.0 - f) * table[k] + f * table[k + 1]
            if mode == 0:
                out[r, c] = s
            else:
                val = flux[r, c] - s
                if use_sub:
                    val -= sub[r, c]
                out[r, c] = val


def coefficients(mesh, boundary):
    """Extended cubic B-spline coefficients of a tile grid."""
    coef = np.empty((mesh.shape[0] + 2 * PAD, mesh.shape[1] + 2 * PAD))
    bspline_coefficients(np.ascontiguousarray(mesh, dtype=np.float64), boundary, coef)
    return coef


_NO_SUB = np.zeros((1, 1), dtype=np.float32)


def render(mesh, table, geom, clip=False, boundary=LINEAR, out=None):
    """The background image (float32) of a model. ``clip``: clip the tile surface to
    the range of the grid, as photutils' zoom interpolator does."""
    out = np.empty(geom.shape, dtype=np.float32) if out is None else out
    lo, hi = (float(np.min(mesh)), float(np.max(mesh))) if clip else (-np.inf, np.inf)
    evaluate(coefficients(mesh, boundary), geom.iy, geom.wy, geom.runs, geom.w4,
             np.ascontiguousarray(table, dtype=np.float64), geom.t0, geom.dt, geom.y0, geom.x0,
             geom.bore_y, geom.bore_x, lo, hi, _NO_SUB, _NO_SUB, 0, out)
    return out


def subtract(flux, mesh, table, geom, sub=None, boundary=LINEAR, out=None):
    """flux − background (− sub) in one pass (float32), without the background image."""
    out = np.empty(geom.shape, dtype=np.float32) if out is None else out
    evaluate(coefficients(mesh, boundary), geom.iy, geom.wy, geom.runs, geom.w4,
             np.ascontiguousarray(table, dtype=np.float64), geom.t0, geom.dt, geom.y0, geom.x0,
             geom.bore_y, geom.bore_x, -np.inf, np.inf,
             np.ascontiguousarray(flux, dtype=np.float32),
             _NO_SUB if sub is None else np.ascontiguousarray(sub, dtype=np.float32), 1, out)
    return out


@njit(nogil=True, cache=True)
def subtract_frame(flux, bkg, sub, flags, out):
    """out = flux − bkg − sub (float32), NaN where the pixel is manually excluded
    (flag 2); the shenanigans indicator's input."""
    h, w = out.shape
    for r in range(h):
        for c in range(w):
            if flags[r, c] & 2:
                out[r, c] = np.nan
            else:
                out[r, c] = flux[r, c] - bkg[r, c] - sub[r, c]


@njit(nogil=True, cache=True)
def accumulate_valid(flux, flags, total, count):
    """Sum-image accumulation of one good frame: total += flux and count += 1 where
    the flux is finite and the pixel not manually excluded (flag 2). Returns the
    number of non-finite, not excluded pixels (left out)."""
    h, w = flux.shape
    bad = 0
    for r in range(h):
        for c in range(w):
            if flags[r, c] & 2:
                continue
            v = flux[r, c]
            if math.isfinite(v):
                total[r, c] += v
                count[r, c] += 1
            else:
                bad += 1
    return bad
