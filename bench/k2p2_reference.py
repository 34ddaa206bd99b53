"""The reference route: K2P2 as TASOC's ``k2p2FixFromSum`` computes it, with the
libraries it uses — statsmodels' FFT KDE + Powell for the mode, scikit-learn's
``DBSCAN`` on the above-threshold pixel coordinates, scipy's ``gaussian_filter``,
scikit-image's ``peak_local_max`` and ``watershed`` — for the benchmark and the
equivalence tests of ``kernels.k2p2``.

Written from the method's description (Lund et al. 2015; TASOC photometry), not
copied. Two things differ from TASOC's code, both to make it usable as a yardstick:
each cluster is processed on its bounding box (TASOC allocates full-image arrays per
cluster, hours on a full CCD), and the parameters follow the project's choices where
DESIGN §4 departs from TASOC (all finite pixels for the threshold unless
``positive_only``; markers from the blurred image also with a catalog unless
``blur_with_catalog=False``). Masks may overlap, as in TASOC (hole filling and bleed
extension do not look at other masks).

    masks, info = reference_masks(sumimage, catalog=None)   # masks: [(rows, cols)]
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats
from scipy.optimize import minimize

MAD_TO_SIGMA = 1.482602218505602


def reference_threshold(image, thresh=0.8, positive_only=False):
    from statsmodels.nonparametric.bandwidths import select_bandwidth
    from statsmodels.nonparametric.kde import KDEUnivariate

    flux = image[np.isfinite(image)].ravel().astype(np.float64)
    if positive_only:
        flux = flux[flux > 0]
    cut = stats.trim1(np.sort(flux), 0.15)
    cut = cut[cut < 70000]
    bw = select_bandwidth(cut, bw="scott", kernel="gau")
    kde = KDEUnivariate(cut)
    kde.fit(kernel="gau", bw=bw, fft=True, gridsize=100)
    guess = kde.support[np.argmax(kde.density)]
    mode = float(minimize(lambda x: -kde.evaluate(x), guess, method="Powell").x[0])
    sigma = MAD_TO_SIGMA * np.median(np.abs(flux[flux < mode] - mode))
    return mode + thresh * sigma, mode, sigma, bw


def _saturated(image, rows, cols, idx):
    """TASOC's column test on one mask given by its pixels: the pixels (rows, cols) of
    the above-threshold runs through the maximum of each saturated column."""
    rows = np.asarray(rows)
    cols = np.asarray(cols)
    mask_max = np.nanmax(image[rows, cols])
    add_r, add_c = [], []
    for c in np.unique(cols):
        rr = np.sort(rows[cols == c])
        pixels = image[rr, c]
        pixels = pixels[np.isfinite(pixels)]
        if len(pixels) < 2:
            continue
        ratio = abs(np.median(np.diff(pixels))) / np.max(pixels)
        if ratio < 0.01 and np.median(pixels) >= mask_max / 2:
            r0 = rr[np.nanargmax(image[rr, c])]
            runs, _ = ndimage.label(idx[:, c])
            run = np.nonzero(runs == runs[r0])[0]
            add_r.append(run)
            add_c.append(np.full(len(run), c))
    if not add_r:
        return np.empty(0, int), np.empty(0, int)
    return np.concatenate(add_r), np.concatenate(add_c)


def reference_masks(image, catalog=None, thresh=0.8, cut=None, positive_only=False,
                    blur_with_catalog=True, min_pixels=4, extend_overflow=True,
                    saturation_tmag=7.0, eps=np.sqrt(2.0), min_samples=4, blur=0.5):
    """Masks of the whole image: [(rows, cols)] and a dict with the threshold.
    ``catalog``: (rows, cols, tmag) arrays in image pixel coordinates."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed
    from sklearn.cluster import DBSCAN

    image = np.asarray(image, dtype=np.float64)
    info = {}
    if cut is None:
        cut, mode, sigma, bw = reference_threshold(image, thresh, positive_only)
        info.update(mode=mode, sigma=sigma, bandwidth=bw)
    info["cut"] = cut
    ny, nx = image.shape
    idx = image > cut
    ys, xs = np.nonzero(idx)
    db = DBSCAN(eps=eps, min_samples=min_samples).fit(np.c_[xs, ys])
    core = np.zeros(len(xs), bool)
    core[db.core_sample_indices_] = True
    labels = db.labels_
    regions = []                                   # (rows, cols) per watershed region
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(labels.max() + 2))
    for lab in range(labels.max() + 1):
        members = order[bounds[lab]:bounds[lab + 1]]
        cm = members[core[members]]
        if len(cm) == 0:
            continue
        r0, r1 = max(ys[members].min() - 3, 0), min(ys[members].max() + 4, ny)
        c0, c1 = max(xs[members].min() - 3, 0), min(xs[members].max() + 4, nx)
        sub = image[r0:r1, c0:c1]
        z = np.zeros(sub.shape)
        z[ys[cm] - r0, xs[cm] - c0] = sub[ys[cm] - r0, xs[cm] - c0]
        # z is 0 within 3 px of a crop edge that is not an image edge, so blurring the
        # crop equals blurring the whole image (scipy reflects at real image edges)
        dist = ndimage.gaussian_filter(z, blur) if (catalog is None or blur_with_catalog) else z
        peaks = peak_local_max(dist, exclude_border=False, threshold_rel=0,
                               footprint=np.ones((3, 3)))
        local = np.zeros(sub.shape, bool)
        if catalog is None:
            local[tuple(peaks.T)] = True
        elif len(peaks):
            crow, ccol, cmag = catalog
            near = (crow > r0 - 9) & (crow < r1 + 8) & (ccol > c0 - 9) & (ccol < c1 + 8)
            for y, x, m in zip(crow[near], ccol[near], cmag[near]):
                d = np.hypot(peaks[:, 0] + r0 - y, peaks[:, 1] + c0 - x)
                k = int(np.argmin(d))
                if d[k] < (5.0 if m <= saturation_tmag else 2.0) * np.sqrt(2.0):
                    local[peaks[k, 0], peaks[k, 1]] = True
        # one marker per saturated patch (column test on the cluster with its border)
        sr, sc = _saturated(image, ys[members], xs[members], idx)
        inside = (sr >= r0) & (sr < r1) & (sc >= c0) & (sc < c1)
        if len(sr):
            sat_sub = np.zeros(sub.shape, bool)
            sat_sub[sr[inside] - r0, sc[inside] - c0] = True
            patches, n = ndimage.label(sat_sub)
            for k in range(1, n + 1):
                sp = sat_sub & (patches == k)
                if np.sum(local & sp) > 1:
                    imax = np.unravel_index(np.nanargmax(dist * local * sp), dist.shape)
                    local[sp] = False
                    local[imax] = True
        markers = ndimage.label(local)[0]
        zmask = z != 0
        if not local.any():
            ws = zmask.astype(np.int32)
        else:
            ws = watershed(-z, markers, mask=zmask)
        for k in np.unique(ws[ws > 0]):
            rr, cc = np.nonzero(ws == k)
            regions.append((rr + r0, cc + c0))
    masks = [m for m in regions if len(m[0]) >= min_pixels]
    # fill holes (per mask), then extend bleed columns
    out = []
    kern = np.array([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]])
    for rr, cc in masks:
        r0, r1 = max(rr.min() - 2, 0), min(rr.max() + 3, ny)
        c0, c1 = max(cc.min() - 2, 0), min(cc.max() + 3, nx)
        m = np.zeros((r1 - r0, c1 - c0), bool)
        m[rr - r0, cc - c0] = True
        conv = ndimage.convolve(m.astype(float), kern, mode="constant")
        m |= (conv > 0.95) & ~m
        rr, cc = np.nonzero(m)
        rr, cc = rr + r0, cc + c0
        if extend_overflow:
            ar, ac = _saturated(image, rr, cc, idx)
            if len(ar) and catalog is not None:
                crow, ccol, cmag = catalog
                r = np.round(crow).astype(int)
                c = np.round(ccol).astype(int)
                ok = (r >= r0) & (r < r1) & (c >= c0) & (c < c1)
                inside = np.zeros(len(crow), bool)
                inside[ok] = m[r[ok] - r0, c[ok] - c0]
                if not inside.any() or -2.5 * np.log10(np.sum(10 ** (-0.4 * cmag[inside]))) > saturation_tmag:
                    ar = ac = np.empty(0, int)
            if len(ar):
                pix = np.unique(np.r_[rr * nx + cc, ar * nx + ac])
                rr, cc = pix // nx, pix % nx
        out.append((rr, cc))
    return out, info
