"""Light curves: apertures × background-corrected cube → ``lightcurves`` documents.

Per tile (the apertures the aperture stage assigned to one CCD tile), the stage reads
only the bounding box of that tile's aperture pixels, time block by time block, and
the numba kernel ``kernels.photometry.aperture_photometry`` measures every aperture of
the tile in one pass over each block: flux = Σ (flux − background), flux_err =
√Σ flux_err², flux_bkg = Σ background, the flux-weighted centroid, the OR of the pixel
flags and the count of non-finite pixels. There is no per-star pass over the cube.
The tile's task then joins its blocks, sets the quality (frame quality | photometry
bits, ``pipeline.lightcurves.quality``), computes the summary statistics
(``pipeline.lightcurves.stats``) and the spectrum (``pipeline.lightcurves.spectrum``)
of each light curve and bulk-upserts the documents (``pipeline.lightcurves.documents``).

Dask pieces (each a plain function of picklable arguments, so they can sit in any
graph):

* ``plan_lightcurves(store, cube_id, apertures)`` → ``LightcurvePlan`` (tiles, skipped
  apertures, cube facts) — driver side, cheap.
* ``photometry_block(cube, tile, start, stop)`` → ``Block``: one task per (tile, time
  block); memory is bounded by the block (``time_blocks``), not the cube's length.
* ``finish_tile(cube, tile, blocks, catalog_ref, options)`` → ``TileReport``: one task
  per tile; it reads the cube's coordinate arrays and writes the documents itself,
  so no light curve travels back to the driver.
* ``tile_lightcurves(cube, tile, catalog_ref, options)``: both in one task.
* ``lightcurve_tasks(plan, catalog, options)`` → one ``dask.delayed`` per tile (its
  photometry blocks as dependencies), ready for ``client.compute`` or to be joined
  with other stages' delayed objects into one graph.
* ``run_lightcurves(store, catalog, cube_id, client, ...)`` → ``LightcurveReport``:
  plan, submit, follow, and remove light curves of apertures that no longer exist.
* ``lightcurves_graph.lightcurve_graph(store, catalog, cube_id, apertures, tile_keys)``: the stage inside
  the whole-run graph (``pipeline.graph``), where the apertures are made by an earlier
  task (so they are unknown when the graph is built): one task per aperture-stage
  tile, then one that removes stale light curves.

The cube must hold ``background`` (and normally ``pixel_flags``) from the background
stage, covering every cadence of ``flux``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time as _time
import uuid
from typing import Callable

import numpy as np

from kernels.photometry import aperture_photometry
from pipeline.lightcurves import spectrum as spectrum_mod
from pipeline.lightcurves.apertures import Aperture, Tile, load_apertures, plan_tiles
from pipeline.lightcurves.documents import CatalogRef, build_document, catalog_ref, write_documents
from pipeline.lightcurves.quality import DEFAULT_BITMASK, good_cadences, lightcurve_quality
from pipeline.lightcurves.stats import summary
from pipeline.store import Cube, Store

STAGE = "lightcurves"
BLOCK_BYTES = 64 << 20           # input bytes (flux, err, background, flags) per block
_BYTES_PER_PIXEL = 4 + 4 + 4 + 1
EXCLUDE_BITS = 2                 # pixel flag "manual exclude": such pixels are left out,
                                 # as in the background stage's corrected flux

Progress = Callable[[str, int, int], None]


class LightcurveError(RuntimeError):
    """The cube cannot be measured (e.g. no background yet)."""


@dataclasses.dataclass(frozen=True)
class LightcurveOptions:
    bitmask: int = DEFAULT_BITMASK        # cadences left out of stats and spectra
    block_bytes: int = BLOCK_BYTES
    spectrum: bool = True
    oversample: float = 5.0
    max_points: int = 5000                # stored spectrum points (binned beyond)
    n_peaks: int = 10
    snr_stop: float = 4.0
    min_separation_uhz: float | None = None   # default 1/T
    clip: float | None = 6.0              # outlier clip before the spectrum (None: off)
    group_size: int = 100                 # apertures per finishing task
    targets_only: bool = False            # only apertures matched to a catalog star (TASOC's
                                          # targets); else every aperture


@dataclasses.dataclass
class Block:
    """Photometry of one tile over cadences start:stop: arrays (n_apertures, stop−start)."""

    start: int
    stop: int
    arrays: dict


@dataclasses.dataclass
class TileReport:
    tile: str
    labels: list
    n_cadences: int
    written: int
    seconds: float
    summaries: list             # [{label, median_flux, rms_hour_ppm, ptp_ppm, n_good, peak_frequency_uhz}]


@dataclasses.dataclass
class LightcurvePlan:
    cube: Cube
    sector: int
    camera: int
    ccd: int
    origin: tuple[int, int]
    shape: tuple[int, int]
    n_cadences: int
    time_chunk: int
    tiles: list[Tile]
    skipped: list               # labels of apertures with no pixel in the cube

    @property
    def n_apertures(self) -> int:
        return sum(len(t.apertures) for t in self.tiles)

    def __repr__(self) -> str:
        return (f"<LightcurvePlan {self.cube.cube_id}: {self.n_apertures} apertures in "
                f"{len(self.tiles)} tiles, {self.n_cadences} cadences>")


@dataclasses.dataclass
class LightcurveReport:
    cube: str
    n_apertures: int
    written: int
    removed: int
    skipped: list
    tiles: list[TileReport]
    seconds: float
    reused_tiles: int = 0       # tiles finished by an earlier run, not measured again

    @property
    def summaries(self) -> list[dict]:
        return [s for t in self.tiles for s in t.summaries]

    def __repr__(self) -> str:
        return (f"<LightcurveReport {self.cube}: {self.written} light curves from "
                f"{len({t.tile for t in self.tiles})} tiles in {self.seconds:.1f} s"
                + (f", {len(self.skipped)} apertures off the cube" if self.skipped else "")
                + (f", {self.removed} stale removed" if self.removed else "")
                + (f", {self.reused_tiles} tiles reused" if self.reused_tiles else "") + ">")


# -- planning (driver) ------------------------------------------------------------------
def plan_lightcurves(store: Store, cube_id: str, apertures: list[Aperture],
                     n_cadences: int | None = None) -> LightcurvePlan:
    """Group ``apertures`` into tiles over cube ``cube_id``. ``n_cadences`` (default:
    the cube's present length) sets the time blocks when the graph is built before
    the cube is complete."""
    cube = Cube(store, cube_id)
    group = cube.group("r")
    attrs = dict(group.attrs)
    shape = tuple(int(v) for v in group["flux"].shape[1:])
    origin = tuple(int(v) for v in (attrs.get("origin") or (0, 0)))
    tiles, skipped = plan_tiles(apertures, origin, shape)
    n = int(group["flux"].shape[0]) if n_cadences is None else int(n_cadences)
    return LightcurvePlan(cube, int(attrs["sector"]), int(attrs["camera"]), int(attrs["ccd"]),
                          origin, shape, n, int(group["flux"].chunks[0]), tiles, skipped)


def time_blocks(n_cadences: int, time_chunk: int, tile_shape, block_bytes: int = BLOCK_BYTES):
    """(start, stop) blocks covering the cadences: whole zarr time chunks, about
    ``block_bytes`` of input each."""
    per_cadence = max(1, tile_shape[0] * tile_shape[1] * _BYTES_PER_PIXEL)
    depth = max(1, block_bytes // per_cadence)
    depth = max(time_chunk, (depth // time_chunk) * time_chunk)
    return [(s, min(s + depth, n_cadences)) for s in range(0, n_cadences, depth)]


# -- tasks (workers) ----------------------------------------------------------------------
_EMPTY_F = np.empty((0, 0, 0), np.float32)
_EMPTY_U8 = np.empty((0, 0, 0), np.uint8)
BLOCK_ARRAYS = ("flux", "flux_err", "flux_bkg", "centroid_row", "centroid_col",
                "pixel_quality", "n_bad_pixels")


def _read(array, start, stop, region):
    r0, r1, c0, c1 = region
    return array[start:stop, r0:r1, c0:c1]


def photometry_block(cube: Cube, tile: Tile, start: int, stop: int) -> Block:
    """Aperture photometry of every aperture of ``tile`` over cadences start:stop."""
    group = cube.group("r")
    n_total = group["flux"].shape[0]
    stop = min(stop, n_total)
    n_ap = len(tile.apertures)
    nt = max(0, stop - start)
    out = {name: np.full((n_ap, nt), np.nan) for name in BLOCK_ARRAYS[:5]}
    out["pixel_quality"] = np.zeros((n_ap, nt), np.uint8)
    out["n_bad_pixels"] = np.zeros((n_ap, nt), np.int32)
    if nt == 0:
        return Block(start, start, out)
    names = set(group.array_keys())
    if "background" not in names:
        raise LightcurveError(f"cube {cube.cube_id} has no background: run the background stage first")
    bkg_array = group["background"]
    if bkg_array.shape[0] < stop:
        raise LightcurveError(f"cube {cube.cube_id}: the background covers {bkg_array.shape[0]} of "
                              f"{n_total} cadences: run the background stage again")
    flux = _read(group["flux"], start, stop, tile.region)
    err = _read(group["flux_err"], start, stop, tile.region)
    bkg = _read(bkg_array, start, stop, tile.region)
    flags = (_read(group["pixel_flags"], start, stop, tile.region).astype(np.uint8, copy=False)
             if "pixel_flags" in names and group["pixel_flags"].shape[0] >= stop else _EMPTY_U8)
    r0, _, c0, _ = tile.region
    row_off, col_off = tile.origin[0] + r0, tile.origin[1] + c0
    for labels, members in tile.layers():
        f, e, b, cr, cc, pq, nb = aperture_photometry(flux, err, bkg, flags, labels, len(members),
                                                            True, EXCLUDE_BITS)
        out["flux"][members] = f
        out["flux_err"][members] = e
        out["flux_bkg"][members] = b
        out["centroid_row"][members] = cr + row_off
        out["centroid_col"][members] = cc + col_off
        out["pixel_quality"][members] = pq
        out["n_bad_pixels"][members] = nb
    return Block(start, stop, out)


def _join(blocks: list[Block], n_ap: int) -> dict:
    blocks = sorted((b for b in blocks if b.stop > b.start), key=lambda b: b.start)
    if not blocks:
        return {name: np.empty((n_ap, 0)) for name in BLOCK_ARRAYS}
    return {name: np.concatenate([b.arrays[name] for b in blocks], axis=1) for name in BLOCK_ARRAYS}


def _radec(meta: dict):
    for ra_key, dec_key in (("ra", "dec"), ("centroid_ra", "centroid_dec")):
        ra, dec = meta.get(ra_key), meta.get(dec_key)
        if ra is not None and dec is not None:
            return ra, dec
    return None, None


def finish_tile(cube: Cube, tile: Tile, blocks: list[Block], catalog, options: LightcurveOptions | None = None,
                members=None) -> TileReport:
    """Join the tile's blocks into light curves, add quality, statistics and spectrum,
    and upsert one document per aperture. ``catalog``: a Catalog or CatalogRef;
    ``members``: indices of the tile's apertures to finish (default all), so a large
    tile's spectra can be spread over several tasks."""
    from pipeline import __version__

    started = _time.perf_counter()
    options = options or LightcurveOptions()
    group = cube.group("r")
    attrs = dict(group.attrs)
    coords = cube.coords()
    n = len(coords["time"])
    data = _join(blocks, len(tile.apertures))
    n = min(n, data["flux"].shape[1])
    docs, summaries = [], []
    members = range(len(tile.apertures)) if members is None else members
    for i in members:
        ap = tile.apertures[i]
        series = {name: data[name][i, :n] for name in BLOCK_ARRAYS}
        series["time"] = coords["time"][:n]
        series["cadenceno"] = coords["cadenceno"][:n]
        series["quality"] = lightcurve_quality(coords["quality"][:n], series["pixel_quality"],
                                               series["n_bad_pixels"])
        stats = summary(series["time"], series["flux"], series["quality"], options.bitmask)
        spec = None
        if options.spectrum and stats["median_flux"] > 0:
            good = good_cadences(series["quality"], series["flux"], options.bitmask)
            y = (series["flux"][good] / stats["median_flux"] - 1.0) * 1e6
            spec = spectrum_mod.analyse(series["time"][good], y, oversample=options.oversample,
                                        max_points=options.max_points, n_peaks=options.n_peaks,
                                        snr_stop=options.snr_stop,
                                        min_separation=options.min_separation_uhz, clip=options.clip)
        ra, dec = _radec(ap.meta)
        doc = build_document(sector=attrs["sector"], camera=attrs["camera"], ccd=attrs["ccd"],
                             label=ap.label, cube=cube.cube_id,
                             tile=ap.tile if ap.tile is not None else tile.key, aperture=ap,
                             series=series, stats=stats, spectrum=spec, ra=ra, dec=dec,
                             bitmask=options.bitmask, version=__version__)
        docs.append(doc)
        summaries.append({"label": doc["label"], "median_flux": stats["median_flux"],
                          "rms_hour_ppm": stats["rms_hour_ppm"], "ptp_ppm": stats["ptp_ppm"],
                          "n_good": stats["n_good"], "peak_frequency_uhz": doc["peak_frequency_uhz"],
                          "peak_amplitude_ppm": doc["peak_amplitude_ppm"]})
    target = catalog.open() if isinstance(catalog, CatalogRef) else catalog
    result = write_documents(target.lightcurves, docs)
    return TileReport(tile.key, [tile.apertures[i].label for i in members], n,
                      result["upserted"] + result["matched"],
                      _time.perf_counter() - started, summaries)


def tile_lightcurves(cube: Cube, tile: Tile, catalog, options: LightcurveOptions | None = None,
                     n_cadences: int | None = None) -> TileReport:
    """One task for a whole tile: its time blocks one after the other, then
    ``finish_tile``. Memory is bounded by one block plus the tile's light curves."""
    options = options or LightcurveOptions()
    group = cube.group("r")
    n = int(group["flux"].shape[0]) if n_cadences is None else n_cadences
    blocks = [photometry_block(cube, tile, a, b)
              for a, b in time_blocks(n, int(group["flux"].chunks[0]), tile.shape, options.block_bytes)]
    return finish_tile(cube, tile, blocks, catalog, options)


# -- graph -----------------------------------------------------------------------------------
def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text))


