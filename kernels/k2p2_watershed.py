"""K2P2 steps 3–4: DBSCAN clusters → star apertures (Lund et al. 2015; TASOC's
``k2p2FixFromSum``), as numba kernels called by ``kernels.k2p2.segment``.

``kernels.k2p2`` finds *where* the stars are (the significance cut and the DBSCAN
clusters); this module decides *how each cluster is cut into apertures*, which is
all about the flux inside a cluster — its peaks, the catalog, saturation. The steps,
in call order (TASOC's AperturePhotometry settings in brackets):

3. Watershed on flux per cluster [blur 0.5, footprint 3, ws_thres 0]: markers are the
   3×3 local maxima of the cluster's flux blurred by a Gaussian (σ 0.5, radius 2)
   (``find_peaks``); with a star catalog, each star claims the nearest peak of every
   cluster within 2√2 px (5√2 px for Tmag ≤ 7) and only claimed peaks are markers
   (``claim_peaks``). Inside each patch of saturated (bleed) pixels only the highest
   marker is kept (``one_marker_per_saturated_patch``). The cluster is flooded from
   its markers, brightest first, 4-connected (``watershed``, via
   ``labels.flood_clusters``); a cluster with no marker stays whole.
4. Regions under ``min_pixels`` [4] are dropped (``drop_small_regions``); pixels whose
   four neighbours are all in one aperture are filled in (``fill_holes``); apertures
   of saturated stars are extended along their bleed columns (``kernels.k2p2_bleed``).

Apertures never share a pixel (a departure from TASOC): hole filling and bleed
extension only take pixels no other aperture owns, and a pixel reached by two bleed
runs goes to the aperture whose brightest pixel in that column is nearest. Markers
come from the blurred image with and without a catalog (DESIGN §4; TASOC does not
blur when it has a catalog).

Windows: a saturated patch whose bleed run comes within ``guard`` rows of an open top
or bottom side of the window marks its cluster incomplete (``complete[q] = False``;
the tiling contract is in ``kernels.k2p2``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from kernels.k2p2_bleed import MAX_RUNS, _run_reaches_open_side, _saturated_runs
from kernels.labels import flood_clusters
from kernels.stats import reflect_index


# ================================================================== markers
@njit(nogil=True, cache=True)
def gaussian_weights(sigma, truncate=4.0):
    """scipy.ndimage's 1-D Gaussian kernel: radius int(truncate·σ + 0.5), normalised."""
    rad = int(truncate * sigma + 0.5)
    w = np.empty(2 * rad + 1)
    s = 0.0
    for j in range(-rad, rad + 1):
        w[j + rad] = math.exp(-0.5 * (j / sigma) ** 2) if sigma > 0 else (1.0 if j == 0 else 0.0)
        s += w[j + rad]
    return w / s


@njit(nogil=True, cache=True)
def _blur_at(image, clusters, lab, r, c, w):
    """Gaussian blur at (r, c) of the image restricted to cluster ``lab`` (0 elsewhere),
    scipy.ndimage's 'reflect' boundary."""
    nr, nc = image.shape
    rad = (w.size - 1) // 2
    s = 0.0
    if rad <= r < nr - rad and rad <= c < nc - rad:
        for i in range(-rad, rad + 1):
            row = 0.0
            for j in range(-rad, rad + 1):
                if clusters[r + i, c + j] == lab:
                    row += w[j + rad] * image[r + i, c + j]
            s += w[i + rad] * row
        return s
    for i in range(-rad, rad + 1):
        rr = reflect_index(r + i, nr)
        row = 0.0
        for j in range(-rad, rad + 1):
            cc = reflect_index(c + j, nc)
            if clusters[rr, cc] == lab:
                row += w[j + rad] * image[rr, cc]
        s += w[i + rad] * row
    return s

@njit(nogil=True, cache=True)
def find_peaks(image, clusters, n_clusters, blur, ws_thres):
    """Markers candidates: pixels of each cluster whose blurred cluster flux is ≥ all
    8 neighbours' (blurred with the same cluster restriction) and above the
    peak threshold; of equal adjacent maxima the first in raster order is kept.
    Returns (peak bool image, blurred image at cluster pixels)."""
    nr, nc = image.shape
    bz = np.zeros((nr, nc), np.float64)
    bmax = np.full(n_clusters + 1, -np.inf)
    bmin = np.zeros(n_clusters + 1)
    for r in range(nr):
        for c in range(nc):
            q = clusters[r, c]
            if q > 0:
                v = _blur_at(image, clusters, q, r, c, blur)
                bz[r, c] = v
                bmax[q] = max(bmax[q], v)
                bmin[q] = min(bmin[q], v)
    peak = np.zeros((nr, nc), np.bool_)
    for r in range(nr):
        for c in range(nc):
            q = clusters[r, c]
            if q == 0:
                continue
            v = bz[r, c]
            if not v > max(bmin[q], ws_thres * bmax[q]):
                continue
            ok = True
            for rr in range(max(r - 1, 0), min(r + 2, nr)):         # cluster neighbours
                for cc in range(max(c - 1, 0), min(c + 2, nc)):
                    if clusters[rr, cc] == q and bz[rr, cc] > v:
                        ok = False
            if not ok:
                continue
            for rr in range(max(r - 1, 0), min(r + 2, nr)):         # the blur's spill
                for cc in range(max(c - 1, 0), min(c + 2, nc)):
                    if clusters[rr, cc] != q and _blur_at(image, clusters, q, rr, cc, blur) > v:
                        ok = False
            if not ok:
                continue
            for rr, cc in ((r - 1, c - 1), (r - 1, c), (r - 1, c + 1), (r, c - 1)):
                if 0 <= rr and 0 <= cc < nc and peak[rr, cc] and clusters[rr, cc] == q \
                        and bz[rr, cc] == v:
                    ok = False
            peak[r, c] = ok
    return peak, bz

