"""Apertures: the sum image of a corrected cube → K2P2 star apertures → ``apertures``.

The method is TASOC's K2P2 (``kernels.k2p2``; DESIGN §4). The stage:

1. one Dask task reads the cube's ``sumimage`` (written by the background stage) and
   computes the significance cut once for the whole CCD, so every tile uses the same;
2. one task per tile (default 512×512) reads its tile plus a halo and segments it.
   An aperture belongs to the tile holding the pixel of its flux-weighted centroid.
   Only apertures of DBSCAN clusters that lie wholly inside the window (with the
   kernel's guard band) are kept; when a cluster cut by the window reaches the tile,
   the task widens its halo (doubling, up to the whole image) and segments again. So
   the aperture set is exactly the whole-image result, whatever the tile size;
3. one task makes the documents: RA/Dec (WCS of the cube's first good frame) and the
   matched catalog star. The light curves need nothing more, so in the whole-run
   graph they start here (``aperture_tasks``);
4. one task replaces the cube's apertures in the catalog at once (one transaction
   where the server supports them; else upserts by label then removal of the
   previous run's leftovers — never a duplicate, as the label is unique).

Labels are integers ``row * 10000 + col`` of the aperture's brightest pixel in CCD
science coordinates: deterministic and independent of the tiling.

    report = run_apertures(store, catalog, "s0014-1-1", client, tile=512,
                           stars="stars.csv")           # or a Table, or "catalog"
    labels, rows, cols = aperture_pixels(catalog, 14, 1, 1)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time as _time
import uuid
from typing import Callable

import numpy as np
from distributed import Client

from kernels import k2p2
from dask import delayed

from pipeline import checkpoints
from pipeline.catalog import Catalog, CatalogRef, catalog_ref, match
from pipeline.cluster import StageProgress
from pipeline.lightcurves.apertures import tile_key
from pipeline.stages.aperture_documents import (LABEL_BASE, aperture_pixels, documents,  # noqa: F401 (public)
                                                replace_apertures)
from pipeline.stages.stars import STAR_MARGIN, cube_wcs, load_stars
from pipeline.store import Cube, Store

TILE = 512
HALO = 32                   # px; widened on demand (largest saturated stars, long blends)
METHOD = "k2p2"
STAGE = "apertures"

Progress = Callable[[str, int, int], None]


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


@dataclasses.dataclass
class AperturesReport:
    cube_id: str
    sector: int
    camera: int
    ccd: int
    n_apertures: int
    cut: float
    mode: float
    sigma: float
    bandwidth: float
    tile: int
    n_tiles: int
    widened: int                      # tiles that had to widen their halo
    max_halo: int
    n_stars: int                      # catalog stars on the cube (0: no catalog)
    n_matched: int                    # apertures with a catalog star
    run: str
    write_mode: str                   # "transaction" | "upsert"
    removed: int                      # documents of earlier runs removed
    seconds: float = 0.0
    timings: dict = dataclasses.field(default_factory=dict)
    # tile key → documents; a new run's hold ``pixels`` as an (n, 2) array, the catalog's a list
    by_tile: dict = dataclasses.field(default_factory=dict, repr=False)

    def summary(self) -> dict:
        """The report's figures without the documents (``dataclasses.asdict`` would
        deep-copy every document of ``by_tile`` first: seconds for a full CCD)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("by_tile", "timings")}

    def __repr__(self) -> str:
        return (f"<AperturesReport {self.cube_id}: {self.n_apertures} apertures "
                f"(cut {self.cut:.4g} e-/s) from {self.n_tiles} tiles of {self.tile} px, "
                + ("reused>" if "reused" in (self.timings or {}) else f"in {self.seconds:.1f} s>"))


# ============================================================ tiling (pure numpy)
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


# ============================================================ the stage
@dataclasses.dataclass
class ApertureTasks:
    """The stage's two ends inside a graph. ``documents``: the report with every
    document grouped by tile (``by_tile``) before the catalog holds them — all the
    light curves need, so they need not wait for the write. ``stored``: the same
    report once the cube's apertures are replaced in the catalog (write mode, count
    removed), which whatever reads the ``apertures`` collection must wait for."""

    documents: object
    stored: object