def lightcurve_tasks(plan: LightcurvePlan, catalog, options: LightcurveOptions | None = None,
                     token: str | None = None, tiles: dict | None = None) -> list:
    """``dask.delayed`` objects, one per (tile, group of ≤ ``options.group_size``
    apertures): ``finish_tile`` over that tile's ``photometry_block`` tasks (which every
    group of the tile shares). Each computes to a ``TileReport``. Keys are
    ``lightcurves-photometry-<cube>-<tile>-<start>-<token>`` and
    ``lightcurves-tile-<cube>-<tile>-<group>-<token>`` (the token keeps re-runs from
    meeting results the scheduler still holds). ``tiles``: tile key → that tile
    already on the cluster (a ``client.scatter`` future), so the graph does not carry
    the apertures (tens of MiB for a full CCD)."""
    from dask import delayed

    options = options or LightcurveOptions()
    ref = catalog_ref(catalog)
    token = token or uuid.uuid4().hex[:10]
    cube = plan.cube
    cid = _safe(cube.cube_id)
    out = []
    for tile in plan.tiles:
        tkey = _safe(tile.key)
        tile_d = (tiles or {}).get(tile.key)
        if tile_d is None:
            tile_d = delayed(tile, name=f"lightcurves-tiledef-{cid}-{tkey}-{token}", traverse=False)
        blocks = [delayed(photometry_block, pure=False)(
                      cube, tile_d, a, b, dask_key_name=f"lightcurves-photometry-{cid}-{tkey}-{a}-{token}")
                  for a, b in time_blocks(plan.n_cadences, plan.time_chunk, tile.shape, options.block_bytes)]
        n_ap = len(tile.apertures)
        for g, first in enumerate(range(0, n_ap, max(1, options.group_size))):
            members = list(range(first, min(first + max(1, options.group_size), n_ap)))
            out.append(delayed(finish_tile, pure=False)(
                cube, tile_d, blocks, ref, options, members,
                dask_key_name=f"lightcurves-tile-{cid}-{tkey}-{g}-{token}"))
    return out