@njit(nogil=True, cache=True)
def claim_peaks(peak, clusters, cat_row, cat_col, cat_tmag, saturation_tmag):
    """Catalog markers: each star claims, in every cluster, the nearest peak closer
    than 2√2 px (5√2 px for Tmag ≤ saturation_tmag). Returns the claimed peaks and,
    per pixel, the index of the brightest star that claimed it (−1 for none)."""
    nr, nc = peak.shape
    claimed = np.zeros((nr, nc), np.bool_)
    claimant = np.full((nr, nc), -1, np.int64)
    slots = 64
    s_lab = np.zeros(slots, np.int64)
    s_d = np.zeros(slots)
    s_idx = np.zeros(slots, np.int64)
    for s in range(cat_row.size):
        y = cat_row[s]
        x = cat_col[s]
        if not (math.isfinite(y) and math.isfinite(x)):
            continue
        rad = (5.0 if cat_tmag[s] <= saturation_tmag else 2.0) * math.sqrt(2.0)
        r0 = max(int(math.floor(y - rad)), 0)
        r1 = min(int(math.ceil(y + rad)), nr - 1)
        c0 = max(int(math.floor(x - rad)), 0)
        c1 = min(int(math.ceil(x + rad)), nc - 1)
        k = 0
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                if not peak[r, c]:
                    continue
                d = math.sqrt((r - y) ** 2 + (c - x) ** 2)
                if not d < rad:
                    continue
                q = clusters[r, c]
                j = 0
                while j < k and s_lab[j] != q:
                    j += 1
                if j == k:
                    if k == slots:
                        continue
                    s_lab[k] = q
                    s_d[k] = d
                    s_idx[k] = r * nc + c
                    k += 1
                elif d < s_d[j]:
                    s_d[j] = d
                    s_idx[j] = r * nc + c
        for j in range(k):
            r = s_idx[j] // nc
            c = s_idx[j] - r * nc
            claimed[r, c] = True
            prev = claimant[r, c]
            if prev < 0 or cat_tmag[s] < cat_tmag[prev]:
                claimant[r, c] = s
    return claimed, claimant

@njit(nogil=True, cache=True)
def one_marker_per_saturated_patch(image, above, clusters, members, n_clusters, cbox,
                                   markers_on, bz, complete, open_edges, guard):
    """Inside each patch (4-connected component) of a cluster's saturated pixels, keep
    only the marker of highest blurred flux ``bz`` (the first in raster order among
    equal ones); ``markers_on`` is edited in place. As TASOC, the column test runs on
    the DBSCAN clusters with their border points (``members``: the cluster of each
    pixel, border points included) before the watershed. ``cbox``: per cluster its
    (rmin, rmax, cmin, cmax). A cluster whose bleed runs reach an open side of the
    window is marked incomplete in ``complete``."""
    nr, nc = image.shape
    cmax = np.full(n_clusters + 1, -np.inf)    # maximum of each cluster with its border
    for r in range(nr):
        for c in range(nc):
            q = members[r, c]
            if q > 0:
                cmax[q] = max(cmax[q], np.float64(image[r, c]))
    runs = np.empty((MAX_RUNS, 4), np.int64)
    sat = np.zeros((nr, nc), np.bool_)
    for q in range(1, n_clusters + 1):
        r0 = max(cbox[q, 0] - 1, 0)
        r1 = min(cbox[q, 1] + 1, nr - 1)
        c0 = max(cbox[q, 2] - 1, 0)
        c1 = min(cbox[q, 3] + 1, nc - 1)
        member = members[r0:r1 + 1, c0:c1 + 1] == q
        box = np.array([r0, r1, c0, c1])
        n_runs = _saturated_runs(image, above, member, box, cmax[q], runs)
        if n_runs == 0:
            continue
        lo_all = nr
        hi_all = -1
        for k in range(n_runs):
            lo_all = min(lo_all, runs[k, 1])
            hi_all = max(hi_all, runs[k, 2])
            for r in range(runs[k, 1], runs[k, 2] + 1):
                sat[r, runs[k, 0]] = True
        if _run_reaches_open_side(lo_all, hi_all, nr, open_edges, guard):
            complete[q] = False
        # patches: 4-connected components of this cluster's saturated pixels
        pr0 = lo_all
        pr1 = hi_all
        pc0 = c0
        pc1 = c1
        patch = np.zeros((pr1 - pr0 + 1, pc1 - pc0 + 1), np.int32)
        stack = np.empty(patch.size, np.int64)
        visit = np.empty(patch.size, np.int64)
        n_patch = 0
        for r in range(pr0, pr1 + 1):
            for c in range(pc0, pc1 + 1):
                if not sat[r, c] or patch[r - pr0, c - pc0] != 0:
                    continue
                n_patch += 1
                patch[r - pr0, c - pc0] = n_patch
                top = 0
                stack[top] = r * nc + c
                top += 1
                best_v = -np.inf
                best_i = -1
                n_mark = 0
                nv = 0
                while top > 0:
                    top -= 1
                    i = stack[top]
                    y = i // nc
                    x = i - y * nc
                    visit[nv] = i
                    nv += 1
                    if markers_on[y, x] and clusters[y, x] == q:
                        n_mark += 1
                        v = bz[y, x]
                        if v > best_v or (v == best_v and i < best_i):
                            best_v = v
                            best_i = i
                    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                        yy = y + dy
                        xx = x + dx
                        if pr0 <= yy <= pr1 and pc0 <= xx <= pc1 and sat[yy, xx] \
                                and patch[yy - pr0, xx - pc0] == 0:
                            patch[yy - pr0, xx - pc0] = n_patch
                            stack[top] = yy * nc + xx
                            top += 1
                if n_mark > 1:
                    for t in range(nv):
                        y = visit[t] // nc
                        x = visit[t] - y * nc
                        if markers_on[y, x] and clusters[y, x] == q and visit[t] != best_i:
                            markers_on[y, x] = False
        for k in range(n_runs):
            for r in range(runs[k, 1], runs[k, 2] + 1):
                sat[r, runs[k, 0]] = False


