"""``/jobs``: submit a whole run to the configured Dask scheduler (``pipeline.submit``),
follow it through its ``jobs`` document, cancel it, resume it.

A queued or running job whose submitting process stopped sending heartbeats reads as
``lost`` (``pipeline.job_documents.status_of``); a failed, cancelled or lost job is
resumed with ``POST /jobs/{id}/resume``: a new job that reuses what it finished.

Inputs are raw-zone keys (what ``POST /inject`` and ``/raw`` return), never server
paths or URLs: a client may only make the pipeline read what is already in the
project's store."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from starlette.concurrency import run_in_threadpool

from pipeline.api.deps import ApiKey, Limit, PageToken, State
from pipeline.api.keys import BadKey, check_cube_id, check_key
from pipeline.api.models import JobCancelled, JobCreated, JobRequest, Page, errors
from pipeline.api.pagination import decode_token, eq, fingerprint, keyset_page
from pipeline.api.responses import JSON

router = APIRouter(prefix="/jobs", tags=["jobs"])

JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled", "lost")
FINISHED = ("done", "failed", "cancelled")
SORT = [("created", -1), ("_id", -1)]      # newest first
JobId = Annotated[str, Path(max_length=100, pattern=r"^[A-Za-z0-9._-]+$")]


def _graph():
    try:
        import pipeline.graph as graph
    except ImportError as exc:
        raise HTTPException(503, f"job submission is not available: {exc}") from None
    return graph


TIMES = ("created", "started", "finished")
_NAIVE_TIME = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?$")


def _job_doc(doc: dict) -> dict:
    from pipeline.job_documents import status_of

    out = {"id": str(doc["_id"]), **doc, "_id": str(doc["_id"]), "status": status_of(doc)}
    for name in TIMES:
        # nx-27017 hands back datetimes written by $set as naive strings; say they are UTC
        value = out.get(name)
        if isinstance(value, str) and _NAIVE_TIME.match(value):
            out[name] = dt.datetime.fromisoformat(value).replace(tzinfo=dt.timezone.utc)
    for name in ("cancel_requested", "resumable"):       # ... and booleans as 0/1
        if name in out:
            out[name] = bool(out[name])
    out.pop("heartbeat", None)
    return out


def _checked_inputs(state, request: JobRequest) -> tuple[list[str], list[str] | None]:
    if not request.inputs and not request.cubes:
        raise HTTPException(422, "give inputs (raw-zone keys of files, e.g. from POST /inject) "
                                 "or cubes (ids of cubes already ingested)")
    store = state.store
    keys = []
    for key in request.inputs:
        try:
            keys.append(check_key(key, zones=("raw",)))
        except BadKey as exc:
            raise HTTPException(422, f"inputs: {key[:100]!r}: {exc}") from None
    cubes = None
    if request.cubes:
        cubes = []
        for cube in request.cubes:
            try:
                cubes.append(check_cube_id(cube))
            except BadKey as exc:
                raise HTTPException(422, f"cubes: {exc}") from None
    missing = [k for k in keys if not store.exists(k)]
    if missing:
        raise HTTPException(404, f"not in the raw zone: {', '.join(missing[:5])}"
                                 + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    missing = [c for c in cubes or [] if not store.exists(f"staging/{c}.zarr/zarr.json")]
    if missing:
        raise HTTPException(404, f"no such cube in the staging zone: {', '.join(missing[:5])}")
    return keys, cubes


def _submit(state, request: JobRequest) -> dict:
    keys, cubes = _checked_inputs(state, request)
    graph = _graph()
    store = state.store
    # the pipeline reads inputs by URL; keys in the raw zone are the store's own objects
    inputs = [store.url_of(k) for k in keys]
    try:
        job = graph.submit(inputs, client=state.client(), settings=state.settings, store=store,
                           catalog=state.job_catalog, cubes=cubes)
    except ValueError as exc:             # what submit refuses to run, it says why
        raise HTTPException(422, str(exc)) from None
    state.jobs[job.id] = job
    return {"id": job.id, "status": job.status()}


@router.post("", status_code=202, response_model=JobCreated, dependencies=[ApiKey],
             responses=errors(401, 404, 422, 503), summary="Submit a run (ingest and/or later stages)")
async def create_job(state: State, request: JobRequest):
    return JSON(await run_in_threadpool(_submit, state, request), status_code=202)


@router.get("", response_model=Page[dict], responses=errors(422, 503), summary="Jobs, newest first")
def list_jobs(state: State,
              status: Annotated[str | None, Query(max_length=20, description="|".join(JOB_STATUSES))] = None,
              limit: Limit = 100, page_token: PageToken = None):
    if status is not None and status not in JOB_STATUSES:
        raise HTTPException(422, f"query parameter 'status': must be one of {', '.join(JOB_STATUSES)}")
    # "lost" is read from the heartbeat: those are among the stored queued/running ones
    query = {"status": {"$in": ["queued", "running"]}} if status == "lost" else (
        {"status": eq(status)} if status else {})
    fp = fingerprint("jobs", {"status": status})
    after = decode_token(page_token, fp, len(SORT)) if page_token else None
    docs, token = keyset_page(state.catalog.jobs, query, SORT, limit, after, fp)
    items = [_job_doc(d) for d in docs]
    if status is not None:          # stored as running, seen as lost (and the reverse)
        items = [d for d in items if d["status"] == status]
    return JSON({"items": items, "next_page_token": token})


@router.get("/{id}", response_model=dict, responses=errors(404, 422, 503), summary="One job: status, progress, counts")
def get_job(state: State, id: JobId):
    doc = state.catalog.jobs.find_one({"_id": id})
    if doc is None:
        raise HTTPException(404, f"no job {id!r}")
    return JSON(_job_doc(doc))


def _cancel(state, job_id: str) -> dict:
    catalog = state.catalog
    doc = catalog.jobs.find_one({"_id": job_id}, {"status": 1})
    if doc is None:
        raise HTTPException(404, f"no job {job_id!r}")
    if doc.get("status") in FINISHED:
        raise HTTPException(409, f"job {job_id!r} has already finished ({doc['status']})")
    job = state.jobs.get(job_id)
    _graph().request_cancel(catalog, job_id)   # the document says so, whoever runs it
    if job is not None:                        # submitted by this process: cancel it now
        job.cancel()
    doc = catalog.jobs.find_one({"_id": job_id}, {"status": 1}) or doc
    return {"id": job_id, "status": doc.get("status"), "cancel_requested": True}


@router.delete("/{id}", response_model=JobCancelled, dependencies=[ApiKey],
               responses=errors(401, 404, 409, 422, 503), summary="Cancel a job")
async def cancel_job(state: State, id: JobId):
    return JSON(await run_in_threadpool(_cancel, state, id))


def _resume(state, job_id: str) -> dict:
    graph = _graph()
    try:
        job = graph.resume(job_id, client=state.client(), settings=state.settings,
                           store=state.store, catalog=state.job_catalog)
    except ValueError as exc:
        text = str(exc)
        raise HTTPException(404 if text.startswith("no job") else 409, text) from None
    state.jobs[job.id] = job
    return {"id": job.id, "status": job.status()}


@router.post("/{id}/resume", status_code=202, response_model=JobCreated, dependencies=[ApiKey],
             responses=errors(401, 404, 409, 422, 503),
             summary="Run a failed, cancelled or lost job again, reusing what it finished")
async def resume_job(state: State, id: JobId):
    return JSON(await run_in_threadpool(_resume, state, id), status_code=202)
