"""The aperture stage's method on one tile, in plain numpy (``kernels.k2p2`` does the
work): the K2P2 parameters, the tiling of a CCD, the segmentation of one tile with a
halo that widens until no aperture of the tile is cut, and the whole image serially
(``find_apertures``). An aperture belongs to the tile holding the pixel of its
flux-weighted centroid, so the tiles never duplicate one and the result does not
depend on the tile size."""

from __future__ import annotations

import dataclasses

import numpy as np

from kernels import k2p2
from pipeline.stages.stars import STAR_MARGIN

TILE = 512
HALO = 32                   # px; widened on demand (largest saturated stars, long blends)


@dataclasses.dataclass(frozen=True)
class Parameters:
    """K2P2 parameters (DESIGN §4; TASOC AperturePhotometry's values)."""

    thresh: float = 0.8              # cut = mode + thresh · 1.4826 · MAD below the mode
    trim: float = 0.15               # brightest share left out of the mode's KDE
    flux_limit: float = 7.0e4        # e-/s: values at or above are left out of the KDE
    positive_only: bool = False      # TASOC keeps only values > 0 for the threshold
    min_samples: int = 4             # DBSCAN min_samples (eps = √2: the 3×3 box)
    blur_sigma: float = 0.5          # px, Gaussian blur of the watershed markers' image
    ws_thres: float = 0.0            # markers above this share of the cluster's peak
    min_pixels: int = 4              # smaller apertures are dropped
    extend_overflow: bool = True     # add bleed columns of saturated stars
    saturation_tmag: float = 7.0     # catalog: wider claims and bleed extension below

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def tiles_of(shape, tile: int) -> list[tuple[int, int, int, int]]:
    """Core rectangles (r0, r1, c0, c1) covering an image of ``shape``."""
    nr, nc = shape
    return [(r, min(r + tile, nr), c, min(c + tile, nc))
            for r in range(0, nr, tile) for c in range(0, nc, tile)]


def segment_tile(read, shape, core, cut, params: Parameters, stars=None, halo: int = HALO):
    """Apertures owned by the tile ``core`` = (r0, r1, c0, c1) of an image of
    ``shape``; ``read(r0, r1, c0, c1)`` returns that window as an array.

    ``stars``: (rows, cols, tmag, index) arrays in image coordinates or None.
    Returns (list of aperture dicts in image coordinates, halo used, windows tried)."""
    nr, nc = shape
    r0, r1, c0, c1 = core
    tries = 0
    while True:
        tries += 1
        w0, w1 = max(r0 - halo, 0), min(r1 + halo, nr)
        v0, v1 = max(c0 - halo, 0), min(c1 + halo, nc)
        window = np.ascontiguousarray(read(w0, w1, v0, v1), dtype=np.float64)
        open_edges = np.array([w0 > 0, w1 < nr, v0 > 0, v1 < nc], dtype=np.bool_)
        if stars is not None:
            near = ((stars[0] > w0 - STAR_MARGIN) & (stars[0] < w1 + STAR_MARGIN)
                    & (stars[1] > v0 - STAR_MARGIN) & (stars[1] < v1 + STAR_MARGIN))
            local = (stars[0][near] - w0, stars[1][near] - v0, stars[2][near])
            s_idx = np.asarray(stars[3])[near]
        else:
            local, s_idx = None, np.empty(0, np.int64)
        ap, n, ap_cluster, complete, clusters = k2p2.segment(
            window, cut, open_edges, local, params.min_samples, params.blur_sigma,
            params.ws_thres, params.min_pixels, params.extend_overflow, params.saturation_tmag)
        if not open_edges.any() or complete[1:].all() or not _cut_cluster_reaches(
                clusters, complete, (r0 - w0, r1 - w0, c0 - v0, c1 - v0)):
            break
        halo *= 2
    block = _owned(ap, n, ap_cluster, complete, window, (r0 - w0, r1 - w0, c0 - v0, c1 - v0),
                   local, s_idx)
    block["rows"] += w0
    block["cols"] += v0
    block["crow"] += w0
    block["ccol"] += v0
    block["brow"] += w0
    block["bcol"] += v0
    return block, halo, tries


def _cut_cluster_reaches(clusters, complete, core) -> bool:
    """Does a cluster that the window cuts have pixels within (or a bounding box
    crossing) the core? Then the core may own one of its apertures."""
    bad = np.nonzero(~complete)[0]
    bad = bad[bad > 0]
    if not len(bad):
        return False
    r0, r1, c0, c1 = core
    rr, cc = np.nonzero(np.isin(clusters, bad))
    labs = clusters[rr, cc]
    for q in np.unique(labs):
        sel = labs == q
        if (rr[sel].min() < r1 + 1 and rr[sel].max() >= r0 - 1
                and cc[sel].min() < c1 + 1 and cc[sel].max() >= c0 - 1):
            return True
    return False


BLOCK_FIELDS = ("n_pixels", "flux", "crow", "ccol", "brow", "bcol", "star", "n_stars")


