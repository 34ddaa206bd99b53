"""The ``jobs`` document of a run: what it holds and how it reads.

Fields: ``_id`` (the job id), ``status`` (queued → running → done | failed |
cancelled), ``created``/``started``/``finished`` (UTC), ``inputs``, ``cubes``,
``parameters`` (enough to resume the job: ``pipeline.graph.resume``), ``progress``
(per stage: done, total, reused), ``timings`` (seconds since the start at which each
stage's last task ended, plus ``plan`` and ``total``), ``counts``, ``rejected``
(file, reason), ``error``, ``resumable``, ``resumed_from``/``resumed_by``,
``scheduler``, ``dashboard``, ``cancel_requested``, ``waiting`` (the lease it waits
for) and ``heartbeat``: the watcher thread of the submitting process refreshes it
every few seconds, so a job whose process died is seen as ``lost`` (``status_of``)
rather than running forever.
"""

from __future__ import annotations

import datetime as dt
import traceback

class JobFailed(RuntimeError):
    """The run failed or was cancelled; the message says why."""


HEARTBEAT_SECONDS = 5.0
LOST_AFTER_SECONDS = 60.0          # no heartbeat for this long: the submitter is gone
ACTIVE = ("queued", "running")


def status_of(doc: dict, at: dt.datetime | None = None) -> str:
    """The job's status as a reader should see it: a queued or running job whose
    heartbeat stopped more than ``LOST_AFTER_SECONDS`` ago is ``lost`` (its process
    died; ``resume`` finishes it)."""
    status = doc.get("status")
    if status not in ACTIVE:
        return status
    beat = as_utc(doc.get("heartbeat") or doc.get("created"))
    if beat is None:
        return status
    at = at or now()
    return "lost" if (at - beat).total_seconds() > LOST_AFTER_SECONDS else status


def as_utc(value) -> dt.datetime | None:
    """A stored time as an aware UTC datetime (nx-27017 returns ``$set`` datetimes as
    naive ISO strings)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value if isinstance(value, dt.datetime) else None


def insert_once(collection, doc: dict) -> None:
    """Insert a new document; its duplicate means a retried insert had landed."""
    from pymongo.errors import DuplicateKeyError

    try:
        collection.insert_one(doc)
    except DuplicateKeyError:
        pass


def plan_counts(plan) -> dict:
    """Counts known once the ingest is planned: the reports of files still to be
    written read "rejected" with no reason until their pixel task has run."""
    reports = list(plan.reports.values())
    rejected = sum(r.status == "rejected" and bool(r.problem or r.error) for r in reports)
    duplicate = sum(r.status == "duplicate" for r in reports)
    return {"files_accepted": len(reports) - rejected - duplicate, "files_duplicate": duplicate,
            "files_rejected": rejected, "frames": 0, "apertures": 0, "lightcurves": 0}


def final_counts(report, plan) -> dict:
    """Counts of a finished run (``RunReport``); ``reused``: the work an earlier run
    had finished (``pipeline.checkpoints``) and this one took over."""
    out = plan_counts(plan) if plan is not None else {
        "files_accepted": 0, "files_duplicate": 0, "files_rejected": 0}
    if report.ingest is not None:
        files = report.ingest.files
        out.update(files_accepted=sum(f.status in ("ingested", "repaired") for f in files),
                   files_duplicate=sum(f.status == "duplicate" for f in files),
                   files_rejected=sum(f.status == "rejected" for f in files))
    cubes = report.cubes.values()
    out["frames"] = sum(c.background.frames for c in cubes)
    out["apertures"] = report.n_apertures
    out["lightcurves"] = report.n_lightcurves
    out["reused"] = {"background": sum(bool(c.background.reused) for c in cubes),
                     "apertures": sum("reused" in (c.apertures.timings or {}) for c in cubes),
                     "lightcurve_tiles": sum(c.lightcurves.reused_tiles for c in cubes)}
    return out


def rejections(reports) -> list[dict]:
    return [{"file": r.name or r.path, "reason": r.error or r.problem}
            for r in reports if r.status == "rejected" and (r.error or r.problem)]


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, JobFailed):
        return str(exc)
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
    return text + where


def scheduler_address(client) -> str | None:
    try:
        return client.scheduler.address
    except AttributeError:
        return None


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
