"""The whole run as one Dask graph.

A run is: plan the ingest on the driver (the file headers are scanned on the cluster;
the plan places every cadence in its cube, so the cubes' lengths — and with them the
number of tasks of every later stage — are known), then ONE graph for every cube the
inputs touch: the ingest's pixel tasks and catalog record → the background (fits, the
sum image, smoothing and flags per time chunk) → the apertures (threshold, one task
per tile, the documents, the catalog write) → the light curves and spectra (one task
per aperture tile, from the documents, so alongside the aperture write; then the
removal of stale ones). Every stage's tasks announce their completion
(``pipeline.cluster.StageProgress``), so progress needs no future per task.

Finished work is never redone (``pipeline.checkpoints``): a cube whose background,
apertures or light-curve tiles were finished from the same inputs by an earlier run
reuses them; ``RunOptions.force`` redoes everything.

Jobs — submitting this graph, following and cancelling it, resuming it — are in
``pipeline.jobs``; ``submit``, ``resume``, ``request_cancel``, ``Job`` and
``JobFailed`` are also importable from here.
"""

from __future__ import annotations

import dataclasses
import time as _time
import uuid
from typing import Iterable

from dask import delayed

from pipeline import checkpoints
from pipeline.camera import as_excludes
from pipeline.catalog import Catalog
from pipeline.cluster import StageProgress
from pipeline.stages.apertures import TILE, aperture_tasks, core_key, finished_apertures, tiles_of
from pipeline.stages.background import background_graph, finished_report
from pipeline.stages.ingest import IngestReport
from pipeline.stages.lightcurves import LightcurveOptions
from pipeline.stages.lightcurves_graph import lightcurve_graph
from pipeline.store import Cube, Store

STAGES = ("scan", "ingest", "background", "apertures", "lightcurves")


@dataclasses.dataclass
class CubeRun:
    background: object
    apertures: object
    lightcurves: object


@dataclasses.dataclass
class RunReport:
    job_id: str
    ingest: IngestReport | None
    cubes: dict                      # cube id → CubeRun
    seconds: float = 0.0

    @property
    def n_apertures(self) -> int:
        return sum(c.apertures.n_apertures for c in self.cubes.values())

    @property
    def n_lightcurves(self) -> int:
        return sum(c.lightcurves.written for c in self.cubes.values())

    def __repr__(self) -> str:
        ingest = repr(self.ingest) if self.ingest else "no ingest"
        return (f"<RunReport {self.job_id}: {ingest}; {len(self.cubes)} cube(s), "
                f"{self.n_apertures} apertures, {self.n_lightcurves} light curves "
                f"in {self.seconds:.1f} s>")


@dataclasses.dataclass
class RunOptions:
    """What a run does besides the defaults of each stage."""

    stars: object = None             # star catalog for the apertures (file, Table, "catalog")
    exclude: object = None           # manual-exclude regions for the background
    tile: int = TILE
    lightcurves: LightcurveOptions = dataclasses.field(default_factory=LightcurveOptions)
    force: bool = False              # redo finished work (else reused: pipeline.checkpoints)

    def describe(self) -> dict:
        """The options as the job document keeps them (what ``resume`` reads back)."""
        stars = self.stars
        if stars is not None and not isinstance(stars, str):
            stars = str(stars) if hasattr(stars, "__fspath__") else "table"
        return {"stars": stars, "tile": self.tile, "targets_only": self.lightcurves.targets_only,
                "exclude": None if self.exclude is None else [e.to_dict() for e in as_excludes(self.exclude)],
                "force": self.force}


# -- the graph -------------------------------------------------------------------------------
def build_graph(store: Store, catalog: Catalog, cube_ids: Iterable[str], ingest=None,
                options: RunOptions | None = None, progress: StageProgress | None = None,
                job_id: str = "run", pending: Iterable[str] = ()):
    """One delayed → ``RunReport`` over the cubes ``cube_ids`` (which exist in the
    store, sized for every cadence they will hold). ``ingest``: the delayed ingest
    (``IngestPlan.graph``) every cube waits for, or None when the cubes are complete.
    ``pending``: the cubes that ingest writes to; the others may reuse a finished
    background and apertures (unless ``options.force``)."""
    options = options or RunOptions()
    progress = progress or StageProgress()
    upstream = () if ingest is None else (ingest,)
    pending = set(pending)
    runs = {}
    for cube_id in sorted(set(cube_ids)):
        token = uuid.uuid4().hex[:8]
        cube = Cube(store, cube_id)
        group = cube.group("r")
        shape = group["flux"].shape[1:]
        origin = tuple(int(v) for v in (group.attrs.get("origin") or (0, 0)))
        tile = tile_for(shape, options.tile)
        done_bg = done_ap = None
        if not options.force and cube_id not in pending:
            done_bg = checkpoints.finished_background(cube, as_excludes(options.exclude))
        if done_bg is not None:
            bg = finished_report(cube_id, done_bg)
            progress.reuse("background")
            done_ap = finished_apertures(catalog, cube, done_bg["run"], tile, options.stars)
        else:
            bg = background_graph(store, cube_id, upstream, options.exclude, progress, token)
        if done_ap is not None:
            ap = found = delayed(done_ap, name=f"apertures-reused-{cube_id}-{token}", traverse=False)
            progress.reuse("apertures")
        else:
            parts = aperture_tasks(store, catalog, cube_id, (bg,), tile, options.stars,
                                   progress=progress, token=token)
            ap, found = parts.stored, parts.documents
        keys = [core_key(core, origin, tile) for core in tiles_of(shape, tile)]
        # the light curves measure the documents while the catalog write runs
        lc = lightcurve_graph(store, catalog, cube_id, found, keys, options.lightcurves, progress,
                              token, stored=ap)
        runs[cube_id] = (bg, ap, lc)
    return delayed(_report, pure=False)(job_id, ingest, runs, _time.time(),
                                        dask_key_name=f"run-report-{job_id}")


def tile_for(shape, tile: int) -> int:
    """The aperture tile for a cube: ``tile``, or smaller for a cube under two tiles
    wide, so that a small cube still gives its light curves (one task per aperture
    tile) to several workers. The apertures do not depend on the tile size."""
    half = -(-max(int(v) for v in shape) // 2)
    return max(64, min(int(tile), -(-half // 64) * 64))


def _report(job_id: str, ingest, runs: dict, started: float) -> RunReport:
    cubes = {}
    for cube_id, (bg, ap, lc) in runs.items():
        # the documents per tile served the light-curve tasks; the report stays small
        cubes[cube_id] = CubeRun(bg, dataclasses.replace(ap, by_tile={}), lc)
    return RunReport(job_id, ingest, cubes, _time.time() - started)


def __getattr__(name):
    # the jobs module builds on this one; importing it lazily keeps either importable first
    if name in ("submit", "resume", "request_cancel", "Job", "JobFailed"):
        from pipeline import jobs

        return getattr(jobs, name)
    raise AttributeError(f"module 'pipeline.graph' has no attribute {name!r}")