def _fill_radec(catalog, cube_id: str, apertures: list[Aperture], origin) -> None:
    """RA/Dec from the cube's WCS (its frame documents) for apertures without them."""
    missing = [ap for ap in apertures if _radec(ap.meta) == (None, None) and ap.n_pixels]
    if not missing:
        return
    doc = catalog.frames.find_one({"cube": cube_id, "wcs": {"$ne": None}, "status": "ingested"},
                                  {"wcs": 1, "_id": 0})
    if not doc or not doc.get("wcs"):
        return
    from astropy.io import fits
    from astropy.wcs import WCS

    try:
        wcs = WCS(fits.Header.fromstring(doc["wcs"], sep="\n"))
    except Exception:  # noqa: BLE001 - an unusable WCS only means no RA/Dec
        return
    row0, col0 = origin
    rows = np.array([ap.meta.get("centroid_row", ap.rows.mean()) for ap in missing], float) - row0
    cols = np.array([ap.meta.get("centroid_col", ap.cols.mean()) for ap in missing], float) - col0
    ra, dec = wcs.pixel_to_world_values(cols, rows)
    for ap, a, d in zip(missing, np.atleast_1d(ra), np.atleast_1d(dec)):
        if math.isfinite(a) and math.isfinite(d):
            ap.meta["ra"], ap.meta["dec"] = float(a), float(d)


