"""K2P2 saturation: bleed columns of saturated stars (TASOC's ``k2p2FixFromSum``
``extend_overflow``), as numba kernels used by ``kernels.k2p2_watershed`` (one
watershed marker per saturated patch) and ``kernels.k2p2.segment`` (step 4).

A column of a mask is saturated when the median step along it is < 1 % of its maximum
and its median is ≥ half the aperture's maximum; its bleed run is the contiguous run
of above-cut pixels through its brightest pixel (``_saturated_runs``). Apertures of
saturated stars are extended along those runs (``extend_bleed_columns``); with a
catalog only apertures whose stars sum to Tmag ≤ 7 are (``bright_apertures``). Only
pixels no other aperture owns are taken, and a pixel reached by two runs goes to the
aperture whose brightest pixel in that column is nearest.

Windows: a bleed run that comes within ``guard`` rows of an open top or bottom side
of the window marks its cluster incomplete (``complete[q] = False``; the tiling
contract is in ``kernels.k2p2``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# indices into a window's open_edges (top, bottom, left, right), see kernels.k2p2.segment
OPEN_TOP, OPEN_BOTTOM, OPEN_LEFT, OPEN_RIGHT = 0, 1, 2, 3
MAX_RUNS = 256                       # bleed runs looked at per cluster or aperture


# ================================================================== saturation
@njit(nogil=True, cache=True)
def _column_saturated(vals, k, mask_max):
    """TASOC's test of one column of a mask: |median(diff)| / max < 0.01 and
    median ≥ max(mask)/2, on the mask's k values in that column (row order)."""
    if k < 2:
        return False                                 # median of no step is NaN
    d = np.empty(k - 1)
    for i in range(k - 1):
        d[i] = vals[i + 1] - vals[i]
    vmax = np.max(vals[:k])
    ratio = abs(np.median(d)) / vmax
    return ratio < 0.01 and np.median(vals[:k]) >= mask_max / 2.0

@njit(nogil=True, cache=True)
def _run(above, r0, c):
    """Rows (lo, hi) of the contiguous above-cut run through (r0, c)."""
    nr = above.shape[0]
    lo = r0
    while lo - 1 >= 0 and above[lo - 1, c]:
        lo -= 1
    hi = r0
    while hi + 1 < nr and above[hi + 1, c]:
        hi += 1
    return lo, hi

@njit(nogil=True, cache=True)
def _saturated_runs(image, above, member, box, mask_max, runs):
    """Bleed runs of the saturated columns of one mask, given as the bool window
    ``member`` over ``box`` (r0, r1, c0, c1). Writes (column, lo, hi, row of the
    column's maximum) into ``runs`` and returns their number."""
    r0, r1, c0, c1 = box[0], box[1], box[2], box[3]
    vals = np.empty(r1 - r0 + 1)
    n_runs = 0
    for c in range(c0, c1 + 1):
        k = 0
        best = -np.inf
        rbest = -1
        for r in range(r0, r1 + 1):
            if member[r - r0, c - c0]:
                v = np.float64(image[r, c])
                if not math.isfinite(v):
                    continue
                vals[k] = v
                k += 1
                if rbest < 0 or v > best:
                    best = v
                    rbest = r
        if k < 2 or not _column_saturated(vals, k, mask_max):
            continue
        if n_runs >= runs.shape[0]:
            break
        lo, hi = _run(above, rbest, c)
        runs[n_runs, 0] = c
        runs[n_runs, 1] = lo
        runs[n_runs, 2] = hi
        runs[n_runs, 3] = rbest
        n_runs += 1
    return n_runs


@njit(nogil=True, cache=True)
def _run_reaches_open_side(lo, hi, nr, open_edges, guard):
    """Whether rows lo..hi come within ``guard`` of an open top or bottom side."""
    return (open_edges[OPEN_TOP] and lo < guard) or (open_edges[OPEN_BOTTOM] and hi > nr - 1 - guard)


