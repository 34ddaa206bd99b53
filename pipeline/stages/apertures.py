"""Apertures: the sum image of a corrected cube → K2P2 star apertures → ``apertures``.

The method is TASOC's K2P2 (``kernels.k2p2``; DESIGN §4). The stage:

1. one Dask task reads the cube's ``sumimage`` (written by the background stage) and
   computes the significance cut once for the whole CCD, so every tile uses the same;
2. one task per tile (default 512×512) reads its tile plus a halo and segments it
   (``pipeline.stages.aperture_tiles``).
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
from pipeline.stages.aperture_tiles import (HALO, TILE, Parameters, concat_blocks,  # noqa: F401 (public)
                                            find_apertures, records, segment_tile, tiles_of)
from pipeline.stages.stars import cube_wcs, load_stars  # noqa: F401 (public: load_stars)
from pipeline.store import Cube, Store

METHOD = "k2p2"
STAGE = "apertures"

Progress = Callable[[str, int, int], None]


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
