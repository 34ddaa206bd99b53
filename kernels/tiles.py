"""The tile (mesh) term of the background (numba): masked sigma-clipped statistics in
box×box tiles, filling of excluded tiles, a 3×3 median filter over the tile grid, and
cubic B-spline interpolation of the grid to every pixel.

Geometry follows photutils ``Background2D`` so the two agree on the same input: tiles
start at pixel (0, 0); the last row/column of tiles may be partial; the full-size
interpolation treats tile (i, j) as centred on pixel ((i + ½)·by − ½, (j + ½)·bx − ½)
(scipy ``zoom(mesh, box, order=3, mode="reflect", grid_mode=True)``, boundary REFLECT;
the pipeline uses LINEAR, which lets a gradient carry on into the outer half-tile
instead of flattening it). A tile is
excluded when no more than (1 − exclude_percentile/100) of a full box's pixels are
left after masking and sigma clipping; excluded tiles are filled by inverse-distance
weighting of the 10 nearest good tiles (power 1), as photutils does.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from kernels.stats import nanmedian_small, reflect_index, sextractor_sorted


def tile_grid(shape, box=64):
    """(ny, nx, by, bx): number of tiles and tile size for an image of ``shape``; the
    box shrinks to the image for images smaller than one box (a single tile)."""
    by, bx = min(box, shape[0]), min(box, shape[1])
    return -(-shape[0] // by), -(-shape[1] // bx), by, bx


@njit(nogil=True, cache=True)
def radial_at(rad, table, t0, inv_dt, last):
    """Table lookup with linear interpolation, constant outside."""
    t = (rad - t0) * inv_dt
    if t <= 0.0:
        return np.float64(table[0])
    if t >= last:
        return np.float64(table[last])
    k = int(t)
    f = t - k
    return (1.0 - f) * table[k] + f * table[k + 1]


@njit(nogil=True, cache=True)
def gather_tiles(img, flags, by, bx, tiles, use_table, table, t0, inv_dt, y0, x0, bore_y,
                 bore_x, out, counts):
    """Copy the unflagged finite pixels of each listed tile into a row of ``out``
    (float32, (len(tiles), by·bx)), padded with +inf; counts[k] = pixels copied.

    tiles: (k, 2) int64 (tile row, tile column). With ``use_table`` each value has
    the radial term R(r) subtracted (table lookup at r = hypot(x0 + c − bore_x,
    y0 + r − bore_y), linear, constant outside the table).
    """
    h, w = img.shape
    last = len(table) - 1
    size = out.shape[1]
    for k in range(tiles.shape[0]):
        r0 = tiles[k, 0] * by
        c0 = tiles[k, 1] * bx
        r1 = min(r0 + by, h)
        c1 = min(c0 + bx, w)
        n = 0
        for r in range(r0, r1):
            dy = y0 + r - bore_y
            for c in range(c0, c1):
                v = img[r, c]
                if flags[r, c] == 0 and math.isfinite(v):
                    if use_table:
                        dx = x0 + c - bore_x
                        v = v - radial_at(math.sqrt(dx * dx + dy * dy), table, t0, inv_dt, last)
                    out[k, n] = v
                    n += 1
        counts[k] = n
        for q in range(n, size):
            out[k, q] = np.inf


@njit(nogil=True, cache=True)
def sorted_tile_stats(rows, counts, tiles, sigma, maxiters, min_good, mesh, ngood):
    """Sigma-clipped SExtractor background of each sorted row (its first counts[k]
    values) into mesh[tile] — NaN when the tile keeps ≤ min_good pixels."""
    for k in range(tiles.shape[0]):
        bkg, kept = sextractor_sorted(rows[k], counts[k], sigma, maxiters)
        i = tiles[k, 0]
        j = tiles[k, 1]
        ngood[i, j] = kept
        mesh[i, j] = bkg if kept > min_good else np.nan


def tile_modes(img, flags, by, bx, tiles, mesh, ngood, sigma=3.0, maxiters=5, min_good=0.0,
               radial=None, scratch=None):
    """Sigma-clipped SExtractor modes of the listed tiles (photutils ``Background2D``
    statistics) into ``mesh``/``ngood``. ``radial``: (table, t0, dt, y0, x0, bore_y,
    bore_x) to subtract the radial term first. The rows are sorted with numpy's
    (SIMD) sort between two numba passes; ``scratch`` may hold a reusable buffer."""
    n = len(tiles)
    if n == 0:
        return
    size = by * bx
    rows = scratch[:n] if scratch is not None and scratch.shape[0] >= n and \
        scratch.shape[1] == size else np.empty((n, size), dtype=np.float32)
    counts = np.empty(n, dtype=np.int64)
    if radial is None:
        gather_tiles(img, flags, by, bx, tiles, False, _ZERO_TABLE, 0.0, 1.0, 0.0, 0.0, 0.0,
                     0.0, rows, counts)
    else:
        table, t0, dt, y0, x0, bore_y, bore_x = radial
        gather_tiles(img, flags, by, bx, tiles, True, table, t0, 1.0 / dt, y0, x0, bore_y,
                     bore_x, rows, counts)
    rows.sort(axis=1)
    sorted_tile_stats(rows, counts, tiles, sigma, maxiters, min_good, mesh, ngood)


_ZERO_TABLE = np.zeros(1)


@njit(nogil=True, cache=True)
def fill_excluded(mesh, n_neighbors, power):
    """Replace NaN tiles by inverse-distance weighting of the ``n_neighbors`` nearest
    good tiles (grid-index distance; ties broken by row-major order). In place;
    returns the number of good tiles (0: nothing to fill from)."""
    ny, nx = mesh.shape
    ngood = 0
    for i in range(ny):
        for j in range(nx):
            if not math.isnan(mesh[i, j]):
                ngood += 1
    if ngood == 0 or ngood == ny * nx:
        return ngood
    gy = np.empty(ngood, dtype=np.int64)
    gx = np.empty(ngood, dtype=np.int64)
    gv = np.empty(ngood)
    k = 0
    for i in range(ny):
        for j in range(nx):
            if not math.isnan(mesh[i, j]):
                gy[k] = i
                gx[k] = j
                gv[k] = mesh[i, j]
                k += 1
    kk = min(n_neighbors, ngood)
    d2 = np.empty(ngood)
    order = np.empty(ngood, dtype=np.int64)
    filled = mesh.copy()
    for i in range(ny):
        for j in range(nx):
            if not math.isnan(mesh[i, j]):
                continue
            for g in range(ngood):
                d2[g] = (gy[g] - i) ** 2 + (gx[g] - j) ** 2
            order[:] = np.argsort(d2, kind="mergesort")[:]
            num = 0.0
            den = 0.0
            for q in range(kk):
                g = order[q]
                wgt = 1.0 / math.sqrt(d2[g]) ** power
                num += wgt * gv[g]
                den += wgt
            filled[i, j] = num / den
    mesh[:, :] = filled
    return ngood


@njit(nogil=True, cache=True)
def _continued(mesh, a, b):
    """mesh[a, b] for a row index a up to one step outside the grid (b inside),
    continued linearly: 2·edge − next."""
    ny = mesh.shape[0]
    if a < 0:
        return 2.0 * mesh[0, b] - mesh[min(1, ny - 1), b]
    if a >= ny:
        return 2.0 * mesh[ny - 1, b] - mesh[max(ny - 2, 0), b]
    return mesh[a, b]


@njit(nogil=True, cache=True)
def _grid_value(mesh, a, b, linear):
    """mesh[a, b] for a cell up to one step outside the grid: NaN (photutils) or,
    with ``linear``, the grid continued linearly (2·edge − next, per axis)."""
    ny, nx = mesh.shape
    if 0 <= a < ny and 0 <= b < nx:
        return mesh[a, b]
    if not linear:
        return np.nan
    if b < 0:
        return 2.0 * _continued(mesh, a, 0) - _continued(mesh, a, min(1, nx - 1))
    if b >= nx:
        return 2.0 * _continued(mesh, a, nx - 1) - _continued(mesh, a, max(nx - 2, 0))
    return _continued(mesh, a, b)


@njit(nogil=True, cache=True)
def median3x3(mesh, linear, out):
    """3×3 median filter over the grid, NaN cells ignored. Cells outside the grid are
    ignored too (scipy ``generic_filter(nanmedian, mode="constant", cval=nan)``, as
    photutils) or, with ``linear``, taken from the grid continued linearly, so a
    gradient does not pull the edge tiles toward the interior."""
    ny, nx = mesh.shape
    buf = np.empty(9)
    for i in range(ny):
        for j in range(nx):
            n = 0
            for a in range(i - 1, i + 2):
                for b in range(j - 1, j + 2):
                    v = _grid_value(mesh, a, b, linear)
                    if not math.isnan(v):
                        buf[n] = v
                        n += 1
            out[i, j] = nanmedian_small(buf, n)


# -- cubic B-spline interpolation (scipy.ndimage, mode "reflect", grid_mode) ----------------
REFLECT = 0     # photutils/scipy "reflect": half-sample symmetric (zero slope at edges)
LINEAR = 1      # point-symmetric about the edge sample: linear trends carry on to the edge
PAD = 2         # extended coefficient arrays carry 2 extra cells on each side


@njit(nogil=True, cache=True)
def _prefilter_1d(f, c, n, boundary):
    """Cubic B-spline coefficients c of samples f (length n): (c[i−1] + 4c[i] +
    c[i+1])/6 = f[i] with, for REFLECT, c[−1] = c[0], c[n] = c[n−1] and, for LINEAR,
    c[−1] = 2c[0] − c[1], c[n] = 2c[n−1] − c[n−2] (so c[0] = f[0], c[n−1] = f[n−1]).
    Tridiagonal solve (Thomas)."""
    if n == 1:
        c[0] = f[0]
        return
    diag = np.empty(n)
    sub = np.ones(n)
    sup = np.ones(n)
    rhs = np.empty(n)
    for i in range(n):
        diag[i] = 4.0
        rhs[i] = 6.0 * f[i]
    if boundary == REFLECT:
        diag[0] = 5.0
        diag[n - 1] = 5.0
    else:
        diag[0] = 6.0
        sup[0] = 0.0
        diag[n - 1] = 6.0
        sub[n - 1] = 0.0
    for i in range(1, n):
        m = sub[i] / diag[i - 1]
        diag[i] -= m * sup[i - 1]
        rhs[i] -= m * rhs[i - 1]
    c[n - 1] = rhs[n - 1] / diag[n - 1]
    for i in range(n - 2, -1, -1):
        c[i] = (rhs[i] - sup[i] * c[i + 1]) / diag[i]


@njit(nogil=True, cache=True)
def _extend_1d(c, n, boundary, out):
    """out[k + PAD] = c[k] for −PAD ≤ k < n + PAD, extended per ``boundary``."""
    for k in range(-PAD, n + PAD):
        if 0 <= k < n:
            v = c[k]
        elif boundary == REFLECT or n == 1:
            v = c[reflect_index(k, n)]
        elif k < 0:
            v = 2.0 * c[0] - c[min(-k, n - 1)]
        else:
            v = 2.0 * c[n - 1] - c[max(2 * (n - 1) - k, 0)]
        out[k + PAD] = v


@njit(nogil=True, cache=True)
def bspline_coefficients(mesh, boundary, coef):
    """2-D cubic B-spline coefficients of the grid (separable), extended by PAD cells
    on each side: ``coef`` has shape (ny + 2·PAD, nx + 2·PAD)."""
    ny, nx = mesh.shape
    tmp = np.empty((ny, nx + 2 * PAD))
    f = np.empty(max(ny, nx))
    c = np.empty(max(ny, nx))
    e = np.empty(max(ny, nx) + 2 * PAD)
    for i in range(ny):
        for j in range(nx):
            f[j] = mesh[i, j]
        _prefilter_1d(f, c, nx, boundary)
        _extend_1d(c, nx, boundary, e)
        for j in range(nx + 2 * PAD):
            tmp[i, j] = e[j]
    for j in range(nx + 2 * PAD):
        for i in range(ny):
            f[i] = tmp[i, j]
        _prefilter_1d(f, c, ny, boundary)
        _extend_1d(c, ny, boundary, e)
        for i in range(ny + 2 * PAD):
            coef[i, j] = e[i]


@njit(nogil=True, cache=True)
def spline_weights(n_out, box, idx, wts):
    """For output pixels 0..n_out−1 along one axis: the 4 (extended) coefficient
    indices and cubic B-spline weights, pixel p at grid coordinate (p + ½)/box − ½."""
    for p in range(n_out):
        x = (p + 0.5) / box - 0.5
        k0 = int(math.floor(x)) - 1
        for a in range(4):
            k = k0 + a
            t = abs(x - k)
            if t < 1.0:
                wv = (4.0 - 6.0 * t * t + 3.0 * t * t * t) / 6.0
            elif t < 2.0:
                wv = (2.0 - t) ** 3 / 6.0
            else:
                wv = 0.0
            idx[p, a] = k + PAD
            wts[p, a] = wv


def axis_weights(n_out, box):
    idx = np.empty((n_out, 4), dtype=np.int64)
    wts = np.empty((n_out, 4), dtype=np.float64)
    spline_weights(n_out, box, idx, wts)
    return idx, wts


@njit(nogil=True, cache=True)
def spline_row(coef, iy, wy, row, out):
    """Extended coefficients interpolated along y to image row ``row`` (all columns)."""
    nx = coef.shape[1]
    for j in range(nx):
        out[j] = (wy[row, 0] * coef[iy[row, 0], j] + wy[row, 1] * coef[iy[row, 1], j]
                  + wy[row, 2] * coef[iy[row, 2], j] + wy[row, 3] * coef[iy[row, 3], j])


@njit(nogil=True, cache=True)
def interpolate_grid(coef, iy, wy, ix, wx, lo, hi, out):
    """Full-size surface from the B-spline coefficients into ``out`` (H×W), clipped
    to [lo, hi] (pass ±inf for no clipping). The plain form of
    ``kernels.surface.evaluate``'s tile part (kept as the reference it is tested by)."""
    h, w = out.shape
    v = np.empty(coef.shape[1])
    for r in range(h):
        spline_row(coef, iy, wy, r, v)
        for c in range(w):
            s = (wx[c, 0] * v[ix[c, 0]] + wx[c, 1] * v[ix[c, 1]]
                 + wx[c, 2] * v[ix[c, 2]] + wx[c, 3] * v[ix[c, 3]])
            if s < lo:
                s = lo
            elif s > hi:
                s = hi
            out[r, c] = s
