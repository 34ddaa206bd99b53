"""``GET /raw`` and ``GET /staging``: frame documents (one per cadence image), by
sector/camera/ccd, DATE-OBS range, BTJD range, cadence range and quality, in time
order, keyset-paginated. /raw items name the original file's key in the raw zone;
/staging items also the cube and the cadence's index in it."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from pipeline.api.deps import INT32, Camera, Ccd, Limit, PageToken, Sector, State
from pipeline.api.models import Frame, Page, StagingFrame, errors
from pipeline.api.pagination import decode_token, eq, fingerprint, keyset_page
from pipeline.api.responses import JSON

router = APIRouter(tags=["frames"])

# DESIGN §4 default "bad cadence" bitmask: good=true keeps cadences with none of these.
BAD_QUALITY = 1 | 2 | 4 | 8 | 32 | 64 | 128 | 4096
# Time order; file and cadenceno break ties (several CCDs and cut-outs share times),
# (file, cadenceno) being the collection's unique key.
SORT = [("time", 1), ("file", 1), ("cadenceno", 1)]
FIELDS = ("file", "sector", "camera", "ccd", "cadenceno", "time", "date_obs", "quality",
          "raw_key", "size", "cube", "cube_index")
PROJECTION = {f: 1 for f in FIELDS}

Btjd = Annotated[float | None, Query(ge=-1e7, le=1e7, allow_inf_nan=False,
                                     description="BTJD (BJD - 2457000), inclusive")]
Cadence = Annotated[int | None, Query(ge=0, le=INT32, description="cadence number, inclusive")]
DateObs = Annotated[str | None, Query(max_length=40, description="ISO 8601 date or date-time (UTC unless "
                                                                  "an offset is given), on DATE-OBS")]


def parse_date(value: str, name: str, end: bool) -> tuple[str, str]:
    """(operator, ISO string) for a DATE-OBS bound. A bare date as ``date_to`` means
    the whole day: everything before the next midnight."""
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            moment = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
            if end:
                return "$lt", _iso(moment + dt.timedelta(days=1))
            return "$gte", _iso(moment)
        moment = dt.datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise HTTPException(422, f"query parameter {name!r}: {value[:40]!r} is not an ISO 8601 date "
                                 "or date-time (e.g. 2019-07-18 or 2019-07-18T12:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return ("$lte" if end else "$gte"), _iso(moment)


def _iso(moment: dt.datetime) -> str:
    # DATE-OBS is stored as an ISO string in UTC ("2019-07-16T23:58:50.816Z"); a full
    # string with microseconds and Z compares right both lexically (MongoDB) and as a
    # date (nx-27017 parses date-like strings; a truncated one it does not match).
    try:
        utc = moment.astimezone(dt.timezone.utc)
    except OverflowError:
        raise HTTPException(422, "date out of range") from None
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _range(query: dict, field: str, low, high, low_op="$gte", high_op="$lte") -> None:
    cond = {}
    if low is not None:
        cond[low_op] = low
    if high is not None:
        cond[high_op] = high
    if cond:
        query[field] = {**query.get(field, {}), **cond}


def frame_query(sector, camera, ccd, date_from, date_to, btjd_from, btjd_to, cadence_from,
                cadence_to, quality, good, cube=None):
    """(MongoDB query, predicate evaluated here or None, normalised filters)."""
    # Rejected-file records share the collection but have no time: requiring one
    # leaves exactly the frames, and rides on the time index the sort uses anyway.
    query: dict = {"time": {"$gt": -1e9}}
    for field, value in (("sector", sector), ("camera", camera), ("ccd", ccd), ("quality", quality),
                         ("cube", cube)):
        if value is not None:
            query[field] = eq(value)
    _range(query, "time", btjd_from, btjd_to)
    _range(query, "cadenceno", cadence_from, cadence_to)
    if date_from is not None or date_to is not None:
        cond = {}
        if date_from is not None:
            op, value = parse_date(date_from, "date_from", end=False)
            cond[op] = value
        if date_to is not None:
            op, value = parse_date(date_to, "date_to", end=True)
            cond[op] = value
        query["date_obs"] = cond
    match = None
    if good is not None:
        # nx-27017 evaluates $bitsAllClear row by row (400 ms on 20k frames): the
        # quality bits are tested here on the time-ordered scan instead.
        match = (lambda d: not (int(d.get("quality") or 0) & BAD_QUALITY)) if good else \
                (lambda d: bool(int(d.get("quality") or 0) & BAD_QUALITY))
    params = {"sector": sector, "camera": camera, "ccd": ccd, "date_from": date_from, "date_to": date_to,
              "btjd_from": btjd_from, "btjd_to": btjd_to, "cadence_from": cadence_from,
              "cadence_to": cadence_to, "quality": quality, "good": good, "cube": cube}
    return query, match, params


def _raw_item(d: dict) -> dict:
    return {"file": d.get("file"), "sector": d.get("sector"), "camera": d.get("camera"), "ccd": d.get("ccd"),
            "cadenceno": d.get("cadenceno"), "time": d.get("time"), "date_obs": d.get("date_obs"),
            "quality": d.get("quality"), "key": d.get("raw_key"), "size": d.get("size")}


def _staging_item(d: dict) -> dict:
    cube = d.get("cube")
    return {**_raw_item(d), "cube": cube, "cube_index": d.get("cube_index"),
            "cube_key": f"staging/{cube}.zarr" if cube else None}


def _list(state, endpoint, item, limit, page_token, **filters):
    query, match, params = frame_query(**filters)
    fp = fingerprint(endpoint, params)
    after = decode_token(page_token, fp, len(SORT)) if page_token else None
    docs, token = keyset_page(state.catalog.frames, query, SORT, limit, after, fp, PROJECTION, match)
    return JSON({"items": [item(d) for d in docs], "next_page_token": token})


@router.get("/raw", response_model=Page[Frame], responses=errors(422, 503),
            summary="Frames (original files in the raw zone), in time order")
def raw_frames(state: State, sector: Sector = None, camera: Camera = None, ccd: Ccd = None,
               date_from: DateObs = None, date_to: DateObs = None, btjd_from: Btjd = None,
               btjd_to: Btjd = None, cadence_from: Cadence = None, cadence_to: Cadence = None,
               quality: Annotated[int | None, Query(ge=0, le=INT32, description="exact DQUALITY value")] = None,
               good: Annotated[bool | None, Query(description="true: no bit of the default bad-quality "
                                                             "mask 4271 set; false: some set")] = None,
               limit: Limit = 100, page_token: PageToken = None):
    return _list(state, "raw", _raw_item, limit, page_token, sector=sector, camera=camera, ccd=ccd,
                 date_from=date_from, date_to=date_to, btjd_from=btjd_from, btjd_to=btjd_to,
                 cadence_from=cadence_from, cadence_to=cadence_to, quality=quality, good=good)


@router.get("/staging", response_model=Page[StagingFrame], responses=errors(422, 503),
            summary="Frames with their place in the staging cubes, in time order")
def staging_frames(state: State, sector: Sector = None, camera: Camera = None, ccd: Ccd = None,
                   date_from: DateObs = None, date_to: DateObs = None, btjd_from: Btjd = None,
                   btjd_to: Btjd = None, cadence_from: Cadence = None, cadence_to: Cadence = None,
                   quality: Annotated[int | None, Query(ge=0, le=INT32)] = None,
                   good: Annotated[bool | None, Query()] = None,
                   cube: Annotated[str | None, Query(max_length=200, description="only this cube")] = None,
                   limit: Limit = 100, page_token: PageToken = None):
    return _list(state, "staging", _staging_item, limit, page_token, sector=sector, camera=camera, ccd=ccd,
                 date_from=date_from, date_to=date_to, btjd_from=btjd_from, btjd_to=btjd_to,
                 cadence_from=cadence_from, cadence_to=cadence_to, quality=quality, good=good, cube=cube)