def _owned(ap, n, ap_cluster, complete, window, core, stars, star_index) -> dict:
    """The apertures of the window that the core owns, as one block of arrays (cheap
    to send between processes): ``offsets`` (n+1) into ``rows``/``cols``, and per
    aperture n_pixels, flux, centroid crow/ccol, brightest pixel brow/bcol, the
    index of its catalog star (−1: none) and how many catalog stars it holds."""
    offsets, rows, cols, count, flux, crow, ccol, brow, bcol = k2p2.aperture_table(ap, n, window)
    r0, r1, c0, c1 = core
    u = np.arange(1, n + 1)
    pr = np.floor(crow[1:] + 0.5)
    pc = np.floor(ccol[1:] + 0.5)
    keep = complete[ap_cluster[1:]] & (pr >= r0) & (pr < r1) & (pc >= c0) & (pc < c1)
    u = u[keep]
    star = np.full(n + 1, -1, np.int64)
    n_stars = np.zeros(n + 1, np.int64)
    if stars is not None and len(stars[0]):
        s_row, s_col, s_mag = (np.asarray(a, dtype=np.float64) for a in stars)
        s_pr = np.floor(s_row + 0.5).astype(np.int64)
        s_pc = np.floor(s_col + 0.5).astype(np.int64)
        nr, nc = ap.shape
        on = (s_pr >= 0) & (s_pr < nr) & (s_pc >= 0) & (s_pc < nc)
        star_ap = np.zeros(len(s_row), np.int64)
        star_ap[on] = ap[s_pr[on], s_pc[on]]
        hit = np.nonzero(star_ap > 0)[0]
        n_stars += np.bincount(star_ap[hit], minlength=n + 1)
        # the brightest star in each aperture (ties: the lower catalog index)
        order = hit[np.lexsort((np.asarray(star_index)[hit], s_mag[hit], star_ap[hit]))]
        first = np.ones(len(order), bool)
        first[1:] = star_ap[order][1:] != star_ap[order][:-1]
        star[star_ap[order][first]] = np.asarray(star_index)[order][first]
    sizes = count[u]
    out_offsets = np.zeros(len(u) + 1, np.int64)
    np.cumsum(sizes, out=out_offsets[1:])
    take = np.concatenate([np.arange(offsets[k], offsets[k + 1]) for k in u]) if len(u) else \
        np.empty(0, np.int64)
    return {"offsets": out_offsets, "rows": rows[take], "cols": cols[take],
            "n_pixels": sizes.astype(np.int64), "flux": flux[u], "crow": crow[u], "ccol": ccol[u],
            "brow": brow[u], "bcol": bcol[u], "star": star[u], "n_stars": n_stars[u]}


def concat_blocks(blocks: list[dict]) -> dict:
    """One block from many, ordered by label (the brightest pixel, row-major)."""
    if not blocks:
        return {"offsets": np.zeros(1, np.int64), "rows": np.empty(0, np.int64),
                "cols": np.empty(0, np.int64), **{k: np.empty(0) for k in BLOCK_FIELDS}}
    per = {k: np.concatenate([b[k] for b in blocks]) for k in BLOCK_FIELDS}
    spans = [(b["offsets"][i], b["offsets"][i + 1], j) for j, b in enumerate(blocks)
             for i in range(len(b["n_pixels"]))]
    order = np.lexsort((per["bcol"], per["brow"]))
    rows = np.concatenate([blocks[spans[i][2]]["rows"][spans[i][0]:spans[i][1]] for i in order]) \
        if len(order) else np.empty(0, np.int64)
    cols = np.concatenate([blocks[spans[i][2]]["cols"][spans[i][0]:spans[i][1]] for i in order]) \
        if len(order) else np.empty(0, np.int64)
    per = {k: v[order] for k, v in per.items()}
    offsets = np.zeros(len(order) + 1, np.int64)
    np.cumsum(per["n_pixels"], out=offsets[1:])
    return {"offsets": offsets, "rows": rows, "cols": cols, **per}


def records(block: dict) -> list[dict]:
    """A block as one dict per aperture (image coordinates)."""
    out = []
    off = block["offsets"]
    for i in range(len(block["n_pixels"])):
        out.append({"rows": block["rows"][off[i]:off[i + 1]], "cols": block["cols"][off[i]:off[i + 1]],
                    "n_pixels": int(block["n_pixels"][i]), "flux": float(block["flux"][i]),
                    "centroid": (float(block["crow"][i]), float(block["ccol"][i])),
                    "brightest": (int(block["brow"][i]), int(block["bcol"][i])),
                    "star": None if block["star"][i] < 0 else int(block["star"][i]),
                    "n_stars": int(block["n_stars"][i])})
    return out


def find_apertures(image, tile: int = TILE, params: Parameters | None = None, stars=None,
                   halo: int = HALO, cut: float | None = None):
    """The stage's result on an in-memory image, serially: (apertures sorted by label,
    threshold tuple, tiling stats). ``stars``: (rows, cols, tmag) in image pixels."""
    params = params or Parameters()
    image = np.asarray(image)
    thr = k2p2.threshold(image, params.thresh, params.trim, params.flux_limit, params.positive_only)
    if cut is None:
        cut = thr[0]
    star_arrays = None
    if stars is not None:
        rows, cols, tmag = (np.asarray(a, dtype=np.float64) for a in stars)
        star_arrays = (rows, cols, tmag, np.arange(len(rows)))
    blocks, widened, max_halo = [], 0, halo
    for core in tiles_of(image.shape, tile):
        block, used, tries = segment_tile(lambda a, b, c, d: image[a:b, c:d], image.shape, core,
                                          cut, params, star_arrays, halo)
        blocks.append(block)
        widened += tries > 1
        max_halo = max(max_halo, used)
    return records(concat_blocks(blocks)), (cut, *thr[1:]), {"widened": widened, "max_halo": max_halo}