# ================================================================== bleed columns
@njit(nogil=True, cache=True)
def bright_apertures(ap, n_ap, cat_row, cat_col, cat_tmag, saturation_tmag):
    """Per aperture 1..n_ap: whether the catalog stars whose (rounded) position falls
    in it sum to Tmag ≤ saturation_tmag — the apertures that may be extended."""
    nr, nc = ap.shape
    allowed = np.ones(n_ap + 1, np.bool_)
    flux_in = np.zeros(n_ap + 1)
    for s in range(cat_row.size):
        if not (math.isfinite(cat_row[s]) and math.isfinite(cat_col[s])):
            continue
        y = int(np.round(cat_row[s]))
        x = int(np.round(cat_col[s]))
        if 0 <= y < nr and 0 <= x < nc and ap[y, x] > 0:
            flux_in[ap[y, x]] += 10.0 ** (-0.4 * cat_tmag[s])
    for u in range(1, n_ap + 1):
        allowed[u] = flux_in[u] > 0 and -2.5 * math.log10(flux_in[u]) <= saturation_tmag
    return allowed


@njit(nogil=True, cache=True)
def extend_bleed_columns(image, above, clusters, ap, n_ap, ap_cluster, abox, allowed,
                         complete, open_edges, guard):
    """Add to each ``allowed`` aperture the bleed runs of its saturated columns, in
    place in ``ap``; only pixels no aperture owns are taken, and a pixel reached by
    several runs goes to the run whose column maximum is nearest, then to the brighter
    aperture, then to the lower aperture number. ``abox``: per aperture its (rmin,
    rmax, cmin, cmax) before the extension. A cluster is marked incomplete when one of
    its runs reaches an open side of the window, runs into an aperture of an
    incomplete cluster, or contests a pixel with one."""
    nr, nc = image.shape
    amax = np.full(n_ap + 1, -np.inf)
    for r in range(nr):
        for c in range(nc):
            u = ap[r, c]
            if u > 0 and image[r, c] > amax[u]:
                amax[u] = image[r, c]
    runs = np.empty((MAX_RUNS, 4), np.int64)
    # candidate pixels: (flat index, aperture, distance in rows, max of aperture)
    cand_n = 0
    cand = np.empty((64, 3), np.int64)
    cand_key = np.empty(64)
    for u in range(1, n_ap + 1):
        if not allowed[u]:
            continue
        r0, r1, c0, c1 = abox[u, 0], abox[u, 1], abox[u, 2], abox[u, 3]
        member = np.zeros((r1 - r0 + 1, c1 - c0 + 1), np.bool_)
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                member[r - r0, c - c0] = ap[r, c] == u
        n_runs = _saturated_runs(image, above, member, np.array([r0, r1, c0, c1]), amax[u], runs)
        q = ap_cluster[u]
        for k in range(n_runs):
            c = runs[k, 0]
            lo = runs[k, 1]
            hi = runs[k, 2]
            if _run_reaches_open_side(lo, hi, nr, open_edges, guard):
                complete[q] = False
            for r in range(lo, hi + 1):
                if ap[r, c] != 0:
                    other = clusters[r, c]
                    if other > 0 and not complete[other]:
                        complete[q] = False
                    continue
                if cand_n == cand.shape[0]:
                    grown = np.empty((2 * cand_n, 3), np.int64)
                    grown[:cand_n] = cand
                    cand = grown
                    gk = np.empty(2 * cand_n)
                    gk[:cand_n] = cand_key
                    cand_key = gk
                cand[cand_n, 0] = r * nc + c
                cand[cand_n, 1] = u
                cand[cand_n, 2] = abs(r - runs[k, 3])
                cand_key[cand_n] = amax[u]
                cand_n += 1
    # a pixel reached by several runs goes to the nearest maximum, then the brighter
    if cand_n > 0:
        order = np.argsort(cand[:cand_n, 0], kind="mergesort")
        i = 0
        while i < cand_n:
            j = i
            best = order[i]
            while j < cand_n and cand[order[j], 0] == cand[order[i], 0]:
                t = order[j]
                if (cand[t, 2] < cand[best, 2]
                        or (cand[t, 2] == cand[best, 2] and cand_key[t] > cand_key[best])
                        or (cand[t, 2] == cand[best, 2] and cand_key[t] == cand_key[best]
                            and cand[t, 1] < cand[best, 1])):
                    best = t
                j += 1
            for t in range(i, j):                 # contested with an incomplete one
                if not complete[ap_cluster[cand[order[t], 1]]]:
                    complete[ap_cluster[cand[best, 1]]] = False
            flat = cand[best, 0]
            y = flat // nc
            ap[y, flat - y * nc] = cand[best, 1]
            i = j
