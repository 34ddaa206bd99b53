"""The light-curve stage inside the whole-run graph (``pipeline.graph``), where the
apertures are made by an earlier task of the same graph and so are unknown when the
graph is built: one task per aperture-stage tile (known from the cube's shape), then
one task that removes the light curves of apertures that are gone."""

from __future__ import annotations

import dataclasses
import time as _time
import uuid

from pipeline import checkpoints
from pipeline.catalog import CatalogRef, catalog_ref
from pipeline.lightcurves.apertures import apertures_from_documents, plan_tiles
from pipeline.stages.lightcurves import (STAGE, LightcurveOptions, LightcurveReport, TileReport,
                                         _safe, tile_lightcurves)
from pipeline.store import Cube, Store


def lightcurve_graph(store: Store, catalog, cube_id: str, apertures, tile_keys: list[str],
                     options: LightcurveOptions | None = None, progress=None,
                     token: str | None = None, stored=None):
    """The stage inside a whole-run graph, where the apertures come from an earlier task
    (``apertures``: a delayed ``AperturesReport`` whose ``by_tile`` maps tile keys to
    documents) and so are unknown when the graph is built: one task per aperture-stage
    tile (``tile_keys``, known from the cube's shape) measures that tile's apertures
    (``tile_lightcurves``: one pass over the cube's time blocks), then one task removes
    light curves of apertures that are gone. ``stored``: the task that writes the
    apertures to the catalog, which that last task also waits for, so the stage ends
    with the apertures of its light curves in the catalog. → delayed ``LightcurveReport``."""
    from dask import delayed

    from pipeline.cluster import StageProgress

    progress = progress or StageProgress()
    options = options or LightcurveOptions()
    token = token or uuid.uuid4().hex[:8]
    ref = catalog_ref(catalog)
    cube = Cube(store, cube_id)
    cid = f"{_safe(cube_id)}-{token}"
    parts = [delayed(progress.task(_measure_tile, STAGE), pure=False)(
                 cube, ref, key, apertures, options,
                 dask_key_name=f"lightcurves-tile-{i}-{cid}") for i, key in enumerate(tile_keys)]
    return delayed(progress.task(_remove_stale, STAGE), pure=False)(
        ref, cube_id, apertures if stored is None else stored, parts, _time.time(),
        dask_key_name=f"lightcurves-finish-{cid}")


def _measure_tile(cube: Cube, ref: CatalogRef, key: str, apertures, options: LightcurveOptions):
    """The light curves of one aperture-stage tile → (TileReports, skipped labels,
    reused): a tile finished earlier from the same background and apertures
    (``pipeline.checkpoints``) is not measured again."""
    docs = apertures.by_tile.get(key, [])
    if options.targets_only:
        docs = [d for d in docs if d.get("star") is not None]
    if not docs:
        return [], [], False
    group = cube.group("r")
    attrs = dict(group.attrs)
    background_run = (attrs.get("background") or {}).get("run")
    stamp = checkpoints.lightcurve_stamp(background_run, apertures.run, options)
    checkpoint = checkpoints.lightcurve_key(cube.cube_id, key)
    if background_run:
        saved = checkpoints.load(ref.open(), checkpoint, stamp)
        if saved is not None:
            return [_report(r) for r in saved["reports"]], saved["skipped"], True
    origin = tuple(int(v) for v in (attrs.get("origin") or (0, 0)))
    tiles, skipped = plan_tiles(apertures_from_documents(docs), origin, group["flux"].shape[1:])
    reports = [tile_lightcurves(cube, tile, ref, options) for tile in tiles]
    if background_run:
        checkpoints.save(ref.open(), checkpoint, cube.cube_id, stamp,
                         {"reports": [dataclasses.asdict(r) for r in reports], "skipped": skipped})
    return reports, skipped, False


def _remove_stale(ref: CatalogRef, cube_id: str, apertures, parts, started: float) -> LightcurveReport:
    reports = [r for tile_reports, _, _ in parts for r in tile_reports]
    skipped = [label for _, labels, _ in parts for label in labels]
    labels = [label for t in reports for label in t.labels]
    removed = ref.open().lightcurves.delete_many({
        "sector": apertures.sector, "camera": apertures.camera, "ccd": apertures.ccd,
        "cube": cube_id, "label": {"$nin": labels}}).deleted_count
    return LightcurveReport(cube_id, apertures.n_apertures, sum(len(t.labels) for t in reports),
                            removed, skipped, sorted(reports, key=lambda r: (r.tile, str(r.labels[:1]))),
                            _time.time() - started, reused_tiles=sum(bool(r) for _, _, r in parts))


def _report(saved: dict) -> TileReport:
    """A saved tile report (missing statistics were stored as None) as a TileReport."""
    summaries = [{k: (float("nan") if v is None and k != "label" else v) for k, v in row.items()}
                 for row in saved["summaries"]]
    return TileReport(**{**saved, "summaries": summaries})
