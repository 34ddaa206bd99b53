"""Jobs: the whole-run graph (``pipeline.graph``) submitted, followed, cancelled, resumed.

    job = pipeline.submit(["sector14/"], client=client)     # returns at once
    job.progress()      # {"ingest": {"done": 3, "total": 13}, "background": ..., ...}
    job.result()        # RunReport

Two jobs never work on the same cube at once: a job holds a catalog lease per cube
(``pipeline.catalog.leases``) from the moment its file headers name the cubes until
it ends, so a second run of the same CCD waits and then finds the first one's files
already ingested.

Each job has a ``jobs`` document (``_id`` = job id; ``pipeline.job_documents``) that
a watcher thread of the submitting process keeps up to date: status (queued → running
→ done | failed | cancelled), per-stage progress, timings, counts, rejected files, the
error text and a heartbeat. Another process (the API) cancels a job with
``request_cancel``: the watcher sees the flag and cancels the graph. ``resume(job_id)``
runs a failed, cancelled or lost job again from its document; only what it had not
finished runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import threading
import time as _time
import uuid
from typing import Iterable

from pipeline import job_documents as documents
from pipeline.catalog import Catalog, connect, match
from pipeline.catalog.leases import leases
from pipeline.cluster import StageProgress
from pipeline.config import Settings
from pipeline.graph import TILE, RunOptions, RunReport, build_graph
from pipeline.job_documents import JobFailed  # noqa: F401 (public)
from pipeline.stages.ingest import plan_ingest
from pipeline.stages.lightcurves import LightcurveOptions
from pipeline.store import Cube, Store

JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
RESUMABLE = ("failed", "cancelled", "lost")
UPDATE_SECONDS = 1.0


def submit(inputs: Iterable[str] | str = (), client=None, settings: Settings | None = None, *,
           store: Store | None = None, catalog: Catalog | None = None,
           cubes: Iterable[str] | None = None, stars=None, exclude=None, tile: int = TILE,
           targets_only: bool = False, force: bool = False, job_id: str | None = None,
           resumes: str | None = None) -> "Job":
    """Start a run and return its ``Job`` at once. ``inputs``: FITS files, folders of
    them or URLs (also keys already in the store's raw zone); ``cubes``: cube ids
    already ingested, for which the later stages run. ``stars``: a star catalog for
    the apertures; with ``targets_only`` only apertures holding one of its stars get a
    light curve (TASOC's targets). Work an earlier run finished from the same inputs
    is reused; ``force`` redoes it. Without ``client`` the job
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
    options = RunOptions(stars=stars, exclude=exclude, tile=tile, force=force,
                         lightcurves=LightcurveOptions(targets_only=targets_only))
    return Job(store, catalog, client, settings, inputs, cubes, options, job_id, resumes)


def resume(job_id: str, client=None, settings: Settings | None = None, *,
           store: Store | None = None, catalog: Catalog | None = None, stars=None) -> "Job":
    """Run a failed, cancelled or lost job again — same inputs, cubes and options, from
    its ``jobs`` document — as a new job (``resumed_from`` names the old one). What the
    first attempt finished is reused: ingested files, finished backgrounds, apertures
    and light-curve tiles; only the rest runs. ``stars``: the star catalog again, when
    the job was given one as a table (a file path or the ``stars`` collection is in
    the document)."""
    settings = settings or Settings.load()
    catalog = catalog or connect(settings)
    doc = catalog.jobs.find_one(match(_id=job_id))
    if doc is None:
        raise ValueError(f"no job {job_id!r} in the catalog")
    status = documents.status_of(doc)
    if status not in RESUMABLE:
        raise ValueError(f"job {job_id!r} is {status}: only a {', '.join(RESUMABLE)} job can be resumed")
    if doc.get("resumed_by"):
        raise ValueError(f"job {job_id!r} was already resumed by job {doc['resumed_by']!r}")
    params = doc.get("parameters") or {}
    if stars is None:
        stars = params.get("stars")
        if stars == "table":
            raise ValueError(f"job {job_id!r} was given its star catalog as a table: "
                             "pass it again (stars=...)")
    if store is None:
        url = params.get("store") or settings.store
        store = Store.from_settings(dataclasses.replace(settings, store=url))
    job = submit(doc.get("inputs") or [], client, settings, store=store, catalog=catalog,
                 cubes=doc.get("cubes") if not doc.get("inputs") else None, stars=stars,
                 exclude=params.get("exclude"), tile=int(params.get("tile") or TILE),
                 targets_only=bool(params.get("targets_only")), force=False, resumes=job_id)
    lost = {"status": "failed", "resumable": True, "finished": documents.now(),
            "error": "lost: its process stopped sending heartbeats"} if status == "lost" else {}
    catalog.jobs.update_one(match(_id=job_id), {"$set": {"resumed_by": job.id, **lost}})
    return job


def request_cancel(catalog: Catalog, job_id: str) -> bool:
    """Ask the process running job ``job_id`` to cancel it; False when the job is not
    queued or running (finished, or unknown)."""
    result = catalog.jobs.update_one({"_id": job_id, "status": {"$in": ["queued", "running"]}},
                                     {"$set": {"cancel_requested": True}})
    return result.matched_count > 0


class Job:
    """A run in progress. The watcher thread plans the ingest, submits the graph and
    mirrors its state into the job's ``jobs`` document."""

    def __init__(self, store: Store, catalog: Catalog, client, settings: Settings,
                 inputs: list[str], cubes: list[str], options: RunOptions, job_id: str | None,
                 resumes: str | None = None):
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
        self._beat = 0.0
        self._writing = threading.Lock()     # one document write at a time, in order
        documents.insert_once(self.catalog.jobs, {
            "_id": self.id, "status": "queued", "created": documents.now(), "started": None,
            "finished": None, "inputs": inputs, "cubes": cubes,
            "parameters": {**options.describe(), "store": store.url}, "progress": {},
            "timings": {}, "counts": {}, "rejected": [], "error": None, "resumable": False,
            "resumed_from": resumes, "resumed_by": None, "scheduler": None,
            "dashboard": None, "cancel_requested": False, "heartbeat": documents.now()})
        self._thread = threading.Thread(target=self._run, name=f"job-{self.id}", daemon=True)
        self._thread.start()
        # planning thousands of files or waiting for another job's lease takes minutes:
        # the heartbeat (and the scan's progress) must not wait for the graph to start
        threading.Thread(target=self._heartbeat, name=f"job-{self.id}-heartbeat", daemon=True).start()

    # -- public --------------------------------------------------------------------------
    def status(self) -> str:
        return self._status

    def progress(self) -> dict:
        return self._progress.snapshot()

    @property
    def error(self) -> str | None:
        """Why the job failed or was cancelled (None while it runs or when it is done)."""
        return self._error

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
            self._status = "cancelled" if self._cancel.is_set() else "failed"
            self._error = documents.describe(exc)
            if self._status == "failed":
                self._error += (f" — finished work is kept; resume with `tess-pipeline resume "
                                f"{self.id}` or pipeline.resume({self.id!r})")
            try:
                self._finish(self._status, error=self._error, resumable=True)
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
        self._update(started=documents.now(), scheduler=documents.scheduler_address(client),
                     dashboard=self.dashboard_link)

        ingest_d, plan, cube_ids = None, None, list(self.cubes)
        if self.inputs:
            self._progress.expect("scan", 0)
            plan = plan_ingest(self.inputs, self.store, self.catalog, client,
                               progress=self._planning_progress, before_screening=self._hold)
            ingest_d = plan.graph(self.catalog, self.id, self._progress)
            cube_ids += plan.cube_ids + [r.cube for r in plan.reports.values()
                                         if r.status == "duplicate" and r.cube]
            self._update(counts=documents.plan_counts(plan),
                         rejected=documents.rejections(plan.reports.values()))
        self._hold(cube_ids)
        self._timings["plan"] = round(_time.time() - self._started, 3)
        self._check_cancel()
        for cube_id in self.cubes:
            if not Cube(self.store, cube_id).exists():
                raise ValueError(f"no cube {cube_id} in {self.store.url}")
        graph = build_graph(self.store, self.catalog, cube_ids, ingest_d, self.options,
                            self._progress, self.id, pending=plan.cube_ids if plan else ())
        self._update(cubes=sorted(set(cube_ids)), progress=self.progress())
        self._future = client.compute(graph)
        last = None
        while not self._future.done():
            if self._cancel.is_set() or self._cancel_requested():
                self._cancel.set()
                self._future.cancel()
                raise JobFailed("cancelled by request")
            snapshot = self.progress()
            if snapshot != last or _time.time() - self._beat > documents.HEARTBEAT_SECONDS:
                self._note_stage_times(snapshot)
                self._update(progress=snapshot, timings=self._timings)
                last = snapshot
            _time.sleep(UPDATE_SECONDS / 4 if last is None else UPDATE_SECONDS)
        try:
            report = self._future.result()
        except BaseException:
            self._future.cancel()       # release the graph's tasks that have not started
            raise
        self._progress.finish()
        self._note_stage_times(self.progress())
        self._result = report
        if report.ingest is not None:
            self._update(rejected=documents.rejections(report.ingest.files))
        self._finish("done", counts=documents.final_counts(report, plan))

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

    def _finish(self, status: str, error: str | None = None, counts: dict | None = None,
                resumable: bool = False) -> None:
        self._status, self._error = status, error
        self._timings["total"] = round(_time.time() - self._started, 3)
        fields = {"status": status, "finished": documents.now(), "error": error,
                  "progress": self.progress(), "timings": self._timings, "resumable": resumable}
        if counts is not None:
            fields["counts"] = counts
        self._update(**fields)

    def _update(self, **fields) -> None:
        with self._writing:
            self._beat = _time.time()
            self.catalog.jobs.update_one(match(_id=self.id), {"$set": {
                "status": self._status, "heartbeat": documents.now(), **fields}})

    def _heartbeat(self) -> None:
        while not self._done.wait(documents.HEARTBEAT_SECONDS):
            if _time.time() - self._beat < documents.HEARTBEAT_SECONDS / 2:
                continue
            try:
                with self._writing:
                    if self._done.is_set() or self._status not in ("queued", "running"):
                        return                  # the final write is the watcher's
                    self._beat = _time.time()
                    self.catalog.jobs.update_one(match(_id=self.id), {"$set": {
                        "heartbeat": documents.now(), "progress": self.progress()}})
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one
                pass