# ================================================================== watershed
@njit(nogil=True, cache=True)
def watershed(image, clusters, n_clusters, markers_on):
    """Flood each cluster from its markers (``labels.flood_clusters``); a cluster
    without a marker stays whole as one region. Returns (region int32 image: 0 or
    1..n_regions — markers in raster order first, then n_markers + cluster for
    unmarked clusters; n_regions; cluster of each region, int64[n_regions+1])."""
    nr, nc = image.shape
    markers = np.zeros((nr, nc), np.int32)
    has_marker = np.zeros(n_clusters + 1, np.bool_)
    n_mk = 0
    for r in range(nr):
        for c in range(nc):
            if markers_on[r, c] and clusters[r, c] > 0:
                n_mk += 1
                markers[r, c] = n_mk
                has_marker[clusters[r, c]] = True
    region = flood_clusters(image, clusters, n_clusters, markers)
    mk_cluster = np.zeros(n_mk + n_clusters + 1, np.int64)
    for r in range(nr):
        for c in range(nc):
            if markers[r, c] > 0:
                mk_cluster[markers[r, c]] = clusters[r, c]
    for r in range(nr):
        for c in range(nc):
            q = clusters[r, c]
            if q > 0 and not has_marker[q]:
                region[r, c] = n_mk + q
                mk_cluster[n_mk + q] = q
    return region, n_mk + n_clusters, mk_cluster


@njit(nogil=True, cache=True)
def drop_small_regions(region, n_regions, region_cluster, min_pixels):
    """Regions of at least ``min_pixels`` pixels, renumbered 1..n in raster order of
    first pixel. Returns (apertures int32 image, n, cluster of each aperture)."""
    nr, nc = region.shape
    size = np.zeros(n_regions + 1, np.int64)
    for r in range(nr):
        for c in range(nc):
            size[region[r, c]] += 1
    new_id = np.zeros(n_regions + 1, np.int32)
    n_ap = 0
    ap = np.zeros((nr, nc), np.int32)
    for r in range(nr):
        for c in range(nc):
            g = region[r, c]
            if g == 0 or size[g] < min_pixels:
                continue
            if new_id[g] == 0:
                n_ap += 1
                new_id[g] = n_ap
            ap[r, c] = new_id[g]
    ap_cluster = np.zeros(n_ap + 1, np.int64)
    for g in range(1, n_regions + 1):
        if new_id[g] > 0:
            ap_cluster[new_id[g]] = region_cluster[g]
    return ap, n_ap, ap_cluster


@njit(nogil=True, cache=True)
def fill_holes(ap):
    """Fill, in place, the one-pixel holes of the apertures image ``ap``: free pixels
    whose four neighbours are all in the same aperture."""
    nr, nc = ap.shape
    fill = np.zeros((nr, nc), np.int32)
    for r in range(1, nr - 1):
        for c in range(1, nc - 1):
            if ap[r, c] != 0:
                continue
            u = ap[r - 1, c]
            if u != 0 and ap[r + 1, c] == u and ap[r, c - 1] == u and ap[r, c + 1] == u:
                fill[r, c] = u
    for r in range(nr):
        for c in range(nc):
            if fill[r, c] != 0:
                ap[r, c] = fill[r, c]

