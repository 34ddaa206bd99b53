"""The radial (corner-glow) term of the background (numba + numpy sorts).

Distance r of each pixel from the camera boresight (x = col + 44, y = row in full-CCD
pixels; DESIGN §4); beyond ``r_cut`` (2400 px) the pixels fall in annuli of ``step``
(15 px), bins [r_cut + k·step, r_cut + (k+1)·step) as TASOC's ``binned_statistic``
(the last bin closed). Per annulus a statistic of log10(flux) — the KDE mode, or for
a first prior the median — gives a profile at the bin centres; a 3-point running
median (TASOC ``move_median_central``) smooths it; an interpolating cubic spline
(not-a-knot, as scipy's ``InterpolatedUnivariateSpline(k=3)``) through the finite
points gives R(r); at least 3 finite points are needed, else there is no radial term.

R is constant inside the first finite bin centre (as TASOC's ``ext=3``) and beyond the
outer edge of the last finite bin; unlike TASOC the spline is followed over the last
half bin (at the far corner the glow climbs ~9 e-/s per pixel: a constant from the
last centre leaves up to 65 e-/s). ``smooth_profile`` gives the smooth prior the
annulus modes are measured against (see ``kernels.background``).

R is kept as a table on a fixed grid of radii (the bin edges, subdivided 30×), so a
pixel's value is a linear interpolation and tables of different frames can be
averaged (the time smoothing of the stage).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from kernels.stats import kde_mode_sorted, median_sorted, sort_f32

TABLE_SUBDIV = 30          # table points per annulus width (15 px → 0.5 px spacing)
KDE_OVERSAMPLE = 8.0       # KDE grid spacing = bandwidth / 8
KDE_GRID = 4096


def n_bins_for(shape, origin, boresight, r_cut=2400.0, step=15.0) -> int:
    """Number of annuli TASOC forms for an image: bins = arange(r_cut, r_max + step,
    step), r_max the largest pixel distance (at a corner of the image)."""
    h, w = shape
    y0, x0 = float(origin[0]), float(origin[1]) + 44.0
    bx, by = boresight
    r_max = max(math.hypot(x - bx, y - by) for x in (x0, x0 + w - 1) for y in (y0, y0 + h - 1))
    if r_max < r_cut:
        return 0
    n_edges = len(np.arange(r_cut, r_max + step, step))
    return max(n_edges - 1, 0)


@njit(nogil=True, cache=True)
def annulus_pixels(h, w, y0, x0, bore_y, bore_x, r_cut, step, n_bins):
    """Pixels with r ≥ r_cut grouped by annulus.

    Returns (order, start, rad): ``order`` int32 flat pixel indices sorted by annulus,
    pixels of annulus k at order[start[k]:start[k+1]], ``rad`` their r (float32).
    """
    counts = np.zeros(n_bins + 1, dtype=np.int64)
    last_edge = r_cut + n_bins * step
    for i in range(h):
        dy = y0 + i - bore_y
        for j in range(w):
            dx = x0 + j - bore_x
            r = math.sqrt(dx * dx + dy * dy)
            if r < r_cut or r > last_edge:
                continue
            k = min(int((r - r_cut) / step), n_bins - 1)
            counts[k + 1] += 1
    start = np.cumsum(counts)
    n = start[n_bins]
    order = np.empty(n, dtype=np.int32)
    rad = np.empty(n, dtype=np.float32)
    fill = start[:n_bins].copy()
    for i in range(h):
        dy = y0 + i - bore_y
        for j in range(w):
            dx = x0 + j - bore_x
            r = math.sqrt(dx * dx + dy * dy)
            if r < r_cut or r > last_edge:
                continue
            k = min(int((r - r_cut) / step), n_bins - 1)
            order[fill[k]] = i * w + j
            rad[fill[k]] = r
            fill[k] += 1
    return order, start, rad


@njit(nogil=True, cache=True)
def table_lookup(table, t0, inv_dt, rad):
    last = len(table) - 1
    t = (rad - t0) * inv_dt
    if t <= 0.0:
        return table[0]
    if t >= last:
        return table[last]
    k = int(t)
    f = t - k
    return (1.0 - f) * table[k] + f * table[k + 1]


@njit(nogil=True, cache=True)
def median_radii(start, rad):
    """Median r of the pixels of each annulus (where the median of log10 flux belongs
    for a profile monotonic across the bin; the bin centre for the outermost,
    partly covered annuli would be off)."""
    n_bins = len(start) - 1
    out = np.empty(n_bins)
    big = 1
    for k in range(n_bins):
        big = max(big, start[k + 1] - start[k])
    buf = np.empty(big, dtype=np.float32)
    k1 = np.empty(big, dtype=np.uint32)
    k2 = np.empty(big, dtype=np.uint32)
    for k in range(n_bins):
        n = start[k + 1] - start[k]
        for q in range(n):
            buf[q] = rad[start[k] + q]
        sort_f32(buf, n, k1, k2)
        out[k] = median_sorted(buf, 0, n)
    return out


_INV_LN10 = 1.0 / math.log(10.0)


@njit(nogil=True, cache=True)
def _log10_ratio(x):
    """log10(1 + x) for |x| < 0.05 by its series (error < 3e-9), else exactly."""
    if -0.05 < x < 0.05:
        return x * (1.0 - x * (0.5 - x * (1.0 / 3.0 - x * (0.25 - x * 0.2)))) * _INV_LN10
    return math.log10(1.0 + x)


@njit(nogil=True, cache=True)
def gather_annuli(flat, flags, square, order, start, rad, prior, prior_lin, use_prior, t0,
                  inv_dt, out, counts):
    """For each annulus k, log10(flat[p] − square[q]) of its unflagged pixels with a
    positive argument, packed at out[start[k]:start[k] + counts[k]] (float32; the
    rest of the annulus' slots are +inf). q indexes ``order``; ``square`` is the tile
    term there. With ``use_prior`` the prior profile (log10 table ``prior``, and
    ``prior_lin`` = 10**prior) at each pixel's r is subtracted: the values become
    deviations from the prior, free of the profile's slope across the annulus."""
    n_bins = len(start) - 1
    for k in range(n_bins):
        n = start[k]
        for q in range(start[k], start[k + 1]):
            p = order[q]
            if flags[p] != 0:
                continue
            v = np.float64(flat[p]) - square[q]
            if not v > 0.0 or not math.isfinite(v):
                continue
            if use_prior:
                lv = _log10_ratio(v / table_lookup(prior_lin, t0, inv_dt, rad[q]) - 1.0)
            else:
                lv = math.log10(v)
            out[n] = lv
            n += 1
        counts[k] = n - start[k]
        for q in range(n, start[k + 1]):
            out[q] = np.inf


@njit(nogil=True, cache=True)
def sorted_annulus_stats(values, start, counts, use_mode, min_pixels, out):
    """Per annulus: KDE mode (``use_mode``) or median of its sorted values; NaN with
    fewer than ``min_pixels``."""
    grid = np.empty(KDE_GRID)
    dens = np.empty(KDE_GRID)
    for k in range(len(counts)):
        n = counts[k]
        if n < min_pixels or n == 0:
            out[k] = np.nan
            continue
        seg = values[start[k]:start[k] + n]
        if use_mode:
            out[k] = kde_mode_sorted(seg, n, grid, dens, KDE_OVERSAMPLE)
        else:
            out[k] = median_sorted(seg, 0, n)


def annulus_profile(flat, flags, square, order, start, rad, prior, t0, dt, use_mode,
                    min_pixels, out, scratch=None):
    """Per-annulus statistic of log10(flux − square): the KDE mode (``use_mode``) or
    the median; with a ``prior`` (log10 table, or None) of the deviations from it.
    Values are gathered by numba, each annulus sorted by numpy."""
    n_bins = len(start) - 1
    values = scratch if scratch is not None and len(scratch) >= len(order) else \
        np.empty(len(order), dtype=np.float32)
    counts = np.empty(n_bins, dtype=np.int64)
    use_prior = prior is not None
    prior = prior if use_prior else _NO_PRIOR
    gather_annuli(flat, flags, square, order, start, rad, prior, 10.0 ** prior, use_prior, t0,
                  1.0 / dt, values, counts)
    for k in range(n_bins):
        values[start[k]:start[k] + counts[k]].sort()
    sorted_annulus_stats(values, start, counts, use_mode, min_pixels, out)


_NO_PRIOR = np.zeros(1)


@njit(nogil=True, cache=True)
def running_median3(x, keep_ends, out):
    """Central 3-point running median ignoring NaN (TASOC ``move_median_central``
    with width 3): out[i] = nanmedian(x[i−1:i+2]) clipped to the array, so the end
    points become the mean of the last two; with ``keep_ends`` they stay as they are."""
    n = len(x)
    buf = np.empty(3)
    for i in range(n):
        if keep_ends and (i == 0 or i == n - 1):
            out[i] = x[i]
            continue
        m = 0
        for j in range(max(0, i - 1), min(n, i + 2)):
            if not math.isnan(x[j]):
                buf[m] = x[j]
                m += 1
        if m == 0:
            out[i] = np.nan
        elif m == 1:
            out[i] = buf[0]
        elif m == 2:
            out[i] = 0.5 * (buf[0] + buf[1])
        else:
            a, b, c = buf[0], buf[1], buf[2]
            out[i] = max(min(a, b), min(max(a, b), c))


@njit(nogil=True, cache=True)
def spline_not_a_knot(x, y, m2):
    """Second derivatives m2 of the interpolating cubic spline through (x, y) with
    not-a-knot ends (scipy ``InterpolatedUnivariateSpline(k=3)``), len ≥ 3; with 3
    points the parabola through them (scipy needs 4)."""
    n = len(x)
    if n == 3:
        h0 = x[1] - x[0]
        h1 = x[2] - x[1]
        c = 2.0 * ((y[2] - y[1]) / h1 - (y[1] - y[0]) / h0) / (h0 + h1)
        m2[0] = c
        m2[1] = c
        m2[2] = c
        return
    # unknowns m2[1..n-2]; m2[0] and m2[n-1] eliminated by the not-a-knot conditions
    nn = n - 2
    sub = np.zeros(nn)
    dia = np.zeros(nn)
    sup = np.zeros(nn)
    rhs = np.zeros(nn)
    hm = x[n - 2] - x[n - 3]
    hl = x[n - 1] - x[n - 2]
    for i in range(1, n - 1):
        hlft = x[i] - x[i - 1]
        hrgt = x[i + 1] - x[i]
        a, b, c = hlft, 2.0 * (hlft + hrgt), hrgt
        r = 6.0 * ((y[i + 1] - y[i]) / hrgt - (y[i] - y[i - 1]) / hlft)
        if i == 1:                              # m0 = ((h0 + h1) m1 − h0 m2) / h1
            b += a * (hlft + hrgt) / hrgt
            c -= a * hlft / hrgt
            a = 0.0
        if i == n - 2:                          # m_{n-1} = ((hm + hl) m_{n-2} − hl m_{n-3}) / hm
            b += c * (hm + hl) / hm
            a -= c * hl / hm
            c = 0.0
        sub[i - 1] = a
        dia[i - 1] = b
        sup[i - 1] = c
        rhs[i - 1] = r
    for i in range(1, nn):                      # Thomas algorithm
        w = sub[i] / dia[i - 1]
        dia[i] -= w * sup[i - 1]
        rhs[i] -= w * rhs[i - 1]
    sol = np.empty(nn)
    sol[nn - 1] = rhs[nn - 1] / dia[nn - 1]
    for i in range(nn - 2, -1, -1):
        sol[i] = (rhs[i] - sup[i] * sol[i + 1]) / dia[i]
    for i in range(nn):
        m2[i + 1] = sol[i]
    h0 = x[1] - x[0]
    h1 = x[2] - x[1]
    m2[0] = ((h0 + h1) * m2[1] - h0 * m2[2]) / h1
    m2[n - 1] = ((hm + hl) * m2[n - 2] - hl * m2[n - 3]) / hm


@njit(nogil=True, cache=True)
def spline_eval(x, y, m2, t):
    """The spline at t; beyond the end knots the end segments' cubics continue."""
    n = len(x)
    lo = 0
    hi = n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if x[mid] <= t:
            lo = mid
        else:
            hi = mid
    h = x[hi] - x[lo]
    a = (x[hi] - t) / h
    b = (t - x[lo]) / h
    return (a * y[lo] + b * y[hi]
            + ((a * a * a - a) * m2[lo] + (b * b * b - b) * m2[hi]) * h * h / 6.0)


@njit(nogil=True, cache=True)
def profile_to_table(knots, prof, base, r_cut, step, keep_ends, t0, dt, log_table, lin_table):
    """Running median, spline and tabulation of a profile.

    The 3-point running median acts on ``prof`` (per-bin log10 values, or deviations
    from a prior profile), then ``base`` (the prior at the bin centres, or zeros) is
    added and the spline fitted through (knots, ·) — the bin centres, or for a prior
    the mean radius of each bin's pixels. Fills ``log_table`` (spline values) and
    ``lin_table`` (10**spline) at radii t0 + i·dt. The spline is constant inside the
    first finite knot (as TASOC) and followed up to the outer edge of the last finite
    bin, constant beyond. Returns False (tables zeroed) with fewer than 3 finite points.
    """
    n = len(prof)
    sm = np.empty(n)
    running_median3(prof, keep_ends, sm)
    good = 0
    for i in range(n):
        if not math.isnan(sm[i]):
            good += 1
    if good < 3:
        log_table[:] = 0.0
        lin_table[:] = 0.0
        return False
    x = np.empty(good)
    y = np.empty(good)
    k = 0
    last = 0
    for i in range(n):
        if not math.isnan(sm[i]):
            x[k] = knots[i]
            y[k] = sm[i] + base[i]
            k += 1
            last = i
    m2 = np.empty(good)
    spline_not_a_knot(x, y, m2)
    r_lo = x[0]
    r_hi = r_cut + (last + 1) * step
    for i in range(len(log_table)):
        v = spline_eval(x, y, m2, min(max(t0 + i * dt, r_lo), r_hi))
        log_table[i] = v
        lin_table[i] = 10.0 ** v
    return True


def _bspline_basis(t):
    """Uniform cubic B-spline weights of the 4 basis functions around local t ∈ [0, 1)."""
    t2, t3 = t * t, t * t * t
    return np.stack([(1 - t) ** 3 / 6.0, (3 * t3 - 6 * t2 + 4) / 6.0,
                     (-3 * t3 + 3 * t2 + 3 * t + 1) / 6.0, t3 / 6.0], axis=-1)


def _design(x, a, h, m):
    """Rows of the uniform cubic B-spline design matrix (m intervals of width h from a)."""
    u = np.clip((np.asarray(x, dtype=float) - a) / h, 0.0, m - 1e-9)
    i = np.floor(u).astype(int)
    w = _bspline_basis(u - i)
    d = np.zeros((len(u), m + 3))
    for k in range(4):
        d[np.arange(len(u)), i + k] = w[:, k]
    return d


def smooth_profile(x, y, r_lo, r_hi, spacing, t0, dt, out):
    """Least-squares cubic B-spline through the finite (x, y), uniform knots about
    ``spacing`` apart over [r_lo, r_hi], tabulated into ``out`` at t0 + i·dt (held
    constant outside [r_lo, r_hi]). A smooth version of a profile, to detrend annuli
    with: its shape across one 15-px bin is set by many bins, so one bad bin (a star,
    a masked column) does not put a bump into it. Returns False (``out`` untouched)
    with fewer than 4 finite points."""
    ok = np.isfinite(y)
    n = int(ok.sum())
    if n < 4 or not r_hi > r_lo:
        return False
    m = max(1, min(int(round((r_hi - r_lo) / spacing)), n - 3))
    h = (r_hi - r_lo) / m
    d = _design(x[ok], r_lo, h, m)
    coef, *_ = np.linalg.lstsq(d, y[ok], rcond=None)
    grid = np.clip(t0 + dt * np.arange(len(out)), r_lo, r_hi)
    out[:] = _design(grid, r_lo, h, m) @ coef
    return True
