"""Background of one frame: the masked 3-fold iteration between the radial
(corner-glow) term and the tile term (rendering and subtraction: ``kernels.surface``).

Method (DESIGN §4, TASOC ``fit_background``): pixels flagged by ``kernels.flags.mask``
are left out. Each iteration k: (a) radial term R_k from the image minus the previous
tile term S_{k−1}: per 15-px annulus beyond r = 2400 px the KDE mode of log10 flux,
3-point running median, cubic spline in r, constant outside the bins; (b) tile term
S_k from the image minus R_k: 64×64 sigma-clipped (3σ, 5 iterations) SExtractor modes,
tiles with ≤ 50 % of their pixels left excluded and filled (IDW), 3×3 median over the
grid, cubic B-spline to every pixel. Background = R_3 + S_3.

Where this differs from TASOC, and why (simulated 2048² frames of camera 1 CCD 3,
corner glow ~2500 e-/s; without these the corner-region RMS was 1.8 e-/s, with them
0.06–0.11 e-/s):
* S_0 is not 0 but a glow-free guess — a quadratic surface through the modes of the
  tiles the glow does not reach — and R_1 is taken of image − S_0 + its level. With
  S_0 = 0 the profile carries the sky's average along each annulus, which changes
  with r; where R turns constant inside the first bin this kink leaves a 1.5 e-/s
  ridge along r ≈ 2400 that 64-px tiles cannot follow.
* The annulus mode is taken of the deviations from a smooth prior profile (a
  least-squares cubic B-spline with knots every 4 annuli through the previous
  profile; for the first, through annulus medians placed at the annuli's median
  radii), prior(centre) added back. At the far corner the glow climbs ~9 e-/s per
  pixel: a raw annulus is a flat 130 e-/s-wide distribution whose "mode" is
  arbitrary, and stars or masked pixels (gaps in the distribution) move it by e-/s.
  The 3-point running median acts on the deviations, so it removes outliers without
  pulling the steep end of the profile down by half a bin.
* The spline is followed to the outer edge of the last bin and held constant beyond
  it (TASOC: constant from the last bin centre — up to 65 e-/s low at the corner).
* Tile-grid edges: the 3×3 median and the B-spline continue the grid linearly
  (photutils ignores cells outside the grid and mirrors it: a gradient flattens in the
  outer half-tile and edge tiles are pulled half a tile inward — ~1 e-/s RMS along the
  edges under a 0.2 e-/s/px scattered-light ramp). ``boundary=REFLECT`` restores
  photutils' behaviour (the equivalence tests use it).

Speed without changing the result: a tile wholly inside the first annulus centre sees
R as a constant c and every statistic here shifts with a constant, so its mode is
computed once per frame and c subtracted per iteration; only the corner tiles are
redone. S is needed at full size only at the end (in between, at the annulus pixels).
Sorting — the core of every median and clip — is numpy's SIMD sort between numba
passes.

A frame's background is kept as a compact model — the filtered tile grid ``mesh``
(ny×nx) and the radial table (R on a fixed grid of radii) — from which ``render``
rebuilds the image. Both enter the image linearly, so the stage's time smoothing
averages models instead of images.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from kernels.radial import (TABLE_SUBDIV, annulus_pixels, annulus_profile, median_radii,
                            n_bins_for, profile_to_table, smooth_profile)
from kernels import surface as _surface
from kernels.surface import _runs
from kernels.tiles import (LINEAR, PAD, REFLECT, axis_weights, bspline_coefficients,
                           fill_excluded, median3x3, spline_row, tile_grid, tile_modes)

FLUX_CUTOFF = 8e4
BOX = 64
SIGMA = 3.0
MAXITERS = 5
EXCLUDE_PERCENTILE = 50.0
ITERATIONS = 3
RADIAL_CUTOFF = 2400.0
RADIAL_STEP = 15.0
MIN_ANNULUS_PIXELS = 1
IDW_NEIGHBORS = 10
BOUNDARY = LINEAR          # tile-grid edges (REFLECT: photutils)
PRIOR_SPACING = 4.0        # annuli between the knots of the smooth detrending prior

__all__ = ["Geometry", "geometry", "fit", "render", "subtract", "background", "coefficients",
           "subtract_frame", "accumulate_valid", "LINEAR", "REFLECT"]


class Geometry(NamedTuple):
    """Everything about a frame's pixel grid the background needs (constant for a
    cube): tile grid, B-spline weights, annuli. Built by ``geometry``."""
    shape: tuple
    by: int
    bx: int
    iy: np.ndarray
    wy: np.ndarray
    ix: np.ndarray
    wx: np.ndarray
    runs: np.ndarray        # column runs sharing B-spline coefficients (see ``_runs``)
    w4: np.ndarray          # (4, W) column weights, contiguous
    y0: float               # full-CCD y of row 0
    x0: float               # full-CCD x (= col + 44) of column 0
    bore_y: float
    bore_x: float
    r_cut: float
    step: float
    n_bins: int
    order: np.ndarray       # annulus pixels (flat indices), grouped by annulus
    start: np.ndarray
    rad: np.ndarray
    knots: np.ndarray       # median radius of each annulus' pixels
    varying: np.ndarray     # int8 (ny, nx): 1 where the radial term varies in the tile
    t0: float               # radial table: R at t0 + i·dt, i < n_table
    dt: float
    n_table: int

    @property
    def grid(self):
        return self.varying.shape

    @property
    def has_annuli(self) -> bool:
        return self.n_bins > 0 and len(self.order) > 0


def geometry(shape, origin=(0, 0), boresight=None, box=BOX, r_cut=RADIAL_CUTOFF,
             step=RADIAL_STEP) -> Geometry:
    """The geometry of frames of ``shape`` whose pixel [0, 0] is CCD science pixel
    ``origin`` (row, col), for a camera boresight (x, y) in full-CCD pixels (None: no
    radial term)."""
    h, w = int(shape[0]), int(shape[1])
    ny, nx, by, bx = tile_grid((h, w), box)
    iy, wy = axis_weights(h, by)
    ix, wx = axis_weights(w, bx)
    y0, x0 = float(origin[0]), float(origin[1]) + 44.0
    if boresight is None:
        bore_x, bore_y, n_bins = 0.0, 0.0, 0
    else:
        bore_x, bore_y = float(boresight[0]), float(boresight[1])
        n_bins = n_bins_for((h, w), origin, (bore_x, bore_y), r_cut, step)
    varying = np.zeros((ny, nx), dtype=np.int8)
    if n_bins > 0:
        order, start, rad = annulus_pixels(h, w, y0, x0, bore_y, bore_x, r_cut, step, n_bins)
        knots = median_radii(start, rad)
        for i in range(ny):
            for j in range(nx):
                ys = (y0 + i * by, y0 + min((i + 1) * by, h) - 1)
                xs = (x0 + j * bx, x0 + min((j + 1) * bx, w) - 1)
                far = max(math.hypot(x - bore_x, y - bore_y) for x in xs for y in ys)
                varying[i, j] = far > r_cut
        t0, dt, n_table = r_cut, step / TABLE_SUBDIV, n_bins * TABLE_SUBDIV + 1
    else:
        order = np.zeros(0, dtype=np.int32)
        start = np.zeros(1, dtype=np.int64)
        rad = np.zeros(0, dtype=np.float32)
        knots = np.zeros(0)
        t0, dt, n_table = r_cut, step, 1
    return Geometry((h, w), by, bx, iy, wy, ix, wx, _runs(ix), np.ascontiguousarray(wx.T), y0,
                    x0, bore_y, bore_x, r_cut, step, n_bins, order, start, rad, knots, varying,
                    t0, dt, n_table)


# -- numba pieces of the iteration --------------------------------------------------------
@njit(nogil=True, cache=True)
def filter_mesh(mesh, linear_edges, out):
    """Fill excluded (NaN) tiles by IDW and 3×3-median the grid; returns the number
    of good tiles (0: out is all NaN)."""
    work = mesh.copy()
    ngood = fill_excluded(work, IDW_NEIGHBORS, 1.0)
    if ngood == 0:
        out[:, :] = np.nan
        return 0
    median3x3(work, linear_edges, out)
    return ngood


@njit(nogil=True, cache=True)
def square_at_annuli(coef, iy, wy, ix, wx, order, width, out):
    """The tile surface at the annulus pixels (flat indices ``order``, row-major
    within each annulus: the row interpolation is reused along a row)."""
    v = np.empty(coef.shape[1])
    last = -1
    for q in range(len(order)):
        p = order[q]
        r = p // width
        c = p - r * width
        if r != last:
            spline_row(coef, iy, wy, r, v)
            last = r
        out[q] = wx[c, 0] * v[ix[c, 0]] + wx[c, 1] * v[ix[c, 1]] + wx[c, 2] * v[ix[c, 2]] \
            + wx[c, 3] * v[ix[c, 3]]


@njit(nogil=True, cache=True)
def sky_guess(base, varying, by, bx, order, width, out):
    """Glow-free first guess of the tile term at the annulus pixels: the least-squares
    quadratic surface (a plane or a constant with fewer tiles) through the unexcluded
    modes of the tiles with varying == 0, minus their median. Returns False (``out``
    untouched) when no tile qualifies."""
    ny, nx = base.shape
    n = 0
    for i in range(ny):
        for j in range(nx):
            if varying[i, j] == 0 and not math.isnan(base[i, j]):
                n += 1
    if n == 0:
        return False
    npar = 6 if n >= 12 else (3 if n >= 4 else 1)
    a = np.zeros((npar, npar))
    rhs = np.zeros(npar)
    vals = np.empty(n)
    f = np.empty(6)
    su = 0.5 * nx * bx
    sv = 0.5 * ny * by
    k = 0
    for i in range(ny):
        for j in range(nx):
            if varying[i, j] != 0 or math.isnan(base[i, j]):
                continue
            _quad_terms(((j + 0.5) * bx - su) / su, ((i + 0.5) * by - sv) / sv, f)
            z = base[i, j]
            vals[k] = z
            k += 1
            for p in range(npar):
                rhs[p] += f[p] * z
                for q in range(npar):
                    a[p, q] += f[p] * f[q]
    coef = np.linalg.solve(a, rhs)
    level = np.median(vals)
    for q in range(len(order)):
        pix = order[q]
        r = pix // width
        c = pix - r * width
        _quad_terms((c + 0.5 - su) / su, (r + 0.5 - sv) / sv, f)
        acc = 0.0
        for p in range(npar):
            acc += coef[p] * f[p]
        out[q] = acc - level
    return True


@njit(nogil=True, cache=True)
def _quad_terms(u, v, f):
    f[0] = 1.0
    f[1] = u
    f[2] = v
    f[3] = u * u
    f[4] = v * v
    f[5] = u * v


@njit(nogil=True, cache=True)
def _shift_mesh(base, c, mesh):
    ny, nx = base.shape
    for i in range(ny):
        for j in range(nx):
            mesh[i, j] = base[i, j] - c


# -- the iteration --------------------------------------------------------------------------
def _tile_list(mask2d):
    return np.ascontiguousarray(np.argwhere(mask2d), dtype=np.int64)


def fit(img, flags, geom: Geometry, iterations=ITERATIONS, sigma=SIGMA, maxiters=MAXITERS,
        exclude_percentile=EXCLUDE_PERCENTILE, min_pixels=MIN_ANNULUS_PIXELS,
        boundary=BOUNDARY):
    """Background model of one frame: (mesh, table, has_radial).

    img float32 (H, W); flags uint8 (H, W) from ``kernels.flags.mask`` (nonzero: not
    used). ``mesh`` (ny, nx): the filtered tile grid; ``table``: R in e-/s at radii
    geom.t0 + i·geom.dt (zeros without a radial term). All-NaN mesh: nothing to fit.
    """
    img = np.ascontiguousarray(img, dtype=np.float32)
    flags = np.ascontiguousarray(flags, dtype=np.uint8)
    ny, nx = geom.grid
    by, bx = geom.by, geom.bx
    min_good = (1.0 - exclude_percentile / 100.0) * by * bx
    linear = boundary == LINEAR
    stats = dict(sigma=sigma, maxiters=maxiters, min_good=min_good)

    base = np.empty((ny, nx))
    ngood = np.zeros((ny, nx), dtype=np.int64)
    scratch = np.empty((ny * nx, by * bx), dtype=np.float32)
    tile_modes(img, flags, by, bx, _tile_list(np.ones((ny, nx), bool)), base, ngood,
               scratch=scratch, **stats)
    mesh_out = np.empty((ny, nx))
    table = np.zeros(geom.n_table)
    has_radial = False
    if geom.has_annuli and iterations > 0:
        flat, fflat = img.ravel(), flags.ravel()
        corner = _tile_list(geom.varying != 0)
        centres = geom.r_cut + (np.arange(geom.n_bins) + 0.5) * geom.step
        prof = np.empty(geom.n_bins)
        square = np.zeros(len(geom.order))
        prior = np.zeros(geom.n_table)
        log_table = np.zeros(geom.n_table)
        values = np.empty(len(geom.order), dtype=np.float32)
        mesh = np.empty((ny, nx))
        coef = np.empty((ny + 2 * PAD, nx + 2 * PAD))
        sky_guess(base, geom.varying, by, bx, geom.order, geom.shape[1], square)
        # prior profile: annulus medians at the annuli's median radii
        annulus_profile(flat, fflat, square, geom.order, geom.start, geom.rad, None, geom.t0,
                        geom.dt, False, min_pixels, prof, values)
        has_radial = profile_to_table(geom.knots, prof, np.zeros(geom.n_bins), geom.r_cut,
                                      geom.step, True, geom.t0, geom.dt, prior, table)
        edge = geom.r_cut + geom.n_bins * geom.step
        if has_radial:
            smooth_profile(geom.knots, prof, geom.knots[np.isfinite(prof)][0], edge,
                           PRIOR_SPACING * geom.step, geom.t0, geom.dt, prior)
        for it in range(iterations if has_radial else 0):
            annulus_profile(flat, fflat, square, geom.order, geom.start, geom.rad, prior,
                            geom.t0, geom.dt, True, min_pixels, prof, values)
            has_radial = profile_to_table(centres, prof, np.interp(centres, geom.t0 + geom.dt *
                                                                   np.arange(geom.n_table), prior),
                                          geom.r_cut, geom.step, False, geom.t0, geom.dt,
                                          log_table, table)
            if not has_radial:
                break
            _shift_mesh(base, table[0], mesh)
            tile_modes(img, flags, by, bx, corner, mesh, ngood, scratch=scratch,
                       radial=(table, geom.t0, geom.dt, geom.y0, geom.x0, geom.bore_y,
                               geom.bore_x), **stats)
            if filter_mesh(mesh, linear, mesh_out) == 0 or it == iterations - 1:
                break
            bspline_coefficients(mesh_out, boundary, coef)
            square_at_annuli(coef, geom.iy, geom.wy, geom.ix, geom.wx, geom.order,
                             geom.shape[1], square)
            prior[:] = log_table
            vals = np.interp(centres, geom.t0 + geom.dt * np.arange(geom.n_table), log_table)
            vals[~np.isfinite(prof)] = np.nan
            smooth_profile(centres, vals, centres[np.isfinite(prof)][0], edge,
                           PRIOR_SPACING * geom.step, geom.t0, geom.dt, prior)
    if not has_radial:
        table[:] = 0.0
        filter_mesh(base, linear, mesh_out)
    return mesh_out, table, has_radial


# -- rebuilding the image (kernels.surface) -------------------------------------------------
def coefficients(mesh, boundary=BOUNDARY):
    """Extended cubic B-spline coefficients of a tile grid."""
    return _surface.coefficients(mesh, boundary)


def render(mesh, table, geom: Geometry, clip=False, boundary=BOUNDARY, out=None):
    """The background image (float32) of a model. ``clip``: clip the tile surface to
    the range of the grid, as photutils' zoom interpolator does."""
    return _surface.render(mesh, table, geom, clip=clip, boundary=boundary, out=out)


def subtract(flux, mesh, table, geom: Geometry, sub=None, boundary=BOUNDARY, out=None):
    """flux − background (− sub) in one pass (float32), without the background image."""
    return _surface.subtract(flux, mesh, table, geom, sub=sub, boundary=boundary, out=out)


subtract_frame = _surface.subtract_frame
accumulate_valid = _surface.accumulate_valid


def background(img, geom: Geometry, flags=None, clip=False, **kwargs):
    """Mask, fit and render one frame: (background float32, flags uint8)."""
    from kernels.flags import mask

    if flags is None:
        flags = mask(img)
    mesh, table, _ = fit(img, flags, geom, **kwargs)
    return render(mesh, table, geom, clip=clip, boundary=kwargs.get("boundary", BOUNDARY)), flags