def run_lightcurves(store: Store, catalog, cube_id: str, client, apertures: list[Aperture] | None = None,
                    progress: Progress | None = None, options: LightcurveOptions | None = None) -> LightcurveReport:
    """Measure every aperture of cube ``cube_id`` on the cluster of ``client`` and write
    the ``lightcurves`` documents. ``apertures``: default those of the cube's CCD in
    the catalog. Light curves of this cube whose aperture is gone are removed, so a
    re-run leaves exactly one document per current aperture."""
    from distributed import as_completed

    started = _time.perf_counter()
    progress = progress or (lambda stage, done, total: None)
    cube = Cube(store, cube_id)
    if not cube.exists():
        raise LightcurveError(f"no cube {cube_id} in {store.url}")
    attrs = dict(cube.group("r").attrs)
    if apertures is None:
        apertures = load_apertures(catalog, attrs["sector"], attrs["camera"], attrs["ccd"], cube_id)
    plan = plan_lightcurves(store, cube_id, apertures)
    _fill_radec(catalog, cube_id, [a for t in plan.tiles for a in t.apertures], plan.origin)
    scattered = client.scatter(plan.tiles) if plan.tiles else []
    tasks = lightcurve_tasks(plan, catalog, options,
                             tiles={t.key: f for t, f in zip(plan.tiles, scattered)})
    reports: list[TileReport] = []
    progress(STAGE, 0, len(tasks))
    if tasks:
        futures = client.compute(tasks)
        for done, future in enumerate(as_completed(futures), start=1):
            reports.append(future.result())
            progress(STAGE, done, len(tasks))
    labels = [label for t in reports for label in t.labels]
    removed = catalog.lightcurves.delete_many({
        "sector": plan.sector, "camera": plan.camera, "ccd": plan.ccd, "cube": cube_id,
        "label": {"$nin": labels}}).deleted_count
    return LightcurveReport(cube_id, plan.n_apertures, sum(len(t.labels) for t in reports), removed,
                            plan.skipped, sorted(reports, key=lambda r: (r.tile, str(r.labels[:1]))),
                            _time.perf_counter() - started)
