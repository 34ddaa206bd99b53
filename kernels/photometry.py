"""Aperture photometry of many apertures at once (numba): one pass over a time block.

``aperture_photometry(flux, flux_err, background, pixel_flags, labels, n_labels)``
takes a block of a cube over a rectangular region — (T, R, C) arrays — and a label
image (R, C) int32 where 0 is "no aperture" and 1..n_labels name the apertures
(disjoint masks, as K2P2 makes them). For every aperture k (row k−1 of the outputs)
and cadence t it returns, in ONE pass over the aperture pixels of each frame:

* ``flux``      Σ corrected pixels, corrected = flux − background (or ``flux`` as given
                when ``subtract=False``: the caller passed corrected flux already)
* ``flux_err``  √Σ flux_err²
* ``flux_bkg``  Σ background
* ``centroid_row``, ``centroid_col``: flux-weighted centroid Σ v·r / Σ v, Σ v·c / Σ v
                of the corrected values v, in the region's pixel coordinates (pixel
                centres at integers, 0-based; the caller adds the region's origin).
                NaN when Σ v ≤ 0 (a centroid of non-positive light is undefined).
* ``pixel_flags`` bitwise OR of ``pixel_flags`` over the aperture's pixels (uint8);
                the background-shenanigans bit (4) set here means "some aperture pixel
                had shenanigans in this frame".
* ``n_bad``     number of aperture pixels left out of the sums (int32).

NaN handling: a pixel whose flux, background or flux_err is not finite, or whose
pixel flags share a bit with ``exclude_bits`` (the stage passes 2, "manual exclude",
as the background stage's corrected flux does), is left out of every sum for that
cadence (its flags still count) and is counted in ``n_bad``;
flux, flux_err, flux_bkg and the centroid are then those of the remaining pixels. An
aperture with no usable pixel in a cadence gets NaN everywhere. The caller decides
what a partial sum means (the stage flags it in the light curve's quality).

Optional inputs: pass an empty array (e.g. ``np.empty((0, 0, 0), np.float32)``) for
``flux_err``, ``background`` or ``pixel_flags`` that do not exist: flux_err then comes
out NaN, flux_bkg 0, pixel_flags 0. Labels outside 1..n_labels are ignored.

Accumulation is in float64 whatever the input dtype. Pixels are visited in memory
order (row-major within each frame), so a frame is read sequentially even when the
apertures cover a small part of the region.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def label_pixels(labels, n_labels):
    """(rows, cols, label index 0..n−1) of every labelled pixel in row-major order."""
    nrow, ncol = labels.shape
    count = 0
    for r in range(nrow):
        for c in range(ncol):
            lab = labels[r, c]
            if lab >= 1 and lab <= n_labels:
                count += 1
    rows = np.empty(count, np.int64)
    cols = np.empty(count, np.int64)
    idx = np.empty(count, np.int64)
    k = 0
    for r in range(nrow):
        for c in range(ncol):
            lab = labels[r, c]
            if lab >= 1 and lab <= n_labels:
                rows[k] = r
                cols[k] = c
                idx[k] = lab - 1
                k += 1
    return rows, cols, idx


@njit(nogil=True, cache=True)
def aperture_photometry(flux, flux_err, background, pixel_flags, labels, n_labels, subtract=True,
                        exclude_bits=0):
    """Sums over every aperture of ``labels`` for every cadence of the block.

    Returns (flux, flux_err, flux_bkg, centroid_row, centroid_col) float64 arrays of
    shape (n_labels, T), pixel_flags uint8 (n_labels, T) and n_bad int32 (n_labels, T).
    """
    nt = flux.shape[0]
    has_err = flux_err.shape[0] > 0
    has_bkg = background.shape[0] > 0
    has_flags = pixel_flags.shape[0] > 0
    rows, cols, idx = label_pixels(labels, n_labels)
    npix = rows.shape[0]

    out_flux = np.empty((n_labels, nt))
    out_err = np.empty((n_labels, nt))
    out_bkg = np.empty((n_labels, nt))
    out_crow = np.empty((n_labels, nt))
    out_ccol = np.empty((n_labels, nt))
    out_flags = np.zeros((n_labels, nt), np.uint8)
    out_bad = np.zeros((n_labels, nt), np.int32)

    s_f = np.empty(n_labels)
    s_e = np.empty(n_labels)
    s_b = np.empty(n_labels)
    s_r = np.empty(n_labels)
    s_c = np.empty(n_labels)
    n_good = np.empty(n_labels, np.int64)
    for t in range(nt):
        s_f[:] = 0.0
        s_e[:] = 0.0
        s_b[:] = 0.0
        s_r[:] = 0.0
        s_c[:] = 0.0
        n_good[:] = 0
        for p in range(npix):
            r = rows[p]
            c = cols[p]
            k = idx[p]
            excluded = False
            if has_flags:
                fl = pixel_flags[t, r, c]
                out_flags[k, t] |= fl
                excluded = (fl & exclude_bits) != 0
            f = np.float64(flux[t, r, c])
            b = np.float64(background[t, r, c]) if has_bkg else 0.0
            e = np.float64(flux_err[t, r, c]) if has_err else 0.0
            if excluded or not (math.isfinite(f) and math.isfinite(b) and math.isfinite(e)):
                out_bad[k, t] += 1
                continue
            v = f - b if subtract else f
            s_f[k] += v
            s_e[k] += e * e
            s_b[k] += b
            s_r[k] += v * r
            s_c[k] += v * c
            n_good[k] += 1
        for k in range(n_labels):
            if n_good[k] == 0:
                out_flux[k, t] = np.nan
                out_err[k, t] = np.nan
                out_bkg[k, t] = np.nan
                out_crow[k, t] = np.nan
                out_ccol[k, t] = np.nan
                continue
            out_flux[k, t] = s_f[k]
            out_err[k, t] = math.sqrt(s_e[k]) if has_err else np.nan
            out_bkg[k, t] = s_b[k]
            if s_f[k] > 0.0:
                out_crow[k, t] = s_r[k] / s_f[k]
                out_ccol[k, t] = s_c[k] / s_f[k]
            else:
                out_crow[k, t] = np.nan
                out_ccol[k, t] = np.nan
    return out_flux, out_err, out_bkg, out_crow, out_ccol, out_flags, out_bad
