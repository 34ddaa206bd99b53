"""K2P2 star apertures on a sum image (Lund et al. 2015; TASOC photometry's
``k2p2FixFromSum``), as numba kernels: numpy in, numpy out, serial, deterministic.

This module holds the entry points — ``threshold`` (re-exported from
``kernels.threshold``), ``segment`` and ``aperture_table`` — and the part of the
method that finds *where* the stars are: the DBSCAN clusters above the cut, and which
of them a window's cut sides could change. How each cluster is cut into apertures
(watershed, catalog peaks, hole filling) is in ``kernels.k2p2_watershed``, bleed columns
in ``kernels.k2p2_bleed``; their public kernels are re-exported here.

Steps (DESIGN §4; TASOC's AperturePhotometry settings in brackets):

1. ``threshold``: the significance cut = mode + thresh · 1.4826 · MAD below the mode
   [thresh 0.8]. The mode is the maximum of a Gaussian kernel density estimate (Scott's
   bandwidth) of the pixel values with the brightest 15 % trimmed and values ≥ 7e4
   e-/s removed; the MAD is the median distance to the mode of all values below it.
2. Grid DBSCAN [eps √2, min_samples 4], core points only: a pixel above the cut is a
   core point when its 3×3 box holds ≥ 4 pixels above the cut (itself included);
   clusters are the 8-connected components of core pixels (``labels.label8``).
   This is exactly scikit-learn's DBSCAN core-point partition on the pixel
   coordinates: the eps-ball of radius √2 on the grid is the 3×3 box.
3. Watershed on flux per cluster from its (blurred, or catalog-claimed) peaks, one
   marker per saturated patch [blur 0.5, footprint 3, ws_thres 0].
4. Regions under ``min_pixels`` [4] dropped, one-pixel holes filled, saturated stars
   extended along their bleed columns. (3 and 4: ``kernels.k2p2_watershed``, ``kernels.k2p2_bleed``.)

Departures from TASOC (each keeps apertures disjoint or the result independent of
tiling): the threshold uses every finite pixel (TASOC keeps only values > 0, which on
a background-subtracted image puts the cut at ~0.3 σ of the noise;
``positive_only=True`` restores it); for steps 3–4 see ``kernels.k2p2_watershed``.

Tiles: ``segment`` works on a window of the image. Window sides that are cuts through
the image (not its real edges) are "open"; a cluster that comes within ``guard`` px
of an open side, or whose bleed run reaches one, is reported incomplete — its
apertures may differ from the whole-image result and the caller must widen the
window. Apertures of complete clusters are exactly those of the whole image.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from kernels.k2p2_bleed import (OPEN_BOTTOM, OPEN_LEFT, OPEN_RIGHT, OPEN_TOP,  # noqa: F401
                                bright_apertures, extend_bleed_columns)
from kernels.k2p2_watershed import (claim_peaks, drop_small_regions, fill_holes,  # noqa: F401
                                    find_peaks, gaussian_weights,
                                    one_marker_per_saturated_patch, watershed)
from kernels.labels import label8
from kernels.threshold import (IQR_TO_SIGMA, MAD_TO_SIGMA, SCOTT_FACTOR,  # noqa: F401
                               kde_mode, scott_bandwidth, threshold)

GUARD = 3                            # px: 1 for the 3×3 count, 2 for the blur radius


# ================================================================== DBSCAN on the grid
@njit(nogil=True, cache=True)
def above_core(image, cut, min_samples):
    """Pixels above the cut, and DBSCAN core pixels (≥ min_samples above-cut pixels in
    the 3×3 box, itself included; pixels outside the image count as below)."""
    nr, nc = image.shape
    above = np.zeros((nr, nc), np.bool_)
    for r in range(nr):
        for c in range(nc):
            above[r, c] = image[r, c] > cut        # False for NaN
    core = np.zeros((nr, nc), np.bool_)
    for r in range(nr):
        for c in range(nc):
            if not above[r, c]:
                continue
            k = 0
            for rr in range(max(r - 1, 0), min(r + 2, nr)):
                for cc in range(max(c - 1, 0), min(c + 2, nc)):
                    if above[rr, cc]:
                        k += 1
            core[r, c] = k >= min_samples
    return above, core


@njit(nogil=True, cache=True)
def _border_owner(above, core, clusters, r, c):
    """The cluster a DBSCAN border point (above, not core) belongs to: of the clusters
    with a core pixel in its 3×3 box, the lowest-numbered — the first scikit-learn's
    DBSCAN expands, as clusters are numbered in raster order of their first pixel in
    both. 0 when (r, c) is no border point."""
    nr, nc = above.shape
    if not above[r, c] or core[r, c]:
        return 0
    best = 0
    for rr in range(max(r - 1, 0), min(r + 2, nr)):
        for cc in range(max(c - 1, 0), min(c + 2, nc)):
            q = clusters[rr, cc]
            if q > 0 and (best == 0 or q < best):
                best = q
    return best


@njit(nogil=True, cache=True)
def cluster_members(above, core, clusters):
    """Per pixel, the DBSCAN cluster it belongs to with border points included: its
    own cluster for a core pixel, ``_border_owner`` for a border pixel, else 0."""
    nr, nc = above.shape
    members = np.zeros((nr, nc), np.int32)
    for r in range(nr):
        for c in range(nc):
            if core[r, c]:
                members[r, c] = clusters[r, c]
            elif above[r, c]:
                members[r, c] = _border_owner(above, core, clusters, r, c)
    return members


# ================================================================== windows
@njit(nogil=True, cache=True)
def _bboxes(labels, n):
    """Per label 1..n: (rmin, rmax, cmin, cmax) and pixel count."""
    nr, nc = labels.shape
    box = np.empty((n + 1, 4), np.int64)
    box[:, 0] = nr
    box[:, 1] = -1
    box[:, 2] = nc
    box[:, 3] = -1
    count = np.zeros(n + 1, np.int64)
    for r in range(nr):
        for c in range(nc):
            q = labels[r, c]
            if q > 0:
                count[q] += 1
                box[q, 0] = min(box[q, 0], r)
                box[q, 1] = max(box[q, 1], r)
                box[q, 2] = min(box[q, 2], c)
                box[q, 3] = max(box[q, 3], c)
    return box, count


@njit(nogil=True, cache=True)
def _near_open_edge(r0, r1, c0, c1, nr, nc, open_edges, guard):
    return ((open_edges[OPEN_TOP] and r0 < guard) or (open_edges[OPEN_BOTTOM] and r1 > nr - 1 - guard)
            or (open_edges[OPEN_LEFT] and c0 < guard) or (open_edges[OPEN_RIGHT] and c1 > nc - 1 - guard))


# ================================================================== segmentation
def segment(image, cut, open_edges=None, stars=None, min_samples=4, blur_sigma=0.5,
            ws_thres=0.0, min_pixels=4, extend_overflow=True, saturation_tmag=7.0,
            guard=GUARD):
    """K2P2 apertures of an image window (see the module docstring).

    image: (rows, cols), NaN = no data; cut: the significance cut; open_edges: bool[4]
    (top, bottom, left, right) — True where the window side is a cut through a larger
    image (default: none); stars: None (no catalog) or (rows, cols, tmag) arrays of
    catalog stars in window pixel coordinates (they may lie outside it).

    Returns (apertures int32 image: 0 or the aperture number 1..n in raster order of
    first pixel; n; aperture_cluster int64[n+1]; cluster_complete bool[nc+1];
    clusters int32 image of the DBSCAN core clusters 1..nc)."""
    image = np.ascontiguousarray(image, dtype=np.float64)
    edges = np.zeros(4, np.bool_) if open_edges is None else np.asarray(open_edges, dtype=np.bool_)
    if stars is None:
        rows = cols = tmag = np.empty(0, np.float64)
    else:
        rows, cols, tmag = (np.ascontiguousarray(a, dtype=np.float64) for a in stars)
    guard = max(int(guard), int(4.0 * blur_sigma + 0.5) + 1)      # the blur's reach + 1
    return _segment(image, float(cut), edges, rows, cols, tmag, stars is not None,
                    int(min_samples), float(blur_sigma), float(ws_thres), int(min_pixels),
                    bool(extend_overflow), float(saturation_tmag), guard)


@njit(nogil=True, cache=True)
def _segment(image, cut, open_edges, cat_row, cat_col, cat_tmag, use_catalog,
             min_samples, blur_sigma, ws_thres, min_pixels, extend_overflow,
             saturation_tmag, guard):
    nr, nc = image.shape
    # -- DBSCAN core clusters, and those a cut side of the window could change
    above, core = above_core(image, cut, min_samples)
    clusters, n_cl = label8(core)
    cbox, ccount = _bboxes(clusters, n_cl)
    complete = np.ones(n_cl + 1, np.bool_)
    for q in range(1, n_cl + 1):
        if _near_open_edge(cbox[q, 0], cbox[q, 1], cbox[q, 2], cbox[q, 3], nr, nc, open_edges, guard):
            complete[q] = False

    # -- markers: blurred peaks (claimed by catalog stars), one per saturated patch
    peak, bz = find_peaks(image, clusters, n_cl, gaussian_weights(blur_sigma), ws_thres)
    if use_catalog:
        markers_on, _ = claim_peaks(peak, clusters, cat_row, cat_col, cat_tmag, saturation_tmag)
    else:
        markers_on = peak
    members = cluster_members(above, core, clusters)
    one_marker_per_saturated_patch(image, above, clusters, members, n_cl, cbox,
                                   markers_on, bz, complete, open_edges, guard)

    # -- watershed, small regions dropped, holes filled, bleed columns added
    region, n_regions, region_cluster = watershed(image, clusters, n_cl, markers_on)
    ap, n_ap, ap_cluster = drop_small_regions(region, n_regions, region_cluster, min_pixels)
    fill_holes(ap)
    if extend_overflow and n_ap > 0:
        abox, acount = _bboxes(ap, n_ap)
        if use_catalog:                             # only stars (together) of Tmag ≤ 7
            allowed = bright_apertures(ap, n_ap, cat_row, cat_col, cat_tmag, saturation_tmag)
        else:
            allowed = np.ones(n_ap + 1, np.bool_)
        extend_bleed_columns(image, above, clusters, ap, n_ap, ap_cluster, abox, allowed,
                             complete, open_edges, guard)
    return ap, n_ap, ap_cluster, complete, clusters


# ================================================================== aperture table
@njit(nogil=True, cache=True)
def aperture_table(ap, n, image):
    """Per aperture 1..n: its pixels (CSR: offsets[n+2], rows, cols in raster order),
    number of pixels, flux (sum of finite values), flux-weighted centroid (row, col;
    over pixels with positive flux, the plain mean if none) and brightest pixel (the
    first in raster order among equal maxima)."""
    nr, nc = ap.shape
    count = np.zeros(n + 1, np.int64)
    for r in range(nr):
        for c in range(nc):
            count[ap[r, c]] += 1
    offsets = np.zeros(n + 2, np.int64)
    for u in range(1, n + 1):
        offsets[u + 1] = offsets[u] + count[u]
    total = offsets[n + 1]
    rows = np.empty(total, np.int64)
    cols = np.empty(total, np.int64)
    fill = offsets.copy()
    flux = np.zeros(n + 1)
    wsum = np.zeros(n + 1)
    wr = np.zeros(n + 1)
    wc = np.zeros(n + 1)
    mr = np.zeros(n + 1)
    mc = np.zeros(n + 1)
    vmax = np.full(n + 1, -np.inf)
    br = np.full(n + 1, -1, np.int64)
    bc = np.full(n + 1, -1, np.int64)
    for r in range(nr):
        for c in range(nc):
            u = ap[r, c]
            if u == 0:
                continue
            rows[fill[u]] = r
            cols[fill[u]] = c
            fill[u] += 1
            mr[u] += r
            mc[u] += c
            v = np.float64(image[r, c])
            if math.isfinite(v):
                flux[u] += v
                if v > 0:
                    wsum[u] += v
                    wr[u] += v * r
                    wc[u] += v * c
                if v > vmax[u] or br[u] < 0:
                    vmax[u] = v
                    br[u] = r
                    bc[u] = c
            elif br[u] < 0:
                br[u] = r
                bc[u] = c
    crow = np.empty(n + 1)
    ccol = np.empty(n + 1)
    for u in range(1, n + 1):
        if wsum[u] > 0:
            crow[u] = wr[u] / wsum[u]
            ccol[u] = wc[u] / wsum[u]
        else:
            crow[u] = mr[u] / max(count[u], 1)
            ccol[u] = mc[u] / max(count[u], 1)
    return offsets, rows, cols, count, flux, crow, ccol, br, bc
