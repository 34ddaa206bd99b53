"""``GET /health`` (store, catalog and Dask scheduler, each with its latency; 503 when
one is down) and ``GET /stats`` (objects and bytes per zone, documents per
collection, jobs by status, frames per sector/camera/ccd)."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

from fastapi import APIRouter

from pipeline.api.deps import State
from pipeline.api.models import Health, Stats, errors
from pipeline.api.responses import JSON
from pipeline.store import ZONES

router = APIRouter(tags=["service"])

CHECK_TIMEOUT = 3.0          # s per service: a hung backend makes /health slow, never stuck
STATS_TTL = 10.0             # s: walking the zones lists every object, so it is cached
COLLECTIONS = ("frames", "apertures", "lightcurves", "jobs")
_CUBE_CCD = re.compile(r"^s(\d{4})-(\d)-(\d)")


def _check_store(state) -> dict:
    store = state.store
    if store.is_local:
        store.fs.ls(store.root, detail=False)
    else:
        try:
            store.fs.ls(store.root, detail=False, refresh=True)
        except FileNotFoundError:     # an empty store has no prefix yet: the bucket must exist
            bucket = store.root.split("/")[0]
            if not store.fs.exists(bucket):
                raise FileNotFoundError(f"bucket {bucket!r} does not exist") from None
    return {}


def _check_catalog(state) -> dict:
    state.catalog.ping()
    return {}


def _check_scheduler(state) -> dict:
    if not state.has_client and not state.settings.scheduler:
        return {"address": None, "dashboard": None,
                "note": "no scheduler configured (TESS_SCHEDULER): a local cluster starts with the first job"}
    client = state.client(start_local=False)
    if client.status not in ("running", "connecting"):
        raise ConnectionError(f"client is {client.status}")
    client.sync(client.scheduler.identity, callback_timeout=CHECK_TIMEOUT)
    return {"address": client.scheduler.address, "dashboard": client.dashboard_link}


async def _timed(check, state) -> dict:
    started = time.perf_counter()
    try:
        pending = asyncio.get_running_loop().run_in_executor(state.health_pool, check, state)
        extra = await asyncio.wait_for(pending, CHECK_TIMEOUT)
        return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2), "error": None,
                **extra}
    except asyncio.TimeoutError:
        error = f"no answer within {CHECK_TIMEOUT:.0f} s"
    except Exception as exc:  # noqa: BLE001 - any failure means the service is down; say which
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}".rstrip(": ")
    return {"ok": False, "latency_ms": round((time.perf_counter() - started) * 1000, 2), "error": error}


@router.get("/health", response_model=Health, responses={503: {"model": Health, "description": "a service is down"}},
            summary="Store, catalog and Dask scheduler reachability, with latency")
async def health(state: State):
    names = ("store", "catalog", "scheduler")
    results = await asyncio.gather(*(_timed(c, state) for c in (_check_store, _check_catalog, _check_scheduler)))
    services = dict(zip(names, results))
    if "address" not in services["scheduler"]:
        services["scheduler"].update(address=state.settings.scheduler, dashboard=None)
    ok = all(s["ok"] for s in services.values())
    return JSON({"status": "ok" if ok else "degraded", "services": services}, status_code=200 if ok else 503)


def _zone_stats(store) -> dict:
    zones = {}
    for zone in ZONES:
        path = store.path(zone)
        if not store.is_local:
            store.fs.invalidate_cache(path)
        try:
            found = store.fs.find(path, detail=True)
        except FileNotFoundError:
            found = {}
        files = [info for info in found.values() if info.get("type") != "directory"]
        zones[zone] = {"objects": len(files), "bytes": int(sum(int(i.get("size") or 0) for i in files))}
    return zones


def _frames_per_ccd(frames) -> list[dict]:
    # nx-27017 cannot $group on a compound key; cube ids start with s<sector>-<camera>-<ccd>
    # (cut-outs add a suffix), so counts per cube add up to counts per CCD.
    counts: Counter = Counter()
    for row in frames.aggregate([{"$match": {"status": "ingested"}},
                                 {"$group": {"_id": "$cube", "count": {"$sum": 1}}}]):
        m = _CUBE_CCD.match(str(row.get("_id") or ""))
        if m:
            counts[(int(m[1]), int(m[2]), int(m[3]))] += int(row["count"])
    return [{"sector": s, "camera": c, "ccd": d, "count": n} for (s, c, d), n in sorted(counts.items())]


def _stats(state) -> dict:
    now = time.monotonic()
    cached_at, cached = state.stats_cache
    if cached is not None and now - cached_at < STATS_TTL:
        return cached
    catalog = state.catalog
    collections = {name: int(catalog.db[name].estimated_document_count()) for name in COLLECTIONS}
    jobs = {str(row["_id"]): int(row["count"]) for row in
            catalog.jobs.aggregate([{"$group": {"_id": "$status", "count": {"$sum": 1}}}])}
    stats = {"zones": _zone_stats(state.store), "collections": collections, "jobs": jobs,
             "frames": _frames_per_ccd(catalog.frames)}
    state.stats_cache = (now, stats)
    return stats


@router.get("/stats", response_model=Stats, responses=errors(503),
            summary="Objects and bytes per zone, documents per collection, jobs by status, frames per CCD")
def stats(state: State):
    return JSON(_stats(state))