def aperture_tasks(store: Store, catalog, cube_id: str, upstream=(), tile: int = TILE,
                   stars=None, params: Parameters | None = None, halo: int = HALO,
                   transactions: bool | None = None, progress: StageProgress | None = None,
                   token: str | None = None) -> ApertureTasks:
    """The stage for one cube as Dask tasks: the threshold, one task per tile, the
    documents, and their catalog write. ``upstream``: results to wait for (the
    background stage, which writes the sum image). The tiles come from the cube's
    shape, so the graph is built before the sum image exists."""
    progress = progress or StageProgress()
    params = params or Parameters()
    token = token or uuid.uuid4().hex[:8]
    cube = Cube(store, cube_id)
    if not cube.exists():
        raise ValueError(f"cube {cube_id} does not exist in {store.url}")
    attrs = dict(cube.group("r").attrs)
    shape = tuple(int(v) for v in cube.group("r")["flux"].shape[1:])
    ref = catalog_ref(catalog)
    cid = f"{cube_id}-{token}"
    thr = delayed(progress.task(_threshold_task, STAGE), pure=False)(
        cube, params, *upstream, dask_key_name=f"apertures-threshold-{cid}")
    star_set = None
    if stars is not None:
        star_set = delayed(_stars_task, pure=False)(ref, cube_id, stars, shape, *upstream,
                                                    dask_key_name=f"apertures-stars-{cid}")
    cores = tiles_of(shape, tile)
    blocks = [delayed(progress.task(_tile_task, STAGE), pure=False)(
                  cube, shape, core, thr, params, star_set, halo,
                  dask_key_name=f"apertures-tile-{core[0]}-{core[2]}-{cid}") for core in cores]
    facts = {"cube_id": cube_id, "cube": cube, "stars_token": checkpoints.stars_token(stars, catalog),
             "ccd": (int(attrs["sector"]), int(attrs["camera"]), int(attrs["ccd"])),
             "origin": tuple(int(v) for v in (attrs.get("origin") or (0, 0))), "tile": tile,
             "halo": halo, "params": params, "transactions": transactions, "n_tiles": len(cores)}
    found = delayed(progress.task(_documents_task, STAGE), pure=False)(
        ref, facts, thr, star_set, blocks, dask_key_name=f"apertures-documents-{cid}")
    stored = delayed(progress.task(_write_task, STAGE), pure=False)(
        ref, facts, thr, found, dask_key_name=f"apertures-write-{cid}")
    return ApertureTasks(found, stored)


def aperture_graph(store: Store, catalog, cube_id: str, upstream=(), tile: int = TILE,
                   stars=None, params: Parameters | None = None, halo: int = HALO,
                   transactions: bool | None = None, progress: StageProgress | None = None,
                   token: str | None = None):
    """The stage for one cube as one ``dask.delayed`` → ``AperturesReport`` (with the
    documents grouped by tile in ``report.by_tile``), once the catalog holds them
    (``aperture_tasks``, ``.stored``)."""
    return aperture_tasks(store, catalog, cube_id, upstream, tile, stars, params, halo,
                          transactions, progress, token).stored


def run_apertures(store: Store, catalog: Catalog, cube_id: str, client: Client,
                  tile: int = TILE, stars=None, progress: Progress | None = None,
                  params: Parameters | None = None, halo: int = HALO,
                  transactions: bool | None = None) -> AperturesReport:
    """Find the K2P2 apertures of cube ``cube_id`` and store them in ``apertures``.

    ``stars``: optional star catalog — a CSV or FITS file with id, ra, dec, tmag; an
    astropy Table (or dict of columns) with those; or "catalog" for the catalog's
    ``stars`` collection. ``transactions``: None tries a transaction and falls back to
    upserts when the server has none; False forces the upsert path. ``progress`` is
    called as progress("apertures", done, total) as the tasks finish."""
    cube = Cube(store, cube_id)
    if cube.exists() and "sumimage" not in cube.group("r"):
        raise ValueError(f"cube {cube_id} has no sum image: run the background stage first")
    counter = StageProgress(client, progress)
    try:
        graph = aperture_graph(store, catalog, cube_id, (), tile, stars, params, halo,
                               transactions, counter)
        return client.compute(graph).result()
    finally:
        counter.finish()
        counter.detach()


def _threshold_task(cube: Cube, params: Parameters, *upstream) -> dict:
    started = _time.time()
    group = cube.group("r")
    if "sumimage" not in group:
        raise ValueError(f"cube {cube.cube_id} has no sum image: run the background stage first")
    cut, mode, sigma, bandwidth = (float(v) for v in k2p2.threshold(
        group["sumimage"][...], params.thresh, params.trim, params.flux_limit, params.positive_only))
    if not math.isfinite(cut):
        raise ValueError(f"cube {cube.cube_id}: the sum image holds no finite value")
    return {"cut": cut, "mode": mode, "sigma": sigma, "bandwidth": bandwidth, "started": started}


def _stars_task(ref: CatalogRef, cube_id: str, source, shape, *upstream):
    catalog = ref.open()
    return load_stars(source, catalog, cube_wcs(catalog, cube_id), shape)


