"""The whole run as one Dask graph, and jobs: submit it, follow it, cancel it.

    job = pipeline.submit(["sector14/"], client=client)     # returns at once
    job.progress()      # {"ingest": {"done": 3, "total": 13}, "background": ..., ...}
    job.result()        # RunReport

A run is: plan the ingest on the driver (the file headers are scanned on the cluster;
the plan places every cadence in its cube, so the cubes' lengths — and with them the
number of tasks of every later stage — are known), then ONE graph for every cube the
inputs touch: the ingest's pixel tasks and catalog record → the background (fits, the
sum image, smoothing and flags per time chunk) → the apertures (threshold, one task
per tile, the catalog write) → the light curves and spectra (one task per aperture
tile, then the removal of stale ones). Every stage's tasks announce their completion
(``pipeline.cluster.StageProgress``), so progress needs no future per task.

Two jobs never work on the same cube at once: a job holds a catalog lease per cube
(``pipeline.catalog.leases``) from the moment its file headers name the cubes until
it ends, so a second run of the same CCD waits and then finds the first one's files
already ingested.

Each job has a ``jobs`` document (``_id`` = job id) that a watcher thread of the
submitting process keeps up to date: status (queued → running → done | failed |
cancelled), per-stage progress, timings, counts, rejected files and the error text.
Another process (the API) cancels a job with ``request_cancel``: the watcher sees
the flag and cancels the graph.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import threading
import time as _time
import traceback
import uuid
from typing import Iterable

from dask import delayed

from pipeline.catalog import Catalog, connect
from pipeline.catalog.leases import leases
from pipeline.cluster import StageProgress
from pipeline.config import Settings
from pipeline.stages.apertures import TILE, aperture_graph, core_key, tiles_of
from pipeline.stages.background import background_graph
from pipeline.stages.ingest import IngestReport, plan_ingest
from pipeline.stages.lightcurves import LightcurveOptions
from pipeline.stages.lightcurves_graph import lightcurve_graph
from pipeline.store import Cube, Store

JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
STAGES = ("scan", "ingest", "background", "apertures", "lightcurves")
UPDATE_SECONDS = 1.0


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

    def describe(self) -> dict:
        stars = self.stars if isinstance(self.stars, (str, type(None))) else "table"
        return {"stars": str(stars) if stars is not None else None, "tile": self.tile,
                "targets_only": self.lightcurves.targets_only,
                "exclude": None if self.exclude is None else len(list(self.exclude))}


# -- the graph -------------------------------------------------------------------------------
def build_graph(store: Store, catalog: Catalog, cube_ids: Iterable[str], ingest=None,
                options: RunOptions | None = None, progress: StageProgress | None = None,
                job_id: str = "run"):
    """One delayed → ``RunReport`` over the cubes ``cube_ids`` (which exist in the
    store, sized for every cadence they will hold). ``ingest``: the delayed ingest
    (``IngestPlan.graph``) every cube waits for, or None when the cubes are complete."""
    options = options or RunOptions()
    progress = progress or StageProgress()
    upstream = () if ingest is None else (ingest,)
    runs = {}
    for cube_id in sorted(set(cube_ids)):
        token = uuid.uuid4().hex[:8]
        group = Cube(store, cube_id).group("r")
        shape = group["flux"].shape[1:]
        origin = tuple(int(v) for v in (group.attrs.get("origin") or (0, 0)))
        tile = tile_for(shape, options.tile)
        bg = background_graph(store, cube_id, upstream, options.exclude, progress, token)
        ap = aperture_graph(store, catalog, cube_id, (bg,), tile, options.stars,
                            progress=progress, token=token)
        keys = [core_key(core, origin, tile) for core in tiles_of(shape, tile)]
        lc = lightcurve_graph(store, catalog, cube_id, ap, keys, options.lightcurves, progress, token)
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


# -- jobs ------------------------------------------------------------------------------------
def submit(inputs: Iterable[str] | str = (), client=None, settings: Settings | None = None, *,
           store: Store | None = None, catalog: Catalog | None = None,
           cubes: Iterable[str] | None = None, stars=None, exclude=None, tile: int = TILE,
           targets_only: bool = False, job_id: str | None = None) -> "Job":
    """Start a run and return its ``Job`` at once. ``inputs``: FITS files, folders of
    them or URLs (also keys already in the store's raw zone); ``cubes``: cube ids
    already ingested, for which the later stages run. ``stars``: a star catalog for
    the apertures; with ``targets_only`` only apertures holding one of its stars get a
    light curve (TASOC's targets). Without ``client`` the job
    uses ``settings.scheduler`` or starts a local cluster, closed when it ends."""
    settings = settings or Settings.load()
    store = store or Store.from_settings(settings)
    catalog = catalog or connect(settings)
    inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
    cubes = list(cubes or [])
    if not inputs and not cubes:
        raise ValueError("nothing to run: give input files or cube ids")
    if targets_only and stars is None:
        raise ValueError("targets_only needs a star catalog (stars=...)")
    options = RunOptions(stars=stars, exclude=exclude, tile=tile,
                         lightcurves=LightcurveOptions(targets_only=targets_only))
    return Job(store, catalog, client, settings, inputs, cubes, options, job_id)


def request_cancel(catalog: Catalog, job_id: str) -> bool:
    """Ask the process running job ``job_id`` to cancel it; False when the job is not
    queued or running (finished, or unknown)."""
    result = catalog.jobs.update_one({"_id": job_id, "status": {"$in": ["queued", "running"]}},
                                     {"$set": {"cancel_requested": True}})
    return result.matched_count > 0


class JobFailed(RuntimeError):
    """The run failed or was cancelled; the message says why."""


class Job:
    """A run in progress. The watcher thread plans the ingest, submits the graph and
    mirrors its state into the job's ``jobs`` document."""

    def __init__(self, store: Store, catalog: Catalog, client, settings: Settings,
                 inputs: list[str], cubes: list[str], options: RunOptions, job_id: str | None):
        self.id = job_id or f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        self.store, self.catalog, self.settings = store, catalog, settings
        self.inputs, self.cubes, self.options = inputs, cubes, options
        self._client, self._own_client = client, client is None
        self._progress = StageProgress()
        self._future = None
        self._result: RunReport | None = None
        self._error: str | None = None
        self._status = "queued"
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._started = _time.time()
        self._timings: dict[str, float] = {}
        self._leases = contextlib.ExitStack()
        self._held: set[str] = set()
        _insert_once(self.catalog.jobs, {
            "_id": self.id, "status": "queued", "created": _now(), "started": None,
            "finished": None, "inputs": inputs, "cubes": cubes,
            "parameters": {**options.describe(), "store": store.url}, "progress": {},
            "timings": {}, "counts": {}, "rejected": [], "error": None, "scheduler": None,
            "dashboard": None, "cancel_requested": False})
        self._thread = threading.Thread(target=self._run, name=f"job-{self.id}", daemon=True)
        self._thread.start()

    # -- public --------------------------------------------------------------------------
    def status(self) -> str:
        return self._status

    def progress(self) -> dict:
        return self._progress.snapshot()

    @property
    def dashboard_link(self) -> str | None:
        client = self._client
        return getattr(client, "dashboard_link", None) if client is not None else None

    def result(self, timeout: float | None = None) -> RunReport:
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.id} still {self._status} after {timeout} s")
        if self._status != "done":
            raise JobFailed(f"job {self.id} {self._status}: {self._error}")
        return self._result

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> str:
        self._done.wait(timeout)
        return self._status

    def __repr__(self) -> str:
        stages = ", ".join(f"{s} {p['done']}/{p['total']}" for s, p in self.progress().items())
        return f"<Job {self.id} {self._status}{': ' + stages if stages else ''}>"

    # -- the watcher ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._execute()
        except Exception as exc:  # noqa: BLE001 - every failure ends up in the job document
            self._status, self._error = ("cancelled" if self._cancel.is_set() else "failed",
                                         _describe(exc))
            try:
                self._finish(self._status, error=self._error)
            except Exception:  # noqa: BLE001 - the catalog is gone: the error stays in memory
                pass
        finally:
            for cleanup in (self._leases.close, self._progress.detach, self._close_client):
                try:
                    cleanup()
                except Exception:  # noqa: BLE001 - cleaning up must not hide the outcome
                    pass
            self._done.set()

    def _close_client(self) -> None:
        if self._own_client and self._client is not None:
            cluster = getattr(self._client, "cluster", None) if not self.settings.scheduler else None
            self._client.close()
            if cluster is not None:
                cluster.close()

    def _execute(self) -> None:
        if self._own_client:
            from pipeline.cluster import connect as connect_scheduler, local

            self._client = connect_scheduler(self.settings.scheduler) if self.settings.scheduler else local()
        client = self._client
        self._progress.attach(client)
        self._status = "running"
        self._update(started=_now(), scheduler=_address(client), dashboard=self.dashboard_link)

        ingest_d, plan, cube_ids = None, None, list(self.cubes)
        if self.inputs:
            self._progress.expect("scan", 0)
            plan = plan_ingest(self.inputs, self.store, self.catalog, client,
                               progress=self._planning_progress, before_screening=self._hold)
            ingest_d = plan.graph(self.catalog, self.id, self._progress)
            cube_ids += plan.cube_ids + [r.cube for r in plan.reports.values()
                                         if r.status == "duplicate" and r.cube]
            self._update(counts=_plan_counts(plan), rejected=_rejections(plan.reports.values()))
        self._hold(cube_ids)
        self._timings["plan"] = round(_time.time() - self._started, 3)
        self._check_cancel()
        for cube_id in self.cubes:
            if not Cube(self.store, cube_id).exists():
                raise ValueError(f"no cube {cube_id} in {self.store.url}")
        graph = build_graph(self.store, self.catalog, cube_ids, ingest_d, self.options,
                            self._progress, self.id)
        self._update(cubes=sorted(set(cube_ids)), progress=self.progress())
        self._future = client.compute(graph)
        last = None
        while not self._future.done():
            if self._cancel.is_set() or self._cancel_requested():
                self._cancel.set()
                self._future.cancel()
                raise JobFailed("cancelled by request")
            snapshot = self.progress()
            if snapshot != last:
                self._note_stage_times(snapshot)
                self._update(progress=snapshot, timings=self._timings)
                last = snapshot
            _time.sleep(UPDATE_SECONDS / 4 if last is None else UPDATE_SECONDS)
        report = self._future.result()
        self._progress.finish()
        self._note_stage_times(self.progress())
        self._result = report
        if report.ingest is not None:
            self._update(rejected=_rejections(report.ingest.files))
        self._finish("done", counts=_counts(report, plan))

    def _hold(self, cube_ids) -> None:
        """Take the leases of the cubes this job writes (waiting for other jobs')."""
        wanted = sorted({f"cube:{c}" for c in cube_ids} - self._held)
        if not wanted:
            return

        def waiting(name, other):
            self._update(waiting=f"{name.removeprefix('cube:')} is being processed by job {other}")

        self._leases.enter_context(leases(self.catalog, wanted, self.id, waiting=waiting,
                                          cancelled=lambda: self._cancel.is_set() or self._cancel_requested()))
        self._held.update(wanted)
        self._update(waiting=None)

    def _planning_progress(self, phase: str, done: int, total: int) -> None:
        if phase == "scan":
            self._progress.totals["scan"] = total
            self._progress.done["scan"] = done
            if done == total:
                self._progress.finished_at.setdefault("scan", _time.time())

    def _note_stage_times(self, snapshot: dict) -> None:
        """Seconds since the job started at which each stage's last task finished."""
        for stage, at in self._progress.finished_at.items():
            self._timings.setdefault(stage, round(at - self._started, 3))

    def _cancel_requested(self) -> bool:
        doc = self.catalog.jobs.find_one({"_id": self.id}, {"cancel_requested": 1})
        return bool(doc and doc.get("cancel_requested"))

    def _check_cancel(self) -> None:
        if self._cancel.is_set() or self._cancel_requested():
            self._cancel.set()
            raise JobFailed("cancelled by request")

    def _finish(self, status: str, error: str | None = None, counts: dict | None = None) -> None:
        self._status, self._error = status, error
        self._timings["total"] = round(_time.time() - self._started, 3)
        fields = {"status": status, "finished": _now(), "error": error, "progress": self.progress(),
                  "timings": self._timings}
        if counts is not None:
            fields["counts"] = counts
        self._update(**fields)

    def _update(self, **fields) -> None:
        self.catalog.jobs.update_one({"_id": self.id}, {"$set": {"status": self._status, **fields}})


def _insert_once(collection, doc: dict) -> None:
    """Insert a new document; its duplicate means a retried insert had landed."""
    from pymongo.errors import DuplicateKeyError

    try:
        collection.insert_one(doc)
    except DuplicateKeyError:
        pass


def _plan_counts(plan) -> dict:
    """Counts known once the ingest is planned: the reports of files still to be
    written read "rejected" with no reason until their pixel task has run."""
    reports = list(plan.reports.values())
    rejected = sum(r.status == "rejected" and bool(r.problem or r.error) for r in reports)
    duplicate = sum(r.status == "duplicate" for r in reports)
    return {"files_accepted": len(reports) - rejected - duplicate, "files_duplicate": duplicate,
            "files_rejected": rejected, "frames": 0, "apertures": 0, "lightcurves": 0}


def _counts(report: RunReport, plan) -> dict:
    counts = _plan_counts(plan) if plan is not None else {
        "files_accepted": 0, "files_duplicate": 0, "files_rejected": 0}
    if report.ingest is not None:
        files = report.ingest.files
        counts.update(files_accepted=sum(f.status in ("ingested", "repaired") for f in files),
                      files_duplicate=sum(f.status == "duplicate" for f in files),
                      files_rejected=sum(f.status == "rejected" for f in files))
    counts["frames"] = sum(c.background.frames for c in report.cubes.values())
    counts["apertures"] = report.n_apertures
    counts["lightcurves"] = report.n_lightcurves
    return counts


def _rejections(reports) -> list[dict]:
    return [{"file": r.name or r.path, "reason": r.error or r.problem}
            for r in reports if r.status == "rejected" and (r.error or r.problem)]


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, JobFailed):
        return str(exc)
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
    return text + where


def _address(client) -> str | None:
    try:
        return client.scheduler.address
    except AttributeError:
        return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