def _tile_task(cube: Cube, shape, core, thr: dict, params: Parameters, star_set, halo: int):
    stars = None
    if star_set is not None:
        table = star_set[0]
        stars = (table["row"], table["col"], table["tmag"], np.arange(len(table)))
    array = cube.group("r")["sumimage"]
    return segment_tile(lambda a, b, c, d: array[a:b, c:d], shape, core, thr["cut"], params,
                        stars, halo)


def _documents_task(ref: CatalogRef, facts: dict, thr: dict, star_set, blocks) -> AperturesReport:
    """The documents (RA/Dec from the cube's WCS, matched catalog stars) of a new
    aperture run, grouped by tile; not yet in the catalog (``write_mode`` "pending")."""
    catalog = ref.open()
    cube_id, tile, params = facts["cube_id"], facts["tile"], facts["params"]
    found = records(concat_blocks([b for b, _, _ in blocks]))
    widened = sum(tries > 1 for _, _, tries in blocks)
    max_halo = max([facts["halo"], *(used for _, used, _ in blocks)])
    star_table, star_source = star_set if star_set is not None else (None, None)
    run = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    now = dt.datetime.now(dt.timezone.utc)
    parameters = {**params.as_dict(), "method": METHOD, "eps": math.sqrt(2.0), "cut": thr["cut"],
                  "mode": thr["mode"], "sigma": thr["sigma"], "bandwidth": thr["bandwidth"],
                  "tile": tile, "halo": facts["halo"], "catalog": star_source}
    docs = documents(found, cube_wcs(catalog, cube_id), facts["origin"], facts["ccd"], cube_id,
                      tile, star_table, parameters, run, now)
    by_tile: dict[str, list] = {}
    for d in docs:
        by_tile.setdefault(tile_key(d["tile"]), []).append(d)
    sector, camera, ccd = facts["ccd"]
    return AperturesReport(cube_id, sector, camera, ccd, len(docs), thr["cut"], thr["mode"],
                           thr["sigma"], thr["bandwidth"], tile, facts["n_tiles"], widened,
                           max_halo, 0 if star_table is None else len(star_table),
                           sum(d["star"] is not None for d in docs), run, "pending", 0,
                           _time.time() - thr["started"], {}, by_tile)


def _write_task(ref: CatalogRef, facts: dict, thr: dict, found: AperturesReport) -> AperturesReport:
    """The atomic replacement of the cube's apertures by ``found``'s documents, and the
    checkpoint that lets a later run reuse them."""
    catalog = ref.open()
    docs = [d for tile_docs in found.by_tile.values() for d in tile_docs]
    mode, removed = replace_apertures(catalog, facts["ccd"], found.cube_id, docs, found.run,
                                      facts["transactions"])
    report = dataclasses.replace(found, write_mode=mode, removed=removed,
                                 seconds=_time.time() - thr["started"])
    background_run = (facts["cube"].group("r").attrs.get("background") or {}).get("run")
    if background_run:
        stamp = checkpoints.aperture_stamp(background_run, found.tile, facts["halo"],
                                           facts["params"].as_dict(), facts["stars_token"])
        checkpoints.save(catalog, checkpoints.aperture_key(found.cube_id), found.cube_id, stamp,
                         report.summary())
    return report


def finished_apertures(catalog: Catalog, cube: Cube, background_run: str, tile: int = TILE,
                       stars=None, params: Parameters | None = None,
                       halo: int = HALO) -> AperturesReport | None:
    """The cube's stored apertures as a report (documents grouped by tile), when they
    were found on the background ``background_run`` with these parameters — a run
    that reuses them (``pipeline.checkpoints``); else None."""
    params = params or Parameters()
    stamp = checkpoints.aperture_stamp(background_run, tile, halo, params.as_dict(),
                                       checkpoints.stars_token(stars, catalog))
    saved = checkpoints.load(catalog, checkpoints.aperture_key(cube.cube_id), stamp)
    if saved is None:
        return None
    docs = list(catalog.apertures.find(match(cube=cube.cube_id, run=saved["run"])))
    if len(docs) != saved["n_apertures"]:
        return None                     # changed since: find them again
    by_tile: dict[str, list] = {}
    for d in sorted(docs, key=lambda d: d["label"]):
        by_tile.setdefault(tile_key(d["tile"]), []).append(d)
    return AperturesReport(**{**saved, "seconds": 0.0, "timings": {"reused": True}}, by_tile=by_tile)


def core_key(core, origin, tile: int) -> str:
    """The tile key (``pipeline.lightcurves.apertures.tile_key``) that the documents of
    the apertures of a tile core (array coordinates) carry."""
    return tile_key({"row": int(core[0]) + int(origin[0]), "col": int(core[2]) + int(origin[1]),
                     "size": tile})


# ============================================================ WCS and stars
